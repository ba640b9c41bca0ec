// The gateway's load benchmark (BENCHMARKS.md, "Realtime gateway"; run by
// scripts/bench-gateway): one gateway process, one private redis-server, and this process
// as the load generator — N devices (two per user) on the real socket.io-client, and a
// publisher that XADDs entries chained by `prev` straight into the users' streams at set
// rates. Prints one JSON line per phase: memory per connected device, Redis commands per
// second idle, deliveries per second and XADD → received latency, a reconnect storm with
// 50-entry replays, and the CPU time of gateway, generator and Redis in each phase.

import fs from "node:fs";
import net from "node:net";
import { io } from "socket.io-client";
import { Gateway, Redis, claims, hs256, sleep, until } from "../harness.mjs";

const devices = Number(process.env.DEVICES ?? 10000);
const rates = (process.env.RATES ?? "2500,5000,10000").split(",").map(Number); // XADDs/s; 2 deliveries each
const seconds = Number(process.env.SECONDS_PER_RATE ?? 10);
const idleSeconds = Number(process.env.IDLE_SECONDS ?? 60);
const users = Math.ceil(devices / 2);
const user = (i) => `bench-u${i}`;

/** A minimal RESP client: pipelined commands on one connection, replies in order. */
class Resp {
  constructor(port) {
    this.socket = net.connect(port, "127.0.0.1");
    this.socket.setNoDelay(true);
    this.buffer = Buffer.alloc(0);
    this.waiting = [];
    this.socket.on("data", (d) => {
      this.buffer = this.buffer.length ? Buffer.concat([this.buffer, d]) : d;
      let at = 0;
      for (;;) {
        const r = parse(this.buffer, at);
        if (!r) break;
        at = r.at;
        const w = this.waiting.shift();
        r.value instanceof Error ? w.reject(r.value) : w.resolve(r.value);
      }
      this.buffer = this.buffer.subarray(at);
    });
  }
  send(...args) {
    let out = `*${args.length}\r\n`;
    for (const a of args) out += `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`;
    this.socket.write(out);
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }
  close() {
    this.socket.destroy();
  }
}
function parse(b, at) {
  const end = b.indexOf("\r\n", at);
  if (end < 0) return null;
  const head = b.toString("latin1", at + 1, end);
  const type = String.fromCharCode(b[at]);
  if (type === "+") return { value: head, at: end + 2 };
  if (type === "-") return { value: new Error(head), at: end + 2 };
  if (type === ":") return { value: Number(head), at: end + 2 };
  if (type === "$") {
    const n = Number(head);
    if (n < 0) return { value: null, at: end + 2 };
    if (b.length < end + 2 + n + 2) return null;
    return { value: b.toString("utf8", end + 2, end + 2 + n), at: end + 2 + n + 2 };
  }
  if (type === "*") {
    const n = Number(head);
    const items = [];
    let pos = end + 2;
    for (let i = 0; i < n; i++) {
      const r = parse(b, pos);
      if (!r) return null;
      items.push(r.value);
      pos = r.at;
    }
    return { value: items, at: pos };
  }
  throw new Error(`RESP: unexpected ${type}`);
}

const cpu = (pid) => {
  const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, clock ticks of 1/100 s
};
const rssKb = (pid) => Number(fs.readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/)[1]);
const percentile = (xs, p) => (xs.length ? xs.slice().sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] : null);
const print = (phase, o) => console.log(JSON.stringify({ phase, ...o }));

const redis = await Redis.start();
const gateway = await Gateway.start(redis, { RUST_LOG: "warn", ...Object.fromEntries(["GATEWAY_REPLAY_CAP", "GATEWAY_PRESENCE_TTL", "MALLOC_ARENA_MAX"].filter((k) => process.env[k]).map((k) => [k, process.env[k]])) });
const resp = new Resp(redis.port);
const pids = { gateway: gateway.proc.pid, generator: process.pid, redis: redis.proc.pid };
const cpus = () => Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpu(pid)]));
const cpuSince = (before, wall) => Object.fromEntries(Object.entries(cpus()).map(([k, v]) => [`${k}_cpu_pct`, Math.round(((v - before[k]) / wall) * 100)]));
const commands = async () => Number((await resp.send("INFO", "stats")).match(/total_commands_processed:(\d+)/)[1]);
const commandstats = async () => Object.fromEntries([...(await resp.send("INFO", "commandstats")).matchAll(/cmdstat_(\w+):calls=(\d+)/g)].map((m) => [m[1], Number(m[2])]));
const idleRate = async (secs) => {
  const [c0, s0] = [await commands(), await commandstats()];
  await sleep(secs * 1000);
  const [c1, s1] = [await commands(), await commandstats()];
  // the benchmark's own INFO calls left out
  const by = Object.fromEntries(Object.entries(s1).map(([k, v]) => [k, +((v - (s0[k] ?? 0)) / secs).toFixed(2)]).filter(([k, v]) => v > 0 && k !== "info"));
  const infos = (s1.info ?? 0) - (s0.info ?? 0);
  return { redis_cmds_per_s: +((c1 - c0 - infos) / secs).toFixed(2), by_command: by };
};

// The publisher's view of each stream: its last id, for `prev`.
const last = new Map();
let clockMs = 0;
let sequence = 0;
function nextId() {
  const now = Date.now();
  if (now > clockMs) [clockMs, sequence] = [now, 0];
  else sequence++;
  return `${clockMs}-${sequence}`;
}
function xadd(u) {
  const id = nextId();
  const key = `stream:user:{${user(u)}}`;
  const prev = last.get(u) ?? "0-0";
  last.set(u, id);
  return resp.send("XADD", key, id, "type", "message.created", "messageId", `m-${id}`, "conversationId", `c-${u}`, "senderId", "s", "version", "2026-01-01T00:00:00.000000Z", "ts", String(Date.now()), "prev", prev);
}

// Devices.
const token = (u) => hs256(claims(user(u), { exp: Math.floor(Date.now() / 1000) + 3600 }));
const fleet = [];
let latencies = [];
const stats = { entries: 0, resyncs: 0, gaps: 0, errors: 0, byes: 0 };
function device(i) {
  const d = { i, u: Math.floor(i / 2), position: undefined, entries: 0, ready: false };
  d.socket = io(gateway.url, { auth: { token: token(d.u), deviceId: `bench-d${i}` }, transports: ["websocket"], reconnection: false, forceNew: true, timeout: 60000 });
  d.socket.on("entry", (e) => {
    const at = Date.now();
    stats.entries++;
    d.entries++;
    if (d.position !== undefined && e.prev !== d.position) stats.gaps++;
    d.position = e.id;
    latencies.push(at - Number(e.id.split("-")[0]));
  });
  d.socket.on("resync", (r) => {
    stats.resyncs++;
    d.position = r.lastGeneratedId;
    d.ready = true;
  });
  d.socket.on("connect_error", () => stats.errors++);
  d.socket.on("bye", () => stats.byes++);
  return d;
}
async function connectAll(indices, wave) {
  for (let k = 0; k < indices.length; k += wave) {
    const batch = indices.slice(k, k + wave).map((i) => (fleet[i] = device(i)));
    await Promise.all(batch.map((d) => new Promise((r) => (d.socket.once("connect", r), d.socket.once("connect_error", r)))));
  }
}

// 1. Memory per connected device.
await sleep(500);
const idle0 = await idleRate(5);
const rss0 = rssKb(pids.gateway);
let t = Date.now();
await connectAll([...Array(devices / 2).keys()], 500);
const rssHalf = rssKb(pids.gateway);
await connectAll([...Array(devices).keys()].slice(devices / 2), 500);
await until(() => fleet.every((d) => d.ready), "every device took its first resync", 1200);
const rss1 = rssKb(pids.gateway);
print("connect", {
  devices,
  users,
  connect_s: (Date.now() - t) / 1000,
  errors: stats.errors,
  gateway_rss_mb_before: +(rss0 / 1024).toFixed(1),
  gateway_rss_mb_after: +(rss1 / 1024).toFixed(1),
  kb_per_device: +((rss1 - rss0) / devices).toFixed(1),
  kb_per_device_second_half: +((rss1 - rssHalf) / (devices - devices / 2)).toFixed(1),
  connected_metric: await gateway.metric("gateway_connected_devices"),
});

// 2. Redis commands per second with every device idle, against none connected.
const idle1 = await idleRate(idleSeconds);
print("idle", { devices_0: idle0, [`devices_${devices}`]: idle1, window_s: idleSeconds, presence_ttl_s: Number.parseInt(process.env.GATEWAY_PRESENCE_TTL ?? "120") });

// Every user's stream gets one entry, so that every device has an entry to acknowledge
// before the storm.
{
  const e0 = stats.entries;
  await Promise.all(Array.from({ length: users }, (_, u) => xadd(u)));
  await until(() => stats.entries - e0 >= devices, "the first entry at every device", 1200);
}

// 3. Deliveries at set rates.
for (const rate of rates) {
  latencies = [];
  const [e0, g0] = [stats.entries, stats.gaps];
  const c0 = cpus();
  const start = Date.now();
  let sent = 0;
  while (Date.now() - start < seconds * 1000) {
    const due = Math.floor(((Date.now() - start) / 1000) * rate) - sent;
    const batch = [];
    for (let k = 0; k < due; k++) batch.push(xadd(Math.floor(Math.random() * users)));
    sent += due;
    await Promise.all(batch);
    await sleep(5);
  }
  await until(() => stats.entries - e0 >= sent * 2, "every delivery of the phase", 600).catch(() => {});
  const wall = (Date.now() - start) / 1000;
  print("deliver", {
    xadd_per_s: rate,
    deliveries_per_s: Math.round((stats.entries - e0) / wall),
    deliveries: stats.entries - e0,
    expected: sent * 2,
    gaps: stats.gaps - g0,
    p50_ms: percentile(latencies, 50),
    p99_ms: percentile(latencies, 99),
    max_ms: percentile(latencies, 100),
    ...cpuSince(c0, wall),
  });
}

// 4. A reconnect storm: every device acknowledged, away, 50 entries per user, all back at once.
for (let k = 0; k < fleet.length; k += 500) {
  await Promise.all(fleet.slice(k, k + 500).filter((d) => d.position && d.position !== "0-0").map((d) => d.socket.timeout(60000).emitWithAck("ack", { id: d.position }).catch(() => null)));
}
for (const d of fleet) d.socket.disconnect();
await until(async () => (await gateway.metric("gateway_connected_devices")) === 0, "every device gone", 1200);
const perUser = Number(process.env.STORM_REPLAY ?? 50);
for (let u = 0; u < users; u += 100) {
  const batch = [];
  for (let v = u; v < Math.min(users, u + 100); v++) for (let k = 0; k < perUser; k++) batch.push(xadd(v));
  await Promise.all(batch);
}
const [e0, r0, x0, b0, c0, cmd0] = [stats.entries, stats.resyncs, stats.errors, stats.byes, cpus(), await commands()];
let peak = rssKb(pids.gateway);
const sampler = setInterval(() => (peak = Math.max(peak, rssKb(pids.gateway))), 100);
t = Date.now();
const positions = fleet.map((d) => d.position);
fleet.forEach((d, i) => {
  fleet[i] = device(i);
  fleet[i].position = positions[i];
});
await until(() => stats.entries - e0 >= devices * perUser, "every replay", 2400).catch(() => {});
const wall = (Date.now() - t) / 1000;
clearInterval(sampler);
print("storm", {
  devices,
  replay_per_device: perUser,
  replayed: stats.entries - e0,
  expected: devices * perUser,
  resyncs: stats.resyncs - r0,
  errors: stats.errors - x0,
  byes: stats.byes - b0,
  unserved: fleet.filter((d) => d.entries < perUser).map((d) => ({ device: d.i, connected: d.socket.connected, entries: d.entries })).slice(0, 5),
  gaps: stats.gaps,
  all_served_s: wall,
  gateway_peak_rss_mb: +(peak / 1024).toFixed(1),
  redis_cmds: (await commands()) - cmd0,
  ...cpuSince(c0, wall),
});

const warnings = gateway.log.split("\n").filter((l) => l.includes('"WARN"') || l.includes('"ERROR"'));
print("gateway_log", { warnings: warnings.length, first: warnings.slice(0, 3).map((l) => JSON.parse(l).fields ?? JSON.parse(l)) });
for (const d of fleet) d.socket.disconnect();
resp.close();
await gateway.stop();
await redis.stop();
process.exit(0);
