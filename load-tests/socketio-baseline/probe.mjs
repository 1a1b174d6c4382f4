// Verifies the raw Engine.IO v4 / Socket.IO v5 exchange described in README.md against running
// baseline servers, with a bare WebSocket (the `ws` package), no socket.io-client: what a load
// generator in another language has to do. Prints the frames it sends (>>) and receives (<<).
//
//   node probe.mjs [URL_A] [URL_B]
//
// URL_A, URL_B: ws://host:port of two instances on one Redis (default ws://127.0.0.1:3000 for
// both; with one instance the cross-instance check runs on it alone). JWT_SECRET: the servers'
// secret, when they check tokens (then a bad token is tried too). For the heartbeat checks, start
// the servers with a short PING_INTERVAL_MS (e.g. 1500) and PING_TIMEOUT_MS (e.g. 1000); with the
// 25 s default they are skipped. Exits 0 when every check passed.
import { createHmac } from "node:crypto";
import WebSocket from "ws";

const urlA = process.argv[2] || "ws://127.0.0.1:3000";
const urlB = process.argv[3] || urlA;
const secret = process.env.JWT_SECRET || "";
const PATH = "/socket.io/?EIO=4&transport=websocket";

let passed = 0;
let failed = 0;
function check(ok, what) {
  if (ok) passed += 1;
  else failed += 1;
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
}

function token(sub) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = enc({ alg: "HS256", typ: "JWT" });
  const body = enc({ sub, exp: Math.floor(Date.now() / 1000) + 600 });
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

// A raw Engine.IO v4 client over one WebSocket, for the default namespace "/".
class RawClient {
  constructor(name, base, { answerPings = true, log = true } = {}) {
    this.name = name;
    this.answerPings = answerPings;
    this.log = log;
    this.frames = []; // every received frame, in order
    this.waiters = [];
    this.nextAck = 1;
    this.pings = 0;
    this.closed = null;
    this.ws = new WebSocket(base.replace(/^http/, "ws").replace(/\/$/, "") + PATH, {
      perMessageDeflate: false,
    });
    this.ws.on("message", (data, isBinary) => this.onFrame(data.toString(), isBinary));
    this.ws.on("close", (code) => {
      this.closed = { code, at: Date.now() };
      this.wake();
    });
    this.ws.on("error", (e) => console.log(`${name}: socket error ${e.message}`));
  }

  onFrame(text, isBinary) {
    if (this.log) console.log(`${this.name} << ${text}`);
    this.frames.push({ text, isBinary, at: Date.now() });
    if (text === "2") {
      // Engine.IO v4: the server pings, the client answers "3" (never the other way round).
      this.pings += 1;
      if (this.answerPings) this.send("3");
    }
    this.wake();
  }

  wake() {
    for (const w of this.waiters.slice()) w();
  }

  send(text) {
    if (this.log) console.log(`${this.name} >> ${text}`);
    this.ws.send(text);
  }

  // Resolves with the first frame (from index `from`) that `pred` accepts, or null on timeout
  // or close.
  next(pred, timeoutMs = 3000, from = 0) {
    return new Promise((resolve) => {
      let i = from;
      const done = (v) => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== look);
        resolve(v);
      };
      const look = () => {
        for (; i < this.frames.length; i++) if (pred(this.frames[i].text)) return done(this.frames[i]);
        if (this.closed) done(null);
      };
      const timer = setTimeout(() => done(null), timeoutMs);
      this.waiters.push(look);
      look();
    });
  }

  async open() {
    const f = await this.next((t) => t.startsWith("0"));
    return f ? JSON.parse(f.text.slice(1)) : null;
  }

  // Socket.IO CONNECT to "/", with an auth payload when given. Resolves with the reply frame.
  async connect(auth) {
    const from = this.frames.length;
    this.send(auth ? `40${JSON.stringify(auth)}` : "40");
    return this.next((t) => t.startsWith("40") || t.startsWith("44"), 3000, from);
  }

  // EVENT with an ack id: 42<id>["event", ...args]; the ack comes back as 43<id>[...args].
  async emitWithAck(event, ...args) {
    const id = this.nextAck++;
    const from = this.frames.length;
    this.send(`42${id}${JSON.stringify([event, ...args])}`);
    const f = await this.next((t) => t.startsWith(`43${id}[`), 3000, from);
    return f ? { args: JSON.parse(f.text.slice(2 + String(id).length)), frame: f } : null;
  }

  // An EVENT frame 42["event", ...] from index `from` on.
  event(name, from = 0, timeoutMs = 3000) {
    return this.next((t) => t.startsWith(`42["${name}"`), timeoutMs, from);
  }

  close() {
    if (!this.closed) this.ws.close();
  }
}

const auth = (sub) => (secret ? { token: token(sub) } : { user: sub });
const room = `probe-${Date.now().toString(36)}`;

console.log(`probe: A ${urlA}, B ${urlB}${secret ? ", with tokens" : ""}`);
const a = new RawClient("A", urlA);
const b = new RawClient("B", urlB, { log: false });

// 1. Engine.IO OPEN, sent by the server first.
const openA = await a.open();
check(openA && typeof openA.sid === "string", "server sends 0{sid,...} (Engine.IO OPEN) first");
check(openA && Array.isArray(openA.upgrades) && openA.upgrades.length === 0, "upgrades is [] (websocket only)");
check(openA && openA.pingInterval > 0 && openA.pingTimeout > 0, `pingInterval ${openA?.pingInterval} ms, pingTimeout ${openA?.pingTimeout} ms`);
check(openA && openA.maxPayload === 65536, `maxPayload ${openA?.maxPayload}`);
await b.open();

// 2. Socket.IO CONNECT to the default namespace.
if (secret) {
  const bad = new RawClient("X", urlA);
  await bad.open();
  const refused = await bad.connect({ token: "not.a.token" });
  check(refused && refused.text === '44{"message":"unauthorized"}', "bad token: 44{\"message\":\"unauthorized\"} (CONNECT_ERROR)");
  bad.close();
}
{
  // Anything but 40 before the namespace is connected: the server closes the WebSocket.
  const early = new RawClient("E", urlA, { log: false });
  await early.open();
  early.send('421["join","too-early"]');
  await early.next(() => false, 1000);
  check(early.closed !== null, `an event before 40 is answered: the server closes the WebSocket (close code ${early.closed?.code})`);
}
const connA = await a.connect(auth("probe-a"));
check(connA && /^40\{"sid":"[^"]+"\}$/.test(connA.text), "40{...} answered with 40{\"sid\":...} (CONNECT)");
const connB = await b.connect(auth("probe-b"));
check(connB && connB.text.startsWith("40{"), "B connected");

// 3. join with an ack.
const joinA = await a.emitWithAck("join", room);
check(joinA && joinA.args[0].ok === true && joinA.args[0].room === room, `42<id>["join",room] acked with 43<id>[{"ok":true,"room":...}]`);
const joinB = await b.emitWithAck("join", room);
check(joinB && joinB.args[0].ok === true, "B joined");

// 4. message: ack to the sender first, then the broadcast to the room (sender included, other
//    instance included).
const fromA = a.frames.length;
const fromB = b.frames.length;
const sent = await a.emitWithAck("message", { room, tempId: "t-1", text: "hello", data: { sentAt: Date.now() } });
const ack = sent && sent.args[0];
check(ack && ack.ok === true && ack.tempId === "t-1" && typeof ack.id === "string" && Number.isInteger(ack.seq) && Number.isInteger(ack.ts),
  "message acked with 43<id>[{ok,tempId,id,seq,ts}]");
const echoA = await a.event("message", fromA);
check(echoA && JSON.parse(echoA.text.slice(2))[1].tempId === "t-1", "the sender gets its own 42[\"message\",{...}]");
check(echoA && sent && echoA.at >= sent.frame.at && a.frames.indexOf(echoA) > a.frames.indexOf(sent.frame), "the ack comes before the broadcast");
const gotB = await b.event("message", fromB);
const payloadB = gotB && JSON.parse(gotB.text.slice(2))[1];
check(payloadB && payloadB.text === "hello" && payloadB.userId === "probe-a" && payloadB.room === room,
  `B (${urlB === urlA ? "same" : "other"} instance) gets 42["message",{room,id,seq,userId,text,data,ts,tempId}]`);

// 5. A refused request is acked with ok:false.
const refused = await a.emitWithAck("message", { room: `${room}-other`, tempId: "t-2", text: "x" });
check(refused && refused.args[0].ok === false && refused.args[0].error === "not_joined", "message to a room not joined: 43<id>[{ok:false,error:\"not_joined\"}]");

// 6. Every frame is one packet (no batching over websocket), all text.
check(a.frames.every((f) => !f.isBinary && /^[0-6]/.test(f.text)), "every frame is one text packet");

// 7. Heartbeat: the server sends 2, the client answers 3; a client that does not answer is closed
//    after pingInterval + pingTimeout. A client must not send 2 itself.
if (openA && openA.pingInterval <= 5000) {
  const ping = await a.next((t) => t === "2", openA.pingInterval + 1000);
  check(ping !== null, "server sends 2 (PING) every pingInterval; the client answers 3 (PONG)");
  const mute = new RawClient("M", urlA, { answerPings: false, log: false });
  const o = await mute.open();
  const t0 = Date.now();
  await mute.connect(auth("probe-mute"));
  await mute.next(() => false, o.pingInterval + o.pingTimeout + 2000);
  check(mute.closed && mute.pings >= 1, `a client that never answers 3 is closed after ~pingInterval + pingTimeout (closed after ${mute.closed ? mute.closed.at - t0 : "-"} ms, close code ${mute.closed?.code})`);
  const pinger = new RawClient("P", urlA, { log: false });
  await pinger.open();
  await pinger.connect(auth("probe-pinger"));
  pinger.send("2");
  await pinger.next(() => false, 1000);
  check(pinger.closed !== null, `a client that sends 2 itself is disconnected (close code ${pinger.closed?.code})`);
} else {
  console.log("skip heartbeat checks: start the servers with PING_INTERVAL_MS=1500 PING_TIMEOUT_MS=1000 to run them");
}

// 8. Leaving: 41 (DISCONNECT from "/") ends the Socket.IO session but not the Engine.IO
//    connection, which stays open (a new 40 connects again on it). Any packet but 40 for a
//    namespace the client is not connected to (before 40 is answered, after 41 or 44) makes the
//    server close the WebSocket.
a.send("41");
await a.next(() => false, 500);
check(a.closed === null, "after 41 the WebSocket stays open");
const again = await a.connect(auth("probe-a"));
check(again && again.text.startsWith("40{"), "40 on the same WebSocket connects again");
a.send("41");
await a.next(() => false, 200);
const afterLeave = await a.emitWithAck("join", room);
check(afterLeave === null && a.closed !== null, `an event after 41: no ack, the server closes the WebSocket (close code ${a.closed?.code})`);
b.close();

console.log(`probe: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
