// What a device is told when its history is gone or the parts around it fail
// (docs/realtime.md, "Resync" and "Running it"): trimmed streams, replays over the cap,
// a restarted gateway, a restarted Redis, two gateways sharing one Redis, SIGTERM.
// Whatever happens, a device's log never has a silent gap (harness `gaps`).

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { Device, Gateway, claims, gaps, hs256, stack, until } from "./harness.mjs";

const stop = [];
after(async () => {
  for (const s of stop.reverse()) await s();
});

/** A device of `user` that has acknowledged one live entry of conversation `c`; then away. */
async function acknowledgedOnce(gateway, mirror, user, c, deviceId = `${user}-phone`) {
  const d = await Device.connect(gateway, { token: hs256(claims(user)), deviceId });
  await d.nextResync();
  await mirror.apply([mirror.conversation(c, [user, `${user}-friend`])]);
  await mirror.messages(c, `${user}-friend`, 1);
  await d.nextEntries(1);
  const { id, reply } = (await d.settled()).at(-1);
  assert.deepEqual(reply, { ok: true });
  d.close();
  await d.closed;
  return id;
}

test("a device whose history was trimmed (MAXLEN) gets resync, then live entries after it", async () => {
  const { gateway, mirror } = await stack({}, { MIRROR_STREAM_MAXLEN: "100" });
  const acked = await acknowledgedOnce(gateway, mirror, "tara", "c-trim");
  await mirror.messages("c-trim", "tara-friend", 400);
  const d = await Device.connect(gateway, { token: hs256(claims("tara")), deviceId: "tara-phone" });
  const [resync] = await d.nextResync();
  assert.equal(resync.code, "trimmed", JSON.stringify(resync));
  assert.equal(d.entries.length, 0, "no replay across the gap");
  assert.deepEqual(await d.ack(acked), { ok: true }, "an id trimmed away may have been an entry: taken");
  const [live] = await mirror.messages("c-trim", "tara", 1);
  await d.nextEntries(1);
  assert.equal(d.entries[0].messageId, live);
  assert.deepEqual(gaps(d.events, acked), []);
  d.close();
});

test("a replay longer than GATEWAY_REPLAY_CAP is a resync (too_many); one of exactly the cap is sent", async () => {
  const { gateway, mirror } = await stack({ GATEWAY_REPLAY_CAP: "10" });
  const acked = await acknowledgedOnce(gateway, mirror, "uma", "c-cap");
  const ten = await mirror.messages("c-cap", "uma-friend", 10);
  let d = await Device.connect(gateway, { token: hs256(claims("uma")), deviceId: "uma-phone" });
  await d.nextEntries(10);
  assert.deepEqual(d.entries.map((e) => e.messageId), ten);
  assert.deepEqual(gaps(d.events, acked), []);
  const last = (await d.settled()).at(-1).id;
  d.close();
  await d.closed;
  await mirror.messages("c-cap", "uma-friend", 11);
  d = await Device.connect(gateway, { token: hs256(claims("uma")), deviceId: "uma-phone" });
  const [resync] = await d.nextResync();
  assert.equal(resync.code, "too_many", JSON.stringify(resync));
  assert.equal(d.entries.length, 0);
  assert.ok((await gateway.metric('gateway_resyncs_total{reason="too_many"}')) >= 1);
  assert.deepEqual(gaps(d.events, last), []);
  d.close();
});

test("acknowledgements survive a gateway restart", async () => {
  const { redis, gateway, mirror } = await stack();
  const acked = await acknowledgedOnce(gateway, mirror, "vic", "c-restart");
  const missed = await mirror.messages("c-restart", "vic-friend", 3);
  assert.deepEqual(await gateway.stop(), { code: 0, signal: null });
  const again = await Gateway.start(redis);
  stop.push(() => again.kill());
  const d = await Device.connect(again, { token: hs256(claims("vic")), deviceId: "vic-phone" });
  await d.nextEntries(3);
  assert.deepEqual(d.entries.map((e) => e.messageId), missed, "the new process replays from the stored ack");
  assert.deepEqual(gaps(d.events, acked), []);
  assert.equal(d.resyncs.length, 0);
  d.close();
});

test("Redis restarted mid-session: devices get resync, never a silent gap", async () => {
  const { redis, gateway, mirror } = await stack();
  const acked = await acknowledgedOnce(gateway, mirror, "wes", "c-redis");
  const live = await Device.connect(gateway, { token: hs256(claims("wes")), deviceId: "wes-phone" });
  await mirror.messages("c-redis", "wes-friend", 2);
  await live.nextEntries(2);
  await live.settled();
  await redis.restart(); // without persistence: every stream and ack is gone
  await until(async () => (await fetch(`${gateway.url}/healthz`)).status === 200, "healthz after the restart");
  await mirror.messages("c-redis", "wes-friend", 3);
  // the live device: told to resync (the reader lost its cursor, or the new stream's first
  // entry does not follow what it has); then everything after the resync, gap-free
  await live.nextResync();
  const [later] = await mirror.messages("c-redis", "wes", 1);
  await until(() => live.entries.some((e) => e.messageId === later), "the entry applied after the resync");
  assert.deepEqual(gaps(live.events, acked), [], JSON.stringify(live.events));
  live.close();
  // a device that comes back after the restart: its ack is gone, so it resyncs
  const back = await Device.connect(gateway, { token: hs256(claims("wes")), deviceId: "wes-tablet" });
  const [resync] = await back.nextResync();
  assert.equal(resync.code, "never_acknowledged");
  back.close();
});

test("two gateways on one Redis: a device moves between them and misses nothing; presence follows it", async () => {
  const { redis, gateway: a, mirror } = await stack();
  const b = await Gateway.start(redis);
  stop.push(() => b.kill());
  const stay = await Device.connect(a, { token: hs256(claims("xia")), deviceId: "xia-laptop" });
  await stay.nextResync();
  const acked = await acknowledgedOnce(a, mirror, "xia", "c-move");
  await stay.nextEntries(1);
  assert.equal(await redis.get("device:{xia-phone}:node"), null, "cleared when the phone left node A");
  assert.equal(await redis.get("device:{xia-laptop}:node"), `node-${a.port}`);
  const ttl = Number(await redis.cli("TTL", `gateway:node:{node-${a.port}}`));
  assert.ok(ttl > 0 && ttl <= 120, `node A's heartbeat has a TTL (${ttl})`);

  const missed = await mirror.messages("c-move", "xia-friend", 3);
  const moved = await Device.connect(b, { token: hs256(claims("xia")), deviceId: "xia-phone" });
  await moved.nextEntries(3);
  assert.deepEqual(moved.entries.map((e) => e.messageId), missed);
  assert.equal(await redis.get("device:{xia-phone}:node"), `node-${b.port}`);
  const both = await mirror.messages("c-move", "xia", 2);
  await moved.nextEntries(5);
  await stay.nextEntries(6);
  assert.deepEqual(moved.entries.slice(3).map((e) => e.messageId), both);
  assert.deepEqual(stay.entries.map((e) => e.messageId).slice(1), [...missed, ...both], "the other device, on node A, heard it all once");
  assert.deepEqual(gaps(moved.events, acked), []);
  assert.deepEqual(gaps(stay.events, undefined), []);
  moved.close();
  stay.close();
  await until(async () => (await redis.get("device:{xia-phone}:node")) === null, "presence cleared on disconnect");
});

test("SIGTERM: devices are told to reconnect elsewhere (bye shutdown), and the process exits", async () => {
  const { gateway } = await stack({ GATEWAY_SHUTDOWN_GRACE: "2s" });
  const devices = await Promise.all(["yan-1", "yan-2", "zed-1"].map((id) => Device.connect(gateway, { token: hs256(claims(id.split("-")[0])), deviceId: id })));
  await Promise.all(devices.map((d) => d.nextResync()));
  assert.deepEqual(await gateway.stop(), { code: 0, signal: null });
  for (const d of devices) {
    await d.closed;
    const bye = d.events.find((e) => e.kind === "bye");
    assert.equal(bye?.code, "shutdown", JSON.stringify(d.events));
    assert.equal(bye.reconnect, true);
  }
});
