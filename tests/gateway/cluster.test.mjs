// Redis Cluster (docs/realtime.md, "Redis Cluster"): the mirror adds each user's entries on
// the master of the user's slot (one pipeline per slot), and the gateway follows users on
// every master — keyspace notifications say which streams grew, one XREAD per slot reads
// them — with the same promises as on one Redis: once, in order, replay then live, no gap.

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { Device, Gateway, Mirror, RedisCluster, claims, gaps, hs256 } from "./harness.mjs";

const stop = [];
after(async () => {
  for (const s of stop.reverse()) await s();
});

/** A private cluster, a gateway on it and a mirror announcing to it, stopped at the end. */
async function clusterStack() {
  const cluster = await RedisCluster.start();
  stop.push(() => cluster.stop());
  const gateway = await Gateway.start(cluster);
  stop.push(() => gateway.kill());
  return { cluster, gateway, mirror: new Mirror(cluster) };
}

/** A connected device of each of `users`, past its first resync. */
async function connectAll(gateway, users, suffix) {
  const devices = {};
  for (const user of users) {
    devices[user] = await Device.connect(gateway, { token: hs256(claims(user)), deviceId: `${user}-${suffix}` });
    await devices[user].nextResync();
  }
  return devices;
}

const users = ["ann", "ben", "cal", "dot", "eve", "fay", "gus", "hal"];

test("Redis Cluster: every user's devices hear their stream once and in order, on whichever master it lives", async () => {
  const { cluster, gateway, mirror } = await clusterStack();
  const devices = await connectAll(gateway, users, "phone");
  // Four conversations of two, then messages in all of them in one apply: one page of the
  // outbox spread over every master.
  const pairs = [["ann", "ben"], ["cal", "dot"], ["eve", "fay"], ["gus", "hal"]];
  await mirror.apply(pairs.map(([a, b]) => mirror.conversation(`c-${a}`, [a, b])));
  const batch = [];
  for (let round = 0; round < 5; round++) for (const [a, b] of pairs) batch.push(mirror.message(`c-${a}`, round % 2 ? b : a));
  const summary = await mirror.apply(batch);
  assert.deepEqual([summary.streams.delivered, summary.streams.error], [40, null], `each message added to two streams: ${JSON.stringify(summary.streams)}`);

  const masters = new Set();
  for (const user of users) masters.add(await cluster.nodeOf(`stream:user:{${user}}`));
  assert.ok(masters.size >= 2, `the users' streams live on ${masters.size} masters`);
  for (const [a, b] of pairs) {
    const sent = batch.filter((e) => e.payload.conversationId === `c-${a}`).map((e) => e.payload.messageId);
    for (const user of [a, b]) {
      const d = devices[user];
      await d.nextEntries(5, `${user}'s 5 entries`);
      assert.deepEqual(d.entries.map((e) => e.messageId), sent, `${user} heard their conversation, once, in order`);
      assert.deepEqual(gaps(d.events, undefined), [], `${user}: no gap, no duplicate`);
    }
  }
  // A device away while 5 more are applied replays exactly those, then goes live.
  const away = devices.cal;
  await away.settled();
  away.close();
  await away.closed;
  const missed = await mirror.messages("c-cal", "dot", 5);
  const back = await Device.connect(gateway, { token: hs256(claims("cal")), deviceId: "cal-phone" });
  await back.nextEntries(5);
  assert.deepEqual(back.entries.map((e) => e.messageId), missed, "the replay is exactly what was missed");
  const live = await mirror.messages("c-cal", "cal", 2);
  await back.nextEntries(7);
  assert.deepEqual(back.entries.slice(5).map((e) => e.messageId), live, "then live");
  assert.deepEqual(gaps(back.events, away.entries.at(-1).id), []);
  assert.equal(await cluster.get("device:{cal-phone}:lastSeen"), back.entries.at(-1).id, "acknowledged on the cluster");
  assert.equal(await cluster.get("device:{cal-phone}:node"), `node-${gateway.port}`);
  for (const d of [...Object.values(devices), back]) d.close();
});

test("Redis Cluster: a master restarted without its data → its users resync, the others miss nothing, and all go on live", async () => {
  const { cluster, gateway, mirror } = await clusterStack();
  await mirror.apply(users.map((u) => mirror.conversation(`r-${u}`, [u, `${u}-friend`])));
  await mirror.apply(users.map((u) => mirror.message(`r-${u}`, `${u}-friend`)));
  const devices = await connectAll(gateway, users, "tablet");
  const homes = {};
  for (const user of users) homes[user] = await cluster.nodeOf(`stream:user:{${user}}`);
  const victim = homes.ann;
  await cluster.restart(victim);
  const lost = users.filter((u) => homes[u] === victim);
  for (const user of lost) await devices[user].nextResync(2);
  const after = await mirror.messages("r-ann", "ann-friend", 1);
  const others = users.filter((u) => homes[u] !== victim);
  const theirs = {};
  for (const user of others) theirs[user] = await mirror.messages(`r-${user}`, `${user}-friend`, 1);
  await devices.ann.nextEntries(1);
  assert.deepEqual(devices.ann.entries.map((e) => e.messageId), after, "live again after the resync");
  for (const user of others) {
    await devices[user].nextEntries(1);
    assert.deepEqual(devices[user].entries.map((e) => e.messageId), theirs[user], `${user}, on a master that stayed, goes on`);
    assert.equal(devices[user].resyncs.length, 1, `${user} needed no resync`);
  }
  for (const user of users) assert.deepEqual(gaps(devices[user].events, undefined), [], `${user}: never a silent gap`);
  for (const d of Object.values(devices)) d.close();
});

test("Redis Cluster without keyspace notifications: the gateway refuses to start, and says what to set", async () => {
  const cluster = await RedisCluster.start({ notifications: "" });
  stop.push(() => cluster.stop());
  const error = await Gateway.start(cluster).then(
    (g) => (g.kill(), null),
    (e) => e.message,
  );
  assert.ok(error, "the gateway started on a cluster it cannot follow");
  assert.match(error, /notify-keyspace-events/);
  assert.match(error, /exited at start/);
});
