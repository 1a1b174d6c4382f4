// Socket.IO 4 baseline for benchmarking Switchyard side by side: the same job (join a room,
// send a message to it, ack the sender, deliver to every member on every instance) done the
// plain, idiomatic Socket.IO way, with @socket.io/redis-adapter for a cluster.
//
// Environment:
//   PORT        port to listen on (default 3000)
//   HOST        address to bind (default 127.0.0.1)
//   REDIS_URL   e.g. redis://127.0.0.1:6379; unset or empty: Socket.IO's in-memory adapter
//               (one instance only)
//   JWT_SECRET  optional HS256 secret: when set, a connection must carry a valid token (`sub`,
//               `exp`) in the handshake auth payload `{token}` or the query `?token=`, as with
//               Switchyard; when unset anyone may connect
//   PING_INTERVAL_MS, PING_TIMEOUT_MS
//               Engine.IO heartbeat (Socket.IO's defaults: 25000 and 20000)
//   NODE_ENV    run with `production` (start-cluster.sh and `npm start` set it)
//
// Events (client -> server; every one takes an ack callback):
//   join    (room)                          ack {ok:true, room}
//   leave   (room)                          ack {ok:true, room}
//   message ({room, tempId, text, data?})   ack {ok:true, tempId, id, seq, ts}; the room (the
//                                           sender included) gets `message`
//                                           {room, id, seq, userId, text, data, ts, tempId}
// A refused request is acked with {ok:false, error:"<code>"}.
import { createServer } from "node:http";
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";

const port = Number(process.env.PORT || 3000);
const host = process.env.HOST || "127.0.0.1";
const redisUrl = process.env.REDIS_URL || "";
const jwtSecret = process.env.JWT_SECRET || "";
const instance = `${host}:${port}`;

// The same limits as Switchyard's defaults.
const ROOM_RE = /^[A-Za-z0-9_\-:.@]{1,128}$/;
const MAX_TEXT = 4000;

const httpServer = createServer((req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end('{"status":"ok"}');
    return;
  }
  res.writeHead(404).end();
});

const io = new Server(httpServer, {
  transports: ["websocket"], // no HTTP long-polling, no upgrade dance
  perMessageDeflate: false, // Switchyard does not compress either
  httpCompression: false,
  serveClient: false,
  maxHttpBufferSize: 64 * 1024, // Switchyard's inbound frame limit
  // Socket.IO's defaults, 25 s and 20 s; Switchyard pings every 25 s too.
  pingInterval: Number(process.env.PING_INTERVAL_MS || 25000),
  pingTimeout: Number(process.env.PING_TIMEOUT_MS || 20000),
});

let pubClient;
let subClient;
if (redisUrl) {
  pubClient = createClient({ url: redisUrl });
  subClient = pubClient.duplicate();
  let lastLogged = 0;
  const onError = (err) => {
    const now = Date.now();
    if (now - lastLogged > 5000) {
      lastLogged = now;
      console.error(`[${instance}] redis: ${err.message}`);
    }
  };
  pubClient.on("error", onError);
  subClient.on("error", onError);
  await Promise.all([pubClient.connect(), subClient.connect()]);
  io.adapter(createAdapter(pubClient, subClient));
}

function b64urlJson(part) {
  return JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
}

// HS256 only, exp required: what the benchmark's clients send to Switchyard as well.
function verifyJwt(token) {
  const parts = typeof token === "string" ? token.split(".") : [];
  if (parts.length !== 3) return null;
  try {
    const header = b64urlJson(parts[0]);
    if (header.alg !== "HS256") return null;
    const expected = createHmac("sha256", jwtSecret).update(`${parts[0]}.${parts[1]}`).digest();
    const given = Buffer.from(parts[2], "base64url");
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
    const claims = b64urlJson(parts[1]);
    if (typeof claims.sub !== "string" || typeof claims.exp !== "number") return null;
    if (claims.exp * 1000 + 5000 < Date.now()) return null;
    return claims;
  } catch {
    return null;
  }
}

io.use((socket, next) => {
  const hs = socket.handshake;
  if (jwtSecret) {
    const claims = verifyJwt(hs.auth?.token ?? hs.query.token);
    if (!claims) return next(new Error("unauthorized"));
    socket.data.userId = claims.sub;
    socket.data.name = claims.name;
  } else {
    const user = hs.auth?.user ?? hs.query.user;
    socket.data.userId = typeof user === "string" && user ? user : socket.id;
  }
  next();
});

// Per-instance sequence and ids: Socket.IO has no cluster-wide ordering or history.
let seq = 0;
const idPrefix = randomBytes(4).toString("hex");

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    if (typeof ack !== "function") return;
    if (typeof room !== "string" || !ROOM_RE.test(room)) return ack({ ok: false, error: "bad_request" });
    socket.join(room);
    ack({ ok: true, room });
  });

  socket.on("leave", (room, ack) => {
    if (typeof ack !== "function") return;
    if (typeof room !== "string" || !socket.rooms.has(room)) return ack({ ok: false, error: "not_joined" });
    socket.leave(room);
    ack({ ok: true, room });
  });

  socket.on("message", (msg, ack) => {
    if (typeof ack !== "function") return;
    const { room, tempId, text, data } = msg ?? {};
    if (typeof room !== "string" || typeof text !== "string" || text.length === 0 || text.length > MAX_TEXT ||
        (typeof tempId !== "string" && typeof tempId !== "number")) {
      return ack({ ok: false, tempId, error: "bad_request" });
    }
    if (!socket.rooms.has(room)) return ack({ ok: false, tempId, error: "not_joined" });
    seq += 1;
    const ts = Date.now();
    const id = `${idPrefix}-${seq}`;
    // The ack goes out first, then the room broadcast (the sender's own copy included), the same
    // order as Switchyard's ack and new-message.
    ack({ ok: true, tempId, id, seq, ts });
    io.to(room).emit("message", { room, id, seq, userId: socket.data.userId, text, data, ts, tempId });
  });
});

httpServer.listen(port, host, () => {
  console.error(`socketio-baseline listening on ${instance} (adapter: ${redisUrl ? "redis" : "memory"}, NODE_ENV=${process.env.NODE_ENV ?? ""})`);
});

let stopping = false;
function shutdown() {
  if (stopping) return;
  stopping = true;
  io.close(async () => {
    await Promise.allSettled([pubClient?.quit(), subClient?.quit()]);
    process.exit(0);
  });
  setTimeout(() => process.exit(0), 5000).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
