// The handshake (docs/realtime.md, "Tokens"): a JWT in auth.token, verified with the
// configured key, issuer and audience checked, the user read from the token alone; every
// refusal a connect_error that names its reason without leaking the key, and counted; a
// token that expires while connected ends the connection with a reason to act on.

import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { AUDIENCE, Device, Gateway, Mirror, Redis, SECRET, claims, hs256, keyPair, signWith, tmpdir } from "./harness.mjs";

let redis, hs, jwks, rsa, ec, rogue;
before(async () => {
  redis = await Redis.start();
  rsa = keyPair("RS256", "rsa-1");
  ec = keyPair("ES256", "ec-1");
  rogue = keyPair("RS256", "rsa-1"); // the same kid, another key: a forgery
  const file = path.join(tmpdir(), "jwks.json");
  fs.writeFileSync(file, JSON.stringify({ keys: [rsa.jwk, ec.jwk] }));
  [hs, jwks] = await Promise.all([
    Gateway.start(redis, { GATEWAY_JWT_LEEWAY: "0s" }),
    Gateway.start(redis, { GATEWAY_JWT_HS256_SECRET: undefined, GATEWAY_JWT_JWKS: file, GATEWAY_JWT_LEEWAY: "0s" }),
  ]);
});
after(async () => {
  await Promise.all([hs?.kill(), jwks?.kill()]);
  await redis?.stop();
});

const now = () => Math.floor(Date.now() / 1000);
const refusedCount = (g, reason) => g.metric(`gateway_handshakes_refused_total{reason="${reason}"}`);

async function refused(gateway, token, reason, code, auth = {}) {
  const before = await refusedCount(gateway, code);
  const message = await Device.refusal(gateway, { token, deviceId: "d-auth", ...auth });
  assert.ok(message.startsWith(reason), `refused with "${reason}…", got: ${message}`);
  assert.ok(!message.includes(SECRET), "the message never holds the key");
  assert.equal(await refusedCount(gateway, code), before + 1, `counted under reason="${code}"`);
}

test("a valid HS256 token is accepted; the user is the token's sub", async () => {
  const d = await Device.connect(hs, { token: hs256(claims("u-ok")), deviceId: "d-ok" });
  await d.nextResync();
  assert.equal(await redis.get("device:{d-ok}:user"), "u-ok");
  d.close();
});

test("a forged, expired, wrong-audience, wrong-issuer or missing token is refused with its reason", async () => {
  await refused(hs, hs256(claims("u1"), "another-secret-of-at-least-32-bytes!!"), "bad signature", "bad_signature");
  await refused(hs, hs256(claims("u1", { exp: now() - 5 })), "expired", "expired");
  await refused(hs, hs256(claims("u1", { aud: "someone-else" })), "wrong audience", "wrong_audience");
  await refused(hs, hs256(claims("u1", { iss: "https://evil.test/" })), "wrong issuer", "wrong_issuer");
  await refused(hs, hs256(claims("u1", { nbf: now() + 600 })), "not yet valid", "not_yet_valid");
  await refused(hs, undefined, "missing token", "missing_token");
  await refused(hs, "not.a-jwt", "malformed token", "malformed_token");
  await refused(hs, hs256(claims("u1", { sub: undefined })), "missing claim", "missing_claim");
  await refused(hs, hs256(claims("u1")), "missing deviceId", "missing_device", { deviceId: undefined });
  // alg "none": no signature at all
  const unsigned = hs256(claims("u1")).split(".").slice(0, 2).join(".").replace(/^[^.]+/, Buffer.from('{"alg":"none"}').toString("base64url")) + ".";
  await refused(hs, unsigned, "malformed token", "malformed_token");
});

test("RS256 and ES256 tokens verify against a JWKS file; a forgery with a known kid does not", async () => {
  for (const pair of [rsa, ec]) {
    const d = await Device.connect(jwks, { token: signWith(pair, claims(`u-${pair.alg}`)), deviceId: `d-${pair.alg}` });
    await d.nextResync();
    d.close();
  }
  await refused(jwks, signWith(rogue, claims("u1")), "bad signature", "bad_signature");
  await refused(jwks, signWith(rsa, claims("u1"), { kid: "nobody" }), "unknown key", "unknown_key");
  await refused(jwks, signWith(rsa, claims("u1", { aud: `${AUDIENCE}-not` })), "wrong audience", "wrong_audience");
  // HS256 signed with the RSA public key as its secret: the classic algorithm confusion
  const pem = rsa.publicKey.export({ format: "pem", type: "spki" });
  await refused(jwks, hs256(claims("u1"), pem, { kid: "rsa-1" }), "wrong algorithm", "wrong_algorithm");
});

test("a token that expires while connected ends the connection with bye expired", async () => {
  const mirror = new Mirror(redis);
  const d = await Device.connect(hs, { token: hs256(claims("u-exp", { exp: now() + 2 })), deviceId: "d-exp" });
  await d.nextResync();
  await mirror.apply([mirror.conversation("c-exp", ["u-exp", "u-other"])]);
  await mirror.messages("c-exp", "u-other", 1);
  await d.nextEntries(1);
  assert.equal(await d.closed, "io server disconnect", "the server ended it");
  const bye = d.events.find((e) => e.kind === "bye");
  assert.equal(bye?.code, "expired", JSON.stringify(d.events));
  assert.equal(bye.reconnect, true);
  assert.match(bye.reason, /fresh token/);
});
