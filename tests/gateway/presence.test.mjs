// Presence (docs/realtime.md, "Presence"): a device is present while its
// `device:{D}:node` names a node whose heartbeat `gateway:node:{N}` lives. The heartbeat,
// not each device, is refreshed, so idle devices cost Redis nothing; a crashed node's keys
// are swept by a live node once its heartbeat is gone.

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { Device, Gateway, claims, hs256, sleep, stack, until } from "./harness.mjs";

const stop = [];
after(async () => {
  for (const s of stop.reverse()) await s();
});

const commands = async (redis) => {
  const stats = await redis.cli("INFO", "stats");
  return Number(/total_commands_processed:(\d+)/.exec(stats)[1]);
};

test("presence: idle devices cost Redis no commands; only the node's heartbeat is refreshed", async () => {
  // A 10 s TTL: a refresh round every 5 s, so the 12 s below hold two rounds.
  const { redis, gateway } = await stack({ GATEWAY_PRESENCE_TTL: "10s" });
  const devices = await Promise.all(
    Array.from({ length: 40 }, (_, i) => Device.connect(gateway, { token: hs256(claims(`idle-${i}`)), deviceId: `idle-${i}-phone` })),
  );
  stop.push(() => devices.forEach((d) => d.close()));
  await Promise.all(devices.map((d) => d.nextResync()));
  assert.equal(await redis.get("device:{idle-7-phone}:node"), `node-${gateway.port}`);
  const before = await commands(redis);
  await sleep(12_000);
  const spent = (await commands(redis)) - before - 1; // less this INFO
  // Per round: the heartbeat (SET, SADD) and the node list (SMEMBERS); the reader's XREAD
  // BLOCK of 5 s returns about twice. 40 devices refreshed each round would be 80 more.
  assert.ok(spent <= 16, `40 idle devices for 12 s cost ${spent} Redis commands`);
  const ttl = Number(await redis.cli("TTL", `gateway:node:{node-${gateway.port}}`));
  assert.ok(ttl > 0 && ttl <= 10, `the heartbeat has the TTL (${ttl})`);
  assert.equal(await redis.get("device:{idle-7-phone}:node"), `node-${gateway.port}`, "still present after the TTL, connected");
});

test("presence: the keys of a crashed gateway are cleared by a live one once its heartbeat is gone", async () => {
  const { redis, gateway: dead } = await stack({ GATEWAY_PRESENCE_TTL: "10s" });
  const live = await Gateway.start(redis, { GATEWAY_PRESENCE_TTL: "10s" });
  stop.push(() => live.kill());
  const away = await Device.connect(dead, { token: hs256(claims("pia")), deviceId: "pia-phone" });
  const here = await Device.connect(live, { token: hs256(claims("pia")), deviceId: "pia-laptop" });
  await Promise.all([away.nextResync(), here.nextResync()]);
  assert.equal(await redis.get("device:{pia-phone}:node"), `node-${dead.port}`);
  assert.equal(await redis.cli("SISMEMBER", `gateway:node:{node-${dead.port}}:devices`, "pia-phone"), "1");
  await dead.kill(); // SIGKILL: no goodbye, the keys stay behind
  assert.equal(await redis.get("device:{pia-phone}:node"), `node-${dead.port}`, "left behind by the crash");
  // The heartbeat expires within 10 s; the live node's next round (every 5 s) sweeps.
  await until(async () => (await redis.get("device:{pia-phone}:node")) === null, "the dead node's presence key swept", 600);
  assert.equal(await redis.cli("EXISTS", `gateway:node:{node-${dead.port}}:devices`), "0");
  assert.equal(await redis.cli("SISMEMBER", "gateway:nodes", `node-${dead.port}`), "0");
  assert.equal(await redis.get("device:{pia-laptop}:node"), `node-${live.port}`, "the live node's device is untouched");
  here.close();
  await until(async () => (await redis.get("device:{pia-laptop}:node")) === null, "cleared on disconnect");
});

test("presence: a graceful stop removes the node's heartbeat and every key naming it", async () => {
  const { redis, gateway } = await stack();
  const d = await Device.connect(gateway, { token: hs256(claims("qin")), deviceId: "qin-phone" });
  await d.nextResync();
  assert.equal(await redis.cli("EXISTS", `gateway:node:{node-${gateway.port}}`), "1");
  assert.deepEqual(await gateway.stop(), { code: 0, signal: null });
  assert.equal(await redis.get("device:{qin-phone}:node"), null);
  assert.equal(await redis.cli("EXISTS", `gateway:node:{node-${gateway.port}}`), "0");
  assert.equal(await redis.cli("SISMEMBER", "gateway:nodes", `node-${gateway.port}`), "0");
});
