// Replay, then live, with no gap and no duplicate (docs/realtime.md, "Events"): each
// participant's devices hear each applied change once, in stream order, over WebSocket and
// HTTP long-polling alike; nobody else hears it; a device that was away gets exactly what
// it missed; a device can never be given another user's entries.

import assert from "node:assert/strict";
import { test } from "node:test";
import { Device, claims, gaps, hs256, stack } from "./harness.mjs";

const { redis, gateway, mirror } = await stack();

/** A connected device of `user` that has taken the first resync (it never acknowledged anything). */
async function fresh(user, deviceId, options = {}) {
  const d = await Device.connect(gateway, { token: hs256(claims(user)), deviceId, ...options });
  const [resync] = await d.nextResync();
  assert.equal(resync.code, "never_acknowledged", `a new device resyncs: ${JSON.stringify(resync)}`);
  await d.settled();
  return d;
}

test("each applied change arrives once at every device of each participant, and never at another user", async () => {
  await mirror.apply([mirror.conversation("c-ab", ["alice", "bob"]), mirror.conversation("c-carol", ["carol", "dave"])]);
  const alicePhone = await fresh("alice", "alice-phone");
  const aliceLaptop = await fresh("alice", "alice-laptop", { transports: ["polling"] });
  const bob = await fresh("bob", "bob-phone");
  const carol = await fresh("carol", "carol-phone");
  const starts = [alicePhone, aliceLaptop, bob].map((d) => d.resyncs[0].lastGeneratedId);

  const sent = await mirror.messages("c-ab", "alice", 3);
  sent.push(...(await mirror.messages("c-ab", "bob", 2)));
  // carol's own message arrives after every c-ab change was announced: when she has it,
  // anything of alice's and bob's that could reach her would have reached her too.
  const [mine] = await mirror.messages("c-carol", "dave", 1);

  for (const [i, d] of [alicePhone, aliceLaptop, bob].entries()) {
    await d.nextEntries(5);
    assert.deepEqual(d.entries.map((e) => e.messageId), sent, `device ${i} heard every change in order`);
    assert.deepEqual(gaps(d.events, undefined), [], `device ${i}: no gap, no duplicate`);
    assert.equal(d.entries[0].prev, starts[i], "the first live entry follows the id the resync resumed from");
    for (const e of d.entries) {
      assert.equal(e.type, "message.created");
      assert.equal(e.conversationId, "c-ab");
      assert.ok(e.version && e.ts && e.senderId, `every field of docs/streams.md: ${JSON.stringify(e)}`);
      assert.equal(e.body, undefined, "never a body");
    }
  }
  await carol.nextEntries(1);
  assert.deepEqual(carol.entries.map((e) => e.messageId), [mine], "carol hears her conversation only");
  for (const d of [alicePhone, aliceLaptop, bob, carol]) d.close();
});

test("a device away while 5 messages are applied replays exactly those 5 in order, then goes live", async () => {
  const first = await fresh("erin", "erin-phone");
  await mirror.apply([mirror.conversation("c-erin", ["erin", "frank"])]);
  const [seen] = await mirror.messages("c-erin", "frank", 1);
  await first.nextEntries(1);
  assert.equal(first.entries[0].messageId, seen);
  const acked = (await first.settled()).at(-1);
  assert.deepEqual(acked.reply, { ok: true });
  first.close();
  await first.closed;

  const missed = await mirror.messages("c-erin", "frank", 5);
  const back = await Device.connect(gateway, { token: hs256(claims("erin")), deviceId: "erin-phone" });
  await back.nextEntries(5);
  assert.deepEqual(back.entries.map((e) => e.messageId), missed, "exactly the 5 missed, in order");
  assert.equal(back.resyncs.length, 0, "a whole replay is no resync");
  assert.deepEqual(gaps(back.events, acked.id), [], "the replay starts right after the last acknowledged entry");
  const [live] = await mirror.messages("c-erin", "erin", 1);
  await back.nextEntries(6);
  assert.equal(back.entries[5].messageId, live);
  assert.deepEqual(gaps(back.events, acked.id), []);
  await back.settled();
  back.close();
});

test("an entry applied while the replay runs is delivered once, with no gap between replay and live", async () => {
  const d0 = await fresh("gina", "gina-phone");
  await mirror.apply([mirror.conversation("c-gina", ["gina", "hal"])]);
  await mirror.messages("c-gina", "hal", 1);
  await d0.nextEntries(1);
  const start = (await d0.settled()).at(-1).id;
  d0.close();
  await d0.closed;
  const before = await mirror.messages("c-gina", "hal", 300);
  // connect and apply at once: some of these land during the replay, some after it
  const connecting = Device.connect(gateway, { token: hs256(claims("gina")), deviceId: "gina-phone" });
  const during = await Promise.all([mirror.messages("c-gina", "hal", 20), mirror.messages("c-gina", "gina", 20)]);
  const d = await connecting;
  await d.nextEntries(340);
  await d.settled();
  assert.deepEqual(gaps(d.events, start), [], "every entry follows the one before it, none twice");
  assert.equal(d.resyncs.length, 0);
  const heard = new Set(d.entries.map((e) => e.messageId));
  for (const m of [...before, ...during.flat()]) assert.ok(heard.has(m), `${m} was delivered`);
  assert.equal(d.entries.length, 340);
  d.close();
});

test("a device that asks for another user's entries gets nothing of them", async () => {
  await mirror.apply([mirror.conversation("c-ivy", ["ivy", "jack"]), mirror.conversation("c-mallory", ["mallory", "trent"])]);
  const ivy = await fresh("ivy", "ivy-phone");
  await mirror.messages("c-ivy", "jack", 2);
  await ivy.nextEntries(2);
  await ivy.settled();
  const ivysId = ivy.entries[0].id;

  // mallory's valid token, with ivy's user id, device id and an id of ivy's stream in the handshake
  const mallory = await Device.connect(gateway, {
    token: hs256(claims("mallory")),
    deviceId: "ivy-phone",
    lastSeenId: ivysId,
    extraAuth: { userId: "ivy", sub: "ivy", user: "ivy" },
  });
  await mallory.nextResync();
  const refused = await mallory.ack(ivy.entries[1].id);
  const ivyMore = await mirror.messages("c-ivy", "jack", 3);
  const [own] = await mirror.messages("c-mallory", "trent", 1);
  await mallory.nextEntries(1);
  assert.deepEqual(mallory.entries.map((e) => e.messageId), [own], "mallory hears only her own stream");
  assert.ok(mallory.entries.every((e) => e.conversationId === "c-mallory"));
  assert.equal(refused.ok, false, `an id of ivy's stream is no entry of mallory's: ${JSON.stringify(refused)}`);
  mallory.close();

  // ivy's phone was taken over by another user: when it comes back it resyncs, with no gap
  await ivy.nextEntries(5);
  assert.deepEqual(ivy.entries.slice(2).map((e) => e.messageId), ivyMore);
  ivy.close();
  await ivy.closed;
  const back = await Device.connect(gateway, { token: hs256(claims("ivy")), deviceId: "ivy-phone" });
  const [resync] = await back.nextResync();
  assert.equal(resync.code, "rebound", JSON.stringify(resync));
  back.close();
});

test("acknowledgements are checked: never backwards, never an id the stream did not have", async () => {
  await mirror.apply([mirror.conversation("c-kim", ["kim", "lou"])]);
  const d = await fresh("kim", "kim-phone", { autoAck: false });
  const ids = (await mirror.messages("c-kim", "lou", 3)) && (await d.nextEntries(3)).map((e) => e.id);
  assert.deepEqual(await d.ack(ids[2]), { ok: true });
  assert.deepEqual(await d.ack(ids[0]), { ok: true }, "an older id is accepted but does not move lastSeen back");
  assert.equal(await redis.get("device:{kim-phone}:lastSeen"), ids[2]);
  const [ms, seq] = ids[2].split("-").map(Number);
  // past the newest; "0-1" and `ms-1`-…: absent from a stream that never lost an entry
  for (const bad of [`${ms + 60000}-0`, `${ms}-${seq + 1}`, "0-1", `${ms - 1}-${seq + 7}`, "not-an-id", ""]) {
    const reply = await d.ack(bad);
    assert.equal(reply.ok, false, `${JSON.stringify(bad)} is refused`);
    assert.ok(reply.reason.length > 10, `with a reason: ${reply.reason}`);
  }
  assert.equal(await redis.get("device:{kim-phone}:lastSeen"), ids[2]);
  // a frame 40 times the gateway's WebSocket read buffer is read whole and answered
  const long = await d.ack(`${ms}-${"9".repeat(20000)}`);
  assert.equal(long.ok, false, "a 20,000-digit sequence is no entry id");
  assert.deepEqual(await d.ack(ids[2]), { ok: true }, "and the connection goes on");
  assert.ok((await gateway.metric('gateway_acks_total{result="refused"}')) >= 5);
  d.close();
});
