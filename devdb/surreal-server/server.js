'use strict';
// Development SurrealDB server for txcoord.
//
// Hosts the embedded SurrealDB engine of @surrealdb/node (rocksdb storage,
// sync=every) in this process and serves the standard SurrealDB RPC protocol
// at /rpc: CBOR over WebSocket, as `surreal start` does. Requests and results
// are relayed byte for byte; the relay only
//   - gives every socket its own engine session (attach at open, detach at
//     close) and fills it in where a request carries no session or null;
//   - wraps the engine's bare result back into {id, result} or {id, error};
//   - cancels a socket's open interactive transactions when it closes.
// GET /health answers 200 once the engine is open; GET /version names it.
//
// The embedded engine enforces no authentication: any client can do
// anything. Bind it to loopback only (the default). One process per data
// directory: rocksdb locks it.
//
// Usage: node server.js [--host 127.0.0.1] [--port 58000] [--data DIR] [--engine URL]
// Environment: TXCOORD_SURREAL_HOST, TXCOORD_SURREAL_PORT, TXCOORD_SURREAL_DATA,
// TXCOORD_SURREAL_ENGINE (engine URL, overrides --data), TXCOORD_SURREAL_USER,
// TXCOORD_SURREAL_PASS (root user created at start), TXCOORD_SURREAL_DEBUG=1.

const http = require('node:http');
const path = require('node:path');
const fs = require('node:fs');
const crypto = require('node:crypto');
const { WebSocketServer } = require('ws');

// Limits. Everything a client can grow is bounded.
const MAX_MESSAGE_BYTES = 64 << 20; // one request frame; larger frames close the socket (1009)
const MAX_INFLIGHT_PER_SOCKET = 64; // engine calls running at once for one socket
const MAX_QUEUED_PER_SOCKET = 4096; // requests waiting behind those; beyond this the socket is closed (1008)
const MAX_CBOR_DEPTH = 256; // nesting accepted while skipping a request's values
const SHUTDOWN_GRACE_MS = 5000; // wait for in-flight calls and socket cleanup at SIGTERM
const CLEANUP_TIMEOUT_MS = 5000; // per engine call made while cleaning a closed socket

const debug = process.env.TXCOORD_SURREAL_DEBUG === '1';
function log(...args) {
  process.stderr.write(`${new Date().toISOString()} surreal-server: ${args.join(' ')}\n`);
}

// ---------------------------------------------------------------------------
// Configuration

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const m = /^--([a-z]+)(?:=(.*))?$/.exec(a);
    if (!m) throw new Error(`unexpected argument ${JSON.stringify(a)}`);
    const v = m[2] !== undefined ? m[2] : argv[++i];
    if (v === undefined) throw new Error(`missing value for --${m[1]}`);
    out[m[1]] = v;
  }
  return out;
}

function loadConfig() {
  const args = parseArgs(process.argv.slice(2));
  for (const k of Object.keys(args)) {
    if (!['host', 'port', 'data', 'engine'].includes(k)) throw new Error(`unknown flag --${k}`);
  }
  const env = process.env;
  const cfg = {
    host: args.host || env.TXCOORD_SURREAL_HOST || '127.0.0.1',
    port: Number(args.port || env.TXCOORD_SURREAL_PORT || 58000),
    data: path.resolve(args.data || env.TXCOORD_SURREAL_DATA || path.join(__dirname, '..', '..', '.data', 'surreal', 'db')),
    engine: args.engine || env.TXCOORD_SURREAL_ENGINE || '',
    user: env.TXCOORD_SURREAL_USER || 'root',
    pass: env.TXCOORD_SURREAL_PASS || 'root',
  };
  if (!Number.isInteger(cfg.port) || cfg.port < 0 || cfg.port > 65535) throw new Error(`invalid port ${cfg.port}`);
  if (!/^[A-Za-z0-9_]+$/.test(cfg.user)) throw new Error(`invalid TXCOORD_SURREAL_USER ${JSON.stringify(cfg.user)}: letters, digits, _`);
  if (!cfg.engine) cfg.engine = `rocksdb://${cfg.data}?sync=every`;
  return cfg;
}

// ---------------------------------------------------------------------------
// Native engine. The package's JS entry point imports the `surrealdb` JS SDK
// (a peer dependency we do not need), so load its napi binding directly.

function loadNative() {
  const dist = path.join(__dirname, 'node_modules', '@surrealdb', 'node', 'dist');
  let suffix;
  const p = process.platform;
  const a = process.arch;
  if (p === 'linux') {
    const glibc = process.report && typeof process.report.getReport === 'function' &&
      process.report.getReport().header.glibcVersionRuntime;
    suffix = `linux-${a}-${glibc ? 'gnu' : 'musl'}`;
  } else if (p === 'darwin') {
    suffix = `darwin-${a}`;
  } else if (p === 'win32') {
    suffix = `win32-${a}-msvc`;
  } else {
    throw new Error(`unsupported platform ${p}/${a}`);
  }
  const file = path.join(dist, `surrealdb-node.${suffix}.node`);
  if (!fs.existsSync(file)) throw new Error(`native engine ${file} not found: run npm ci --legacy-peer-deps in ${__dirname}`);
  return require(file);
}

// ---------------------------------------------------------------------------
// Minimal CBOR: skip items to find their byte ranges, and encode the few
// envelopes the relay builds. Values are never decoded and re-encoded, so
// what the client sent is what the engine sees, and the other way round.

class CborError extends Error {}

function readHead(b, o) {
  if (o >= b.length) throw new CborError('truncated');
  const ib = b[o];
  const major = ib >> 5;
  const ai = ib & 31;
  o++;
  let n;
  if (ai < 24) n = ai;
  else if (ai === 24) { need(b, o, 1); n = b[o]; o += 1; }
  else if (ai === 25) { need(b, o, 2); n = b.readUInt16BE(o); o += 2; }
  else if (ai === 26) { need(b, o, 4); n = b.readUInt32BE(o); o += 4; }
  else if (ai === 27) { need(b, o, 8); n = Number(b.readBigUInt64BE(o)); o += 8; }
  else if (ai === 31) n = -1; // indefinite length
  else throw new CborError('reserved additional info');
  return { major, ai, n, o };
}

function need(b, o, k) {
  if (o + k > b.length) throw new CborError('truncated');
}

// itemEnd returns the offset just past the item starting at o.
function itemEnd(b, o, depth = 0) {
  if (depth > MAX_CBOR_DEPTH) throw new CborError('nested too deeply');
  const h = readHead(b, o);
  o = h.o;
  switch (h.major) {
    case 0: case 1:
      if (h.n < 0) throw new CborError('indefinite integer');
      return o;
    case 2: case 3:
      if (h.n < 0) {
        while (true) { need(b, o, 1); if (b[o] === 0xff) return o + 1; o = itemEnd(b, o, depth + 1); }
      }
      need(b, o, h.n);
      return o + h.n;
    case 4: case 5: {
      const per = h.major === 5 ? 2 : 1;
      if (h.n < 0) {
        while (true) { need(b, o, 1); if (b[o] === 0xff) return o + 1; o = itemEnd(b, o, depth + 1); }
      }
      for (let i = 0; i < h.n * per; i++) o = itemEnd(b, o, depth + 1);
      return o;
    }
    case 6:
      return itemEnd(b, o, depth + 1);
    default: // 7: simple values and floats; the head already covered their bytes
      if (h.n < 0) throw new CborError('unexpected break');
      return o;
  }
}

// topMap parses a top-level map with text keys: key -> raw value bytes, in order.
function topMap(b) {
  const h = readHead(b, 0);
  if (h.major !== 5) throw new CborError('top-level item is not a map');
  let o = h.o;
  const entries = new Map();
  for (let i = 0; h.n < 0 || i < h.n; i++) {
    if (h.n < 0) { need(b, o, 1); if (b[o] === 0xff) { o++; break; } }
    const k = readHead(b, o);
    if (k.major !== 3 || k.n < 0) throw new CborError('map key is not a definite text string');
    need(b, k.o, k.n);
    const key = b.toString('utf8', k.o, k.o + k.n);
    const vs = k.o + k.n;
    const ve = itemEnd(b, vs);
    entries.set(key, b.subarray(vs, ve));
    o = ve;
  }
  if (o !== b.length) throw new CborError('trailing bytes after the request');
  return entries;
}

function textOf(raw) {
  if (!raw) return undefined;
  const h = readHead(raw, 0);
  if (h.major !== 3 || h.n < 0) return undefined;
  return raw.toString('utf8', h.o, h.o + h.n);
}

// firstElement returns the raw first element of an array, or undefined.
function firstElement(raw) {
  if (!raw) return undefined;
  const h = readHead(raw, 0);
  if (h.major !== 4 || h.n === 0 || raw[h.o] === 0xff) return undefined;
  return raw.subarray(h.o, itemEnd(raw, h.o));
}

// isAbsent: null, undefined or NONE (tag 6).
function isAbsent(raw) {
  if (!raw) return true;
  if (raw.length === 1) return raw[0] === 0xf6 || raw[0] === 0xf7;
  return raw.length === 2 && raw[0] === 0xc6 && (raw[1] === 0xf6 || raw[1] === 0xf7);
}

function encHead(major, n) {
  if (n < 24) return Buffer.from([(major << 5) | n]);
  if (n < 0x100) return Buffer.from([(major << 5) | 24, n]);
  if (n < 0x10000) { const b = Buffer.alloc(3); b[0] = (major << 5) | 25; b.writeUInt16BE(n, 1); return b; }
  if (n < 0x100000000) { const b = Buffer.alloc(5); b[0] = (major << 5) | 26; b.writeUInt32BE(n, 1); return b; }
  const b = Buffer.alloc(9); b[0] = (major << 5) | 27; b.writeBigUInt64BE(BigInt(n), 1); return b;
}
function encText(s) { const t = Buffer.from(s, 'utf8'); return Buffer.concat([encHead(3, t.length), t]); }
function encArray(raws) { return Buffer.concat([encHead(4, raws.length), ...raws]); }
function encMap(entries) {
  const parts = [encHead(5, entries.length)];
  for (const [k, v] of entries) parts.push(encText(k), v);
  return Buffer.concat(parts);
}
function encInt(n) { return n >= 0 ? encHead(0, n) : encHead(1, -1 - n); }
function encUuid() { // tag 37 over 16 bytes, as SurrealDB encodes UUIDs
  return Buffer.concat([Buffer.from([0xd8, 0x25, 0x50]), Buffer.from(crypto.randomUUID().replace(/-/g, ''), 'hex')]);
}
function uuidText(raw) { // for logs only
  const h = raw.subarray(raw.length - 16).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// engineError returns the raw error value if the engine's reply is its error
// form {error: {code, message, ...}}, else undefined. A result that merely
// has a field named error (a `run` of a function returning such an object)
// is told apart by the single key and the code and message inside.
function engineError(reply) {
  if (reply.length === 0 || reply[0] >> 5 !== 5) return undefined;
  let m;
  try { m = topMap(reply); } catch { return undefined; }
  if (m.size !== 1 || !m.has('error')) return undefined;
  const err = m.get('error');
  let inner;
  try { inner = topMap(err); } catch { return undefined; }
  return inner.has('code') && inner.has('message') ? err : undefined;
}

// statementError returns the raw bytes of a query reply if any statement in
// it has status ERR (a crude scan: used for the server's own setup only).
function statementError(reply) {
  return reply.includes(Buffer.concat([encText('status'), encText('ERR')])) ? reply : undefined;
}

function rpcError(code, message) {
  return encMap([['code', encInt(code)], ['message', encText(message)]]);
}

// ---------------------------------------------------------------------------
// Engine access shared by all sockets.

class Engine {
  constructor(native) {
    this.native = native;
    this.inflight = 0;
    this.idle = [];
  }

  // call runs one RPC request (raw CBOR map) and returns {error} or {result}
  // as raw CBOR values.
  async call(request) {
    this.inflight++;
    try {
      const reply = Buffer.from(await this.native.execute(request));
      const error = engineError(reply);
      return error ? { error } : { result: reply };
    } finally {
      if (--this.inflight === 0) { const w = this.idle; this.idle = []; w.forEach((f) => f()); }
    }
  }

  // request builds and runs {id, method, params, session}.
  async request(method, params, session) {
    const entries = [['id', encInt(0)], ['method', encText(method)]];
    if (params) entries.push(['params', encArray(params)]);
    if (session) entries.push(['session', session]);
    return this.call(encMap(entries));
  }

  drained() {
    return this.inflight === 0 ? Promise.resolve() : new Promise((r) => this.idle.push(r));
  }
}

function withTimeout(p, ms, what) {
  let t;
  return Promise.race([p, new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`${what}: timed out after ${ms} ms`)), ms); })])
    .finally(() => clearTimeout(t));
}

// ---------------------------------------------------------------------------
// One client socket: its session, its queue, its open transactions.

let nextSocketId = 1;
const sockets = new Set();

class Client {
  constructor(ws, engine, remote) {
    this.id = nextSocketId++;
    this.ws = ws;
    this.engine = engine;
    this.remote = remote;
    this.session = encUuid();
    this.sessionKey = this.session.toString('hex');
    this.extraSessions = new Map(); // sessions the client attached itself: hex -> raw
    this.txns = new Map(); // open interactive transactions begun here: hex -> raw
    this.queue = [];
    this.inflight = 0;
    this.closed = false;
    this.cleaned = null;
    this.ready = engine.request('attach', null, this.session).then((r) => {
      if (r.error) throw new Error('attach failed');
    });
    this.ready.catch((err) => {
      log(`socket ${this.id}: cannot attach a session: ${err.message}`);
      ws.close(1011, 'cannot attach a session');
    });
  }

  onMessage(data, isBinary) {
    if (this.closed) return;
    if (!isBinary) {
      this.send(encMap([['error', rpcError(-32700, 'Parse error: this server speaks CBOR (binary frames) only')]]));
      return;
    }
    if (this.queue.length >= MAX_QUEUED_PER_SOCKET) {
      log(`socket ${this.id}: more than ${MAX_QUEUED_PER_SOCKET} queued requests, closing`);
      this.ws.close(1008, 'too many pending requests');
      return;
    }
    this.queue.push(Buffer.isBuffer(data) ? data : Buffer.concat(data));
    this.pump();
  }

  pump() {
    while (!this.closed && this.inflight < MAX_INFLIGHT_PER_SOCKET && this.queue.length > 0) {
      const msg = this.queue.shift();
      this.inflight++;
      this.handle(msg)
        .catch((err) => log(`socket ${this.id}: ${err.stack || err}`))
        .finally(() => {
          this.inflight--;
          if (this.closed) { if (this.inflight === 0 && this.onDrained) this.onDrained(); } else this.pump();
        });
    }
  }

  async handle(msg) {
    let req;
    try {
      req = topMap(msg);
    } catch (err) {
      this.send(encMap([['error', rpcError(-32700, `Parse error: ${err.message}`)]]));
      return;
    }
    const id = req.get('id');
    const method = textOf(req.get('method'));
    const reply = (entries) => this.send(encMap(id ? [['id', id], ...entries] : entries));
    if (method === undefined) {
      reply([['error', rpcError(-32600, 'Invalid request: method is missing or not a string')]]);
      return;
    }
    await this.ready;

    // The engine session: the socket's own unless the client names one.
    const explicit = !isAbsent(req.get('session'));
    const entries = [];
    for (const [k, v] of req) if (k !== 'session') entries.push([k, v]);
    entries.push(['session', explicit ? req.get('session') : this.session]);

    const started = debug ? process.hrtime.bigint() : 0n;
    const res = await this.engine.call(encMap(entries));
    if (debug) log(`socket ${this.id}: ${method} ${res.error ? 'error' : 'ok'} ${Number(process.hrtime.bigint() - started) / 1e6} ms`);

    // Bookkeeping for cleanup at close.
    if (!res.error) {
      if (method === 'begin') this.txns.set(res.result.toString('hex'), res.result);
      if (explicit && method === 'attach') {
        const s = req.get('session');
        if (s.toString('hex') !== this.sessionKey) this.extraSessions.set(s.toString('hex'), s);
      }
      if (explicit && method === 'detach') this.extraSessions.delete(req.get('session').toString('hex'));
    }
    if (method === 'commit' || method === 'cancel') {
      const t = firstElement(req.get('params')) || req.get('txn');
      if (t) this.txns.delete(t.toString('hex'));
    }
    if (res.error) reply([['error', res.error]]);
    else reply([['result', res.result]]);
  }

  send(buf) {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return;
    this.ws.send(buf, { binary: true }, (err) => { if (err && debug) log(`socket ${this.id}: send: ${err.message}`); });
  }

  // close drops queued requests, waits for running ones, then cancels the
  // socket's open transactions and detaches its sessions. Idempotent.
  close() {
    if (this.cleaned) return this.cleaned;
    this.closed = true;
    this.queue.length = 0;
    const drained = this.inflight === 0 ? Promise.resolve() : new Promise((r) => { this.onDrained = r; });
    this.cleaned = drained.then(() => this.cleanup());
    return this.cleaned;
  }

  async cleanup() {
    const step = async (what, p) => {
      try {
        const r = await withTimeout(p, CLEANUP_TIMEOUT_MS, what);
        if (r.error && debug) log(`socket ${this.id}: ${what}: engine error`);
      } catch (err) {
        log(`socket ${this.id}: ${what}: ${err.message}`);
      }
    };
    await this.ready.catch(() => {});
    if (this.txns.size > 0) log(`socket ${this.id}: closed with ${this.txns.size} open transaction(s), cancelling`);
    for (const t of this.txns.values()) await step(`cancel transaction ${uuidText(t)}`, this.engine.request('cancel', [t], this.session));
    this.txns.clear();
    for (const s of this.extraSessions.values()) await step(`detach session ${uuidText(s)}`, this.engine.request('detach', null, s));
    this.extraSessions.clear();
    await step('detach session', this.engine.request('detach', null, this.session));
  }
}

// ---------------------------------------------------------------------------
// Live query notifications: the engine publishes them for all sessions; the
// payload names the session, which names the socket. Sent as {result: payload}
// without an id, as a SurrealDB server does.

async function relayNotifications(native, isRunning) {
  let receiver;
  try {
    receiver = await native.notifications();
  } catch (err) {
    log(`live query notifications unavailable: ${err.message}`);
    return;
  }
  while (isRunning()) {
    let value;
    try {
      value = await receiver.recv();
    } catch (err) {
      if (isRunning()) log(`notification receiver: ${err.message}`);
      return;
    }
    if (value === null || value === undefined) return;
    const payload = Buffer.from(value);
    let session;
    try { session = topMap(payload).get('session'); } catch { continue; }
    const key = session && session.toString('hex');
    for (const c of sockets) {
      if (c.sessionKey === key || (key && c.extraSessions.has(key))) c.send(encMap([['result', payload]]));
    }
  }
}

// ---------------------------------------------------------------------------

async function main() {
  let cfg;
  try {
    cfg = loadConfig();
  } catch (err) {
    log(`configuration: ${err.message}`);
    process.exit(2);
  }
  const native = loadNative();
  if (cfg.engine.startsWith('rocksdb://')) fs.mkdirSync(cfg.data, { recursive: true });

  const t0 = Date.now();
  let nativeEngine;
  try {
    nativeEngine = await native.SurrealNodeEngine.connect(cfg.engine, {});
  } catch (err) {
    log(`cannot open the engine at ${cfg.engine}: ${err.message}`);
    if (/lock/i.test(err.message)) log('another server is probably using this data directory');
    process.exit(1);
  }
  const engine = new Engine(nativeEngine);
  let running = true;

  // The embedded engine does not enforce auth, but SignIn needs the user.
  const setup = await engine.request('query', [
    encText(`DEFINE USER OVERWRITE ${cfg.user} ON ROOT PASSWORD ${JSON.stringify(cfg.pass)} ROLES OWNER;`),
  ]);
  const setupErr = setup.error || statementError(setup.result);
  if (setupErr) {
    log(`cannot define the root user ${cfg.user}: ${setupErr.toString('latin1').replace(/[^\x20-\x7e]+/g, ' ')}`);
    process.exit(1);
  }
  log(`engine ${cfg.engine} open in ${Date.now() - t0} ms, root user ${cfg.user} defined`);
  relayNotifications(nativeEngine, () => running);

  const server = http.createServer((req, res) => {
    const url = (req.url || '').split('?')[0];
    if (req.method === 'GET' && url === '/health') { res.writeHead(200).end(); return; }
    if (req.method === 'GET' && url === '/version') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end(`surrealdb-${native.SurrealNodeEngine.version ? safeVersion(native) : 'embedded'}`);
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  });

  const wss = new WebSocketServer({
    server,
    path: '/rpc',
    maxPayload: MAX_MESSAGE_BYTES,
    perMessageDeflate: false,
    handleProtocols: (protocols) => (protocols.has('cbor') ? 'cbor' : false),
    verifyClient: (info, cb) => {
      const offered = info.req.headers['sec-websocket-protocol'];
      if (offered && !offered.split(',').map((s) => s.trim()).includes('cbor')) {
        cb(false, 400, 'only the cbor subprotocol is supported');
        return;
      }
      cb(true);
    },
  });

  wss.on('connection', (ws, req) => {
    const c = new Client(ws, engine, `${req.socket.remoteAddress}:${req.socket.remotePort}`);
    sockets.add(c);
    if (debug) log(`socket ${c.id} open from ${c.remote}`);
    ws.on('message', (data, isBinary) => c.onMessage(data, isBinary));
    ws.on('error', (err) => { if (debug) log(`socket ${c.id}: ${err.message}`); });
    ws.on('close', () => {
      c.close().finally(() => {
        sockets.delete(c);
        if (debug) log(`socket ${c.id} closed`);
      });
    });
  });

  server.on('error', (err) => {
    if (err.code === 'EADDRINUSE') log(`port ${cfg.port} on ${cfg.host} is already in use`);
    else log(`listen: ${err.message}`);
    running = false;
    try { nativeEngine.free(); } catch { /* exiting anyway */ }
    process.exit(1);
  });
  server.listen(cfg.port, cfg.host, () => {
    const a = server.address();
    log(`listening on ws://${a.address}:${a.port}/rpc (pid ${process.pid})`);
  });

  let stopping = false;
  const stop = async (signal) => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: shutting down`);
    const hard = setTimeout(() => { log('shutdown took too long, exiting'); process.exit(1); }, SHUTDOWN_GRACE_MS * 3);
    hard.unref();
    server.close();
    for (const c of sockets) c.ws.close(1001, 'server shutting down');
    try {
      await withTimeout(Promise.all([...sockets].map((c) => c.close())), SHUTDOWN_GRACE_MS, 'socket cleanup');
      await withTimeout(engine.drained(), SHUTDOWN_GRACE_MS, 'engine calls');
    } catch (err) {
      log(err.message);
    }
    running = false;
    for (const c of sockets) c.ws.terminate();
    nativeEngine.free(); // closes rocksdb
    log('engine closed');
    process.exit(0);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

function safeVersion(native) {
  try { return String(native.SurrealNodeEngine.version()).replace(/^surrealdb-/, ''); } catch { return 'embedded'; }
}

main().catch((err) => {
  log(`fatal: ${err.stack || err}`);
  process.exit(1);
});
