// The parts the gateway's tests run for real: a private redis-server, the realtime-gateway
// binary the test build made, mirrorctl applying events into a SQLite mirror (which
// announces them to Redis as the functions do), JWTs signed here with node:crypto, and
// devices that are the real socket.io-client. docs/realtime.md is what they check.

import { spawn, execFile } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after } from "node:test";
import { promisify } from "node:util";
import { io } from "socket.io-client";

const run = promisify(execFile);
export const root = path.resolve(import.meta.dirname, "../..");
const targetDir = process.env.CARGO_TARGET_DIR ?? path.join(root, "target");
export const bin = (name) => path.join(targetDir, "debug", name);
export const ISSUER = "https://issuer.test/";
export const AUDIENCE = "mirror-tests";
export const SECRET = "a-development-secret-of-at-least-32-bytes!";

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits for `cond()` to be truthy, polling; fails naming `what` (a hang guard, not a timing test). */
export async function until(cond, what, tries = 300) {
  for (let i = 0; i < tries; i++) {
    const v = await cond();
    if (v) return v;
    await sleep(50);
  }
  throw new Error(`never happened: ${what}`);
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function accepts(port) {
  return new Promise((resolve) => {
    const c = net.connect(port, "127.0.0.1");
    c.once("connect", () => (c.destroy(), resolve(true)));
    c.once("error", () => resolve(false));
  });
}

export const tmpdir = () => fs.mkdtempSync(path.join(os.tmpdir(), "gateway-test-"));

/** A redis-server of the test's own, keeping nothing on disk: a restart loses every stream. */
export class Redis {
  static async start() {
    const r = new Redis(await freePort());
    await r.#spawn();
    return r;
  }
  constructor(port) {
    this.port = port;
    this.url = `redis://127.0.0.1:${port}`;
  }
  async #spawn() {
    this.proc = spawn("redis-server", ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
    await until(() => accepts(this.port), `redis-server on ${this.port}`);
  }
  async stop() {
    if (!this.proc || this.proc.exitCode !== null) return;
    const exited = new Promise((r) => this.proc.once("exit", r));
    this.proc.kill("SIGKILL");
    await exited;
  }
  /** Killed and started again on the same port: every stream and key is gone. */
  async restart() {
    await this.stop();
    await this.#spawn();
  }
  async cli(...args) {
    const { stdout } = await run("redis-cli", ["-p", String(this.port), "--raw", ...args]);
    return stdout.trim();
  }
  /** The ids of the entries of `user`'s stream after `after`, oldest first. */
  async ids(user, after = "-") {
    const script = "local ids = {} for i, e in ipairs(redis.call('XRANGE', KEYS[1], ARGV[1], '+')) do ids[i] = e[1] end return ids";
    const out = await this.cli("EVAL", script, "1", `stream:user:{${user}}`, after === "-" ? "-" : `(${after}`);
    return out ? out.split("\n") : [];
  }
  async get(key) {
    const { stdout } = await run("redis-cli", ["-p", String(this.port), "--raw", "GET", key]);
    return stdout.trim() || null;
  }
}

/**
 * A Redis Cluster of the test's own: `masters` redis-server nodes in cluster mode (no
 * replicas, nothing on disk), the slots spread by `redis-cli --cluster create`. `url` is
 * the first node, as an operator would configure it; `cli` follows redirections.
 */
export class RedisCluster {
  static async start({ masters = 3, notifications = "Kt" } = {}) {
    const ports = [];
    for (let i = 0; i < masters; i++) ports.push(await freePort());
    const c = new RedisCluster(ports, notifications);
    c.procs = ports.map((port) => c.#spawn(port));
    for (const port of ports) await until(() => accepts(port), `cluster node on ${port}`);
    await run("redis-cli", ["--cluster", "create", ...ports.map((p) => `127.0.0.1:${p}`), "--cluster-yes"]);
    for (const port of ports) {
      await until(async () => (await run("redis-cli", ["-p", String(port), "CLUSTER", "INFO"])).stdout.includes("cluster_state:ok"), `cluster state ok on ${port}`);
    }
    return c;
  }
  constructor(ports, notifications) {
    this.ports = ports;
    this.port = ports[0];
    this.url = `redis://127.0.0.1:${ports[0]}`;
    this.notifications = notifications;
    this.dir = tmpdir();
  }
  #spawn(port) {
    const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--cluster-enabled", "yes", "--cluster-config-file", `nodes-${port}.conf`, "--notify-keyspace-events", this.notifications];
    return spawn("redis-server", args, { cwd: this.dir, stdio: "ignore" });
  }
  /** The node on `port` killed and started again: it keeps its slots (nodes.conf), loses its keys. */
  async restart(port) {
    const i = this.ports.indexOf(port);
    const old = this.procs[i];
    await new Promise((r) => { old.once("exit", r); old.kill("SIGKILL"); });
    this.procs[i] = this.#spawn(port);
    await until(() => accepts(port), `cluster node on ${port} again`);
    for (const p of this.ports) {
      await until(async () => (await run("redis-cli", ["-p", String(p), "CLUSTER", "INFO"])).stdout.includes("cluster_state:ok"), `cluster state ok on ${p}`, 600);
    }
  }
  async stop() {
    await Promise.all(this.procs.filter((p) => p.exitCode === null).map((p) => new Promise((r) => { p.once("exit", r); p.kill("SIGKILL"); })));
  }
  async cli(...args) {
    const { stdout } = await run("redis-cli", ["-c", "-p", String(this.port), "--raw", ...args]);
    return stdout.trim();
  }
  async get(key) {
    return (await this.cli("GET", key)) || null;
  }
  /** The port of the master that holds `key`. */
  async nodeOf(key) {
    for (const port of this.ports) {
      const { stdout } = await run("redis-cli", ["-p", String(port), "--raw", "EXISTS", key]);
      if (stdout.trim() === "1") return port;
    }
    return null;
  }
}

/** One realtime-gateway process; `env` adds to or overrides its settings. */
export class Gateway {
  static async start(redis, env = {}) {
    const g = new Gateway(await freePort(), redis, env);
    await g.#spawn();
    return g;
  }
  constructor(port, redis, env) {
    this.port = port;
    this.url = `http://127.0.0.1:${port}`;
    this.env = {
      GATEWAY_LISTEN: `127.0.0.1:${port}`,
      MIRROR_REDIS_URL: redis.url,
      GATEWAY_JWT_HS256_SECRET: SECRET,
      GATEWAY_JWT_ISSUER: ISSUER,
      GATEWAY_JWT_AUDIENCE: AUDIENCE,
      GATEWAY_NODE_ID: `node-${port}`,
      RUST_LOG: "info",
      ...env,
    };
    for (const [k, v] of Object.entries(this.env)) if (v === undefined) delete this.env[k];
    this.log = "";
  }
  async #spawn() {
    this.proc = spawn(process.env.GATEWAY_BIN ?? bin("realtime-gateway"), [], { env: { PATH: process.env.PATH, ...this.env }, stdio: ["ignore", "pipe", "pipe"] });
    const keep = (d) => {
      this.log += d;
      if (process.env.GATEWAY_TEST_LOG) process.stderr.write(d);
    };
    this.proc.stdout.on("data", keep);
    this.proc.stderr.on("data", keep);
    this.exited = new Promise((r) => this.proc.once("exit", (code, signal) => r({ code, signal })));
    await until(async () => {
      if (this.proc.exitCode !== null) throw new Error(`realtime-gateway exited at start:\n${this.log}`);
      try {
        return (await fetch(`${this.url}/healthz`)).status === 200;
      } catch {
        return false;
      }
    }, `realtime-gateway healthy on ${this.port}`);
  }
  /** SIGTERM, then the exit: {code, signal}. */
  async stop() {
    if (this.proc.exitCode !== null) return this.exited;
    this.proc.kill("SIGTERM");
    return this.exited;
  }
  async kill() {
    if (this.proc.exitCode === null) this.proc.kill("SIGKILL");
    return this.exited;
  }
  /** The value of one Prometheus series, e.g. metric('gateway_handshakes_refused_total{reason="expired"}'). */
  async metric(series) {
    const text = await (await fetch(`${this.url}/metrics`)).text();
    const line = text.split("\n").find((l) => l.startsWith(series + " "));
    return line ? Number(line.slice(series.length + 1)) : 0;
  }
}

const b64url = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

/** The claims of a valid token for `user`, with `extra` added or replacing. */
export const claims = (user, extra = {}) => ({ iss: ISSUER, aud: AUDIENCE, sub: user, iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 600, ...extra });

export function hs256(payload, secret = SECRET, header = {}) {
  const signing = `${b64url({ alg: "HS256", typ: "JWT", ...header })}.${b64url(payload)}`;
  return `${signing}.${crypto.createHmac("sha256", secret).update(signing).digest("base64url")}`;
}

/** A signing key pair for RS256 or ES256, with its public half as a JWK named `kid`. */
export function keyPair(alg, kid) {
  const { privateKey, publicKey } = alg === "RS256" ? crypto.generateKeyPairSync("rsa", { modulusLength: 2048 }) : crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
  return { alg, kid, privateKey, publicKey, jwk: { ...publicKey.export({ format: "jwk" }), kid, alg, use: "sig" } };
}

export function signWith(pair, payload, header = {}) {
  const signing = `${b64url({ alg: pair.alg, typ: "JWT", kid: pair.kid, ...header })}.${b64url(payload)}`;
  const signature = pair.alg === "RS256" ? crypto.sign("sha256", Buffer.from(signing), pair.privateKey) : crypto.sign("sha256", Buffer.from(signing), { key: pair.privateKey, dsaEncoding: "ieee-p1363" });
  return `${signing}.${signature.toString("base64url")}`;
}

/**
 * A device: the real socket.io-client, which records every event it is sent, acknowledges
 * each entry (and, after a resync, the id it resumes from) as a real client does after
 * applying it, and checks nothing itself: the tests read `events`.
 */
export class Device {
  constructor(gateway, { token, deviceId, lastSeenId, transports = ["websocket"], extraAuth = {}, autoAck = true }) {
    this.events = [];
    this.acks = [];
    this.autoAck = autoAck;
    const auth = { token, deviceId, ...extraAuth };
    if (lastSeenId !== undefined) auth.lastSeenId = lastSeenId;
    this.socket = io(gateway.url, { auth, transports, reconnection: false, forceNew: true, timeout: 10000 });
    this.socket.on("entry", (e) => {
      this.events.push({ kind: "entry", ...e });
      if (this.autoAck) this.ack(e.id);
    });
    this.socket.on("resync", (r) => {
      this.events.push({ kind: "resync", ...r });
      if (this.autoAck && r.lastGeneratedId !== "0-0") this.ack(r.lastGeneratedId);
    });
    this.socket.on("bye", (b) => this.events.push({ kind: "bye", ...b }));
    this.closed = new Promise((r) => this.socket.once("disconnect", (reason) => r(reason)));
  }
  /** Resolves on connect; rejects with the connect_error's message. */
  static async connect(gateway, options) {
    const d = new Device(gateway, options);
    await new Promise((resolve, reject) => {
      d.socket.once("connect", resolve);
      d.socket.once("connect_error", (err) => reject(err));
    });
    return d;
  }
  /** The refusal's message of a handshake expected to be refused. */
  static async refusal(gateway, options) {
    try {
      const d = await Device.connect(gateway, options);
      d.close();
    } catch (err) {
      return err.message;
    }
    throw new Error("the handshake was accepted");
  }
  ack(id) {
    const p = this.socket.timeout(10000).emitWithAck("ack", { id });
    // an acknowledgement still unanswered when the device disconnects is answered by nobody
    this.acks.push(p.then((reply) => ({ id, reply }), (err) => ({ id, error: err.message })));
    p.catch(() => {});
    return p;
  }
  get entries() {
    return this.events.filter((e) => e.kind === "entry");
  }
  get resyncs() {
    return this.events.filter((e) => e.kind === "resync");
  }
  /** Every acknowledgement sent so far, answered. */
  async settled() {
    return Promise.all(this.acks);
  }
  async nextEntries(n, what = `${n} entries`) {
    return until(() => this.entries.length >= n && this.entries, `${what} (have ${this.entries.length}: ${JSON.stringify(this.events.slice(-3))})`);
  }
  async nextResync(n = 1) {
    return until(() => this.resyncs.length >= n && this.resyncs, `resync #${n} (events ${JSON.stringify(this.events.slice(-3))})`);
  }
  close() {
    this.socket.disconnect();
  }
}

/**
 * The rule every device's log must keep (docs/streams.md): each entry names as `prev` the
 * entry before it or the id a resync resumed from; ids only grow; none comes twice.
 * Returns the problems found, empty when there is none.
 */
export function gaps(events, start) {
  const problems = [];
  const seen = new Set();
  let position = start;
  for (const e of events) {
    if (e.kind === "resync") position = e.lastGeneratedId;
    if (e.kind !== "entry") continue;
    if (seen.has(e.id)) problems.push(`${e.id} delivered twice`);
    seen.add(e.id);
    if (position !== undefined && e.prev !== position) problems.push(`${e.id} has prev ${e.prev}, but the device was at ${position}`);
    position = e.id;
  }
  return problems;
}

let sequence = 0;
/** A SQLite mirror that announces to `redis`, fed through `mirrorctl apply`. */
export class Mirror {
  constructor(redis, env = {}) {
    this.dir = tmpdir();
    this.env = { PATH: process.env.PATH, DATABASE_URL: `sqlite://${this.dir}/mirror.db`, MIRROR_REDIS_URL: redis.url, RUST_LOG: "warn", ...env };
    this.clock = Date.parse("2026-01-01T00:00:00Z");
  }
  #at() {
    this.clock += 1000;
    return new Date(this.clock).toISOString();
  }
  conversation(id, participants) {
    const at = this.#at();
    return { eventType: "dm.conversation.created", eventId: `e-${id}-${++sequence}`, occurredAt: at, entityId: id, source: "test", payload: { conversationId: id, ownerId: participants[0], participantIds: participants, createdAt: at, updatedAt: at } };
  }
  message(conversationId, author, messageId = `m${++sequence}`) {
    const at = this.#at();
    return { eventType: "dm.message.created", eventId: `e-${messageId}-${++sequence}`, occurredAt: at, entityId: `${conversationId}/${messageId}`, source: "test", payload: { conversationId, messageId, authorId: author, body: "never in a stream", createdAt: at } };
  }
  /** Applies the events in one `mirrorctl apply` run; resolves to its JSON summary. */
  async apply(events) {
    const file = path.join(this.dir, `batch-${++sequence}.jsonl`);
    fs.writeFileSync(file, events.map((e) => JSON.stringify(e)).join("\n") + "\n");
    const { stdout } = await run(bin("mirrorctl"), ["apply", file], { env: this.env, maxBuffer: 1 << 24 });
    return JSON.parse(stdout);
  }
  /** Applies `n` messages by `author` in `conversationId`; resolves to their message ids. */
  async messages(conversationId, author, n) {
    const events = Array.from({ length: n }, () => this.message(conversationId, author));
    await this.apply(events);
    return events.map((e) => e.payload.messageId);
  }
}

/** A private Redis, a gateway on it (`env` added to its settings) and a mirror announcing to it, stopped when the file's tests end. */
export async function stack(env = {}, mirrorEnv = {}) {
  const redis = await Redis.start();
  const gateway = await Gateway.start(redis, env);
  after(async () => {
    await gateway.kill();
    await redis.stop();
  });
  return { redis, gateway, mirror: new Mirror(redis, mirrorEnv) };
}
