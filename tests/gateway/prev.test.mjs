// The prev chain (docs/streams.md, "The entry"; docs/realtime.md, "Resync"): an entry that
// does not name as `prev` the last one the device has — live or in a replay — means entries
// are missing (lost by a failover, deleted), and the device is told to resync instead of
// being handed a history with a hole.

import assert from "node:assert/strict";
import { test } from "node:test";
import { Device, claims, gaps, hs256, stack } from "./harness.mjs";

const { redis, gateway, mirror } = await stack();

/** A device of `user`, live after taking one entry of conversation `c`. */
async function live(user, c) {
  const d = await Device.connect(gateway, { token: hs256(claims(user)), deviceId: `${user}-phone` });
  await d.nextResync();
  await mirror.apply([mirror.conversation(c, [user, `${user}-friend`])]);
  await mirror.messages(c, `${user}-friend`, 1);
  await d.nextEntries(1);
  await d.settled();
  return d;
}

/** An entry added behind the mirror's back, naming `prev` (a stand-in for one that was lost). */
const inject = (user, prev) =>
  redis.cli("XADD", `stream:user:{${user}}`, "*", "type", "message.created", "messageId", "m-injected", "conversationId", "c-x", "senderId", "s", "version", "2026-01-01T00:00:00.000000Z", "ts", "1", "prev", prev);

test("a live entry whose prev is not the last delivered id is a resync (hole), not an entry", async () => {
  const d = await live("hana", "c-live-hole");
  const injected = await inject("hana", "1-1");
  const [resync] = await d.nextResync(2);
  assert.equal(d.resyncs[1].code, "hole", JSON.stringify(d.events));
  assert.ok(!d.entries.some((e) => e.id === injected), "the entry after the hole is not delivered as if whole");
  const [after] = await mirror.messages("c-live-hole", "hana", 1);
  await d.nextEntries(2);
  assert.equal(d.entries[1].messageId, after);
  assert.deepEqual(gaps(d.events), [], JSON.stringify(d.events));
  assert.equal(resync.code, "never_acknowledged");
  d.close();
});

test("a replay with an entry missing in its middle is a resync (hole), not a partial replay", async () => {
  const d = await live("ines", "c-replay-hole");
  const acked = d.entries[0].id;
  d.close();
  await d.closed;
  await mirror.messages("c-replay-hole", "ines-friend", 3);
  const ids = await redis.ids("ines", acked);
  assert.equal(ids.length, 3);
  assert.equal(await redis.cli("XDEL", "stream:user:{ines}", ids[1]), "1");
  const back = await Device.connect(gateway, { token: hs256(claims("ines")), deviceId: "ines-phone" });
  const [resync] = await back.nextResync();
  assert.equal(resync.code, "hole", JSON.stringify(back.events));
  assert.equal(back.entries.length, 0, "nothing of a replay with a hole");
  assert.deepEqual(gaps(back.events, acked), []);
  back.close();
});

test("the first replayed entry must follow the device's last seen id (trimmed otherwise)", async () => {
  const d = await live("jo", "c-first-hole");
  const acked = d.entries[0].id;
  d.close();
  await d.closed;
  await mirror.messages("c-first-hole", "jo-friend", 2);
  const [first] = await redis.ids("jo", acked);
  assert.equal(await redis.cli("XDEL", "stream:user:{jo}", first), "1");
  const back = await Device.connect(gateway, { token: hs256(claims("jo")), deviceId: "jo-phone" });
  const [resync] = await back.nextResync();
  assert.equal(resync.code, "trimmed", JSON.stringify(back.events));
  assert.equal(back.entries.length, 0);
  back.close();
});
