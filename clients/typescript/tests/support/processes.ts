/**
 * Real processes for the integration and end-to-end tests: the `switchyard` binary and
 * `redis-server`, each on a free loopback port, in its own process group, killed (the whole
 * group) when the test file is done, and also when the test process exits on its own.
 *
 * Nothing here is a fake: the nodes are the binary CI builds (`target/debug/switchyard`, or
 * `SWITCHYARD_BIN`), the broker is a real Redis.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, closeSync, constants, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import net from 'node:net';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll } from 'vitest';

/** clients/typescript */
export const sdkRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/** The repository root. */
export const repoRoot = resolve(sdkRoot, '../..');
/** Screenshots and process logs. */
export const resultsDir = join(sdkRoot, 'test-results');

/**
 * The gateway binary: `SWITCHYARD_BIN` (relative paths are taken from the repository root), or
 * `target/debug/switchyard` as `cargo build` makes it.
 */
export function switchyardBin(): string {
  const configured = process.env.SWITCHYARD_BIN;
  const path = configured ? (isAbsolute(configured) ? configured : resolve(repoRoot, configured)) : join(repoRoot, 'target/debug/switchyard');
  try {
    accessSync(path, constants.X_OK);
  } catch {
    throw new Error(
      `no switchyard binary at ${path}: run \`cargo build\` at the repository root, or set SWITCHYARD_BIN to the binary's path`,
    );
  }
  return path;
}

/** A port that was free a moment ago (the OS picked it for a listener on port 0). */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        server.close();
        reject(new Error('no port'));
        return;
      }
      server.close(() => resolvePort(address.port));
    });
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Polls `check` until it returns something other than `undefined`/`false` (returned), or throws
 * when `timeoutMs` passes; `what` names the awaited condition in the error.
 */
export async function waitFor<T>(what: string, check: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
      lastError = undefined;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      const detail = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
    }
    await sleep(25);
  }
}

// ---------------------------------------------------------------------------------------------
// Process groups
// ---------------------------------------------------------------------------------------------

const running = new Set<ManagedProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort if the test process exits on its own: no process outlives it.
  process.on('exit', () => {
    for (const p of running) p.signalGroup('SIGKILL');
  });
}

// Registered when a test file imports this module, so it runs after the file's own afterAll
// hooks: whatever a failed or timed-out test (or a failed beforeAll) left running is killed.
afterAll(async () => {
  await Promise.all([...running].map((p) => p.stop('SIGKILL')));
});

/**
 * A child process in its own process group. Its stdout and stderr go straight to a log file
 * (not through a pipe to this process: a pipe whose reader is busy or gone could stall or upset
 * the child).
 */
export class ManagedProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly logPath: string;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private spawnError: string | undefined;

  /** Logs to `test-results/logs/<label>.log`: a new file, or appended to with `appendLog`. */
  constructor(
    readonly label: string,
    command: string,
    args: readonly string[],
    env: NodeJS.ProcessEnv,
    appendLog = false,
  ) {
    installExitHook();
    mkdirSync(join(resultsDir, 'logs'), { recursive: true });
    this.logPath = join(resultsDir, 'logs', `${label}.log`);
    const fd = openSync(this.logPath, appendLog ? 'a' : 'w');
    writeSync(fd, `\n==== ${new Date().toISOString()} ${command} ${args.join(' ')}\n`);
    try {
      this.child = spawn(command, args, { env, detached: true, stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd); // the child has its own copy
    }
    running.add(this);
    this.exited = new Promise((resolveExit) => {
      this.child.on('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        running.delete(this);
        resolveExit(this.exitInfo);
      });
      this.child.on('error', (error) => {
        this.exitInfo = { code: -1, signal: null };
        this.spawnError = error.message;
        running.delete(this);
        resolveExit(this.exitInfo);
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get hasExited(): boolean {
    return this.exitInfo !== undefined;
  }

  /** The last 20 kB of its output. */
  get recentOutput(): string {
    let text = '';
    try {
      text = readFileSync(this.logPath, 'utf8').slice(-20_000);
    } catch {
      /* no log */
    }
    return this.spawnError ? `${text}\nspawn error: ${this.spawnError}` : text;
  }

  /** Sends a signal to the whole process group (the process and anything it started). */
  signalGroup(signal: NodeJS.Signals): void {
    if (this.hasExited || this.pid <= 0) return;
    try {
      process.kill(-this.pid, signal);
    } catch {
      /* already gone */
    }
  }

  /** Sends `signal` and waits for the exit; SIGKILLs the group if that takes over `graceMs`. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<void> {
    if (this.hasExited) return;
    this.signalGroup(signal);
    const timer = setTimeout(() => this.signalGroup('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
    // Whatever it left in its group goes too.
    try {
      process.kill(-this.pid, 'SIGKILL');
    } catch {
      /* nothing left */
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

/** Sends PING on a fresh connection; resolves when +PONG comes back. */
function redisPing(port: number): Promise<boolean> {
  return new Promise((resolvePing) => {
    const socket = net.connect(port, '127.0.0.1');
    let answer = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolvePing(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (d) => {
      answer += d.toString();
      if (answer.includes('\r\n')) done(answer.startsWith('+PONG'));
    });
  });
}

export interface RedisServer {
  readonly port: number;
  readonly url: string;
  readonly process: ManagedProcess;
  stop(): Promise<void>;
}

/** Starts a throw-away `redis-server` (no persistence) on a free port. */
export async function startRedis(label = 'redis'): Promise<RedisServer> {
  const port = await freePort();
  const proc = new ManagedProcess(label, process.env.REDIS_SERVER ?? 'redis-server', [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
  ], process.env);
  await waitFor(`redis-server on port ${port}`, async () => {
    if (proc.hasExited) throw new Error(`redis-server exited:\n${proc.recentOutput}`);
    return redisPing(port);
  }, 15_000);
  return { port, url: `redis://127.0.0.1:${port}`, process: proc, stop: () => proc.stop('SIGKILL') };
}

// ---------------------------------------------------------------------------------------------
// Switchyard nodes
// ---------------------------------------------------------------------------------------------

export interface NodeOptions {
  /** Listen on this port (default: a free one). */
  port?: number;
  /** Extra environment (`SWITCHYARD_*`). */
  env?: Record<string, string>;
  /** Names the log file. */
  label?: string;
}

/** A running `switchyard` node. `stop()`/`kill()` end it; `start()` starts it again on the same port. */
export class SwitchyardNode {
  process: ManagedProcess | undefined;
  readonly port: number;
  private readonly env: Record<string, string>;
  private readonly label: string;

  private constructor(port: number, env: Record<string, string>, label: string) {
    this.port = port;
    this.env = env;
    this.label = label;
  }

  /** Starts a node and waits until `/readyz` answers 200. */
  static async start(options: NodeOptions = {}): Promise<SwitchyardNode> {
    const port = options.port ?? (await freePort());
    const node = new SwitchyardNode(port, options.env ?? {}, options.label ?? 'switchyard');
    await node.start();
    return node;
  }

  /** `http://127.0.0.1:PORT` */
  get httpUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** `ws://127.0.0.1:PORT/ws` */
  get wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  get running(): boolean {
    return this.process !== undefined && !this.process.hasExited;
  }

  /** (Re)starts the node on its port and waits for `/readyz`. */
  async start(): Promise<void> {
    if (this.running) throw new Error(`${this.label} is already running`);
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      RUST_LOG: process.env.RUST_LOG ?? 'info',
      SWITCHYARD_LISTEN: `127.0.0.1:${this.port}`,
      // SIGTERM spreads its closes over this; short, so that stopping a node is quick.
      SWITCHYARD_DRAIN_MS: '500',
      ...this.env,
    };
    // The first start writes a new log; a restart appends to it.
    const proc = new ManagedProcess(this.label, switchyardBin(), [], env, this.process !== undefined);
    this.process = proc;
    await waitFor(`${this.label} on port ${this.port} to be ready`, async () => {
      if (proc.hasExited) throw new Error(`switchyard exited before it was ready:\n${proc.recentOutput}`);
      const res = await fetch(`${this.httpUrl}/readyz`).catch(() => undefined);
      return res?.status === 200;
    }, 30_000);
  }

  /** SIGTERM: the node drains (its clients get 1001) and exits. */
  async stop(): Promise<void> {
    await this.process?.stop('SIGTERM', 15_000);
  }

  /** SIGKILL: the node dies at once, without a close frame to anyone. */
  async kill(): Promise<void> {
    await this.process?.stop('SIGKILL');
  }

  /** A development token from `GET /dev/token` (dev mode only). */
  async devToken(user: string, name?: string): Promise<string> {
    const query = new URLSearchParams({ user, ...(name ? { name } : {}) });
    const res = await fetch(`${this.httpUrl}/dev/token?${query}`);
    if (!res.ok) throw new Error(`/dev/token answered HTTP ${res.status}`);
    const body = (await res.json()) as { token?: unknown };
    if (typeof body.token !== 'string') throw new Error('/dev/token answered without a token');
    return body.token;
  }

  /** Calls the HTTP API with an API key. */
  api(path: string, init: { method?: string; key: string; body?: unknown }): Promise<Response> {
    return fetch(`${this.httpUrl}${path}`, {
      method: init.method ?? 'GET',
      headers: {
        authorization: `Bearer ${init.key}`,
        ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      body: init.body !== undefined ? JSON.stringify(init.body) : undefined,
    });
  }
}
