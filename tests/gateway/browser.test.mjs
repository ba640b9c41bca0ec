// The demo page (docs/realtime.md, "The demo page") in a real browser: Debian's headless
// Chromium, driven by puppeteer-core, signs in as a test user, a message is applied with
// mirrorctl, and the page shows it. The screenshot is kept as an artifact:
// target/gateway-demo.png.

import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import puppeteer from "puppeteer-core";
import { Gateway, Mirror, Redis, root, tmpdir, until } from "./harness.mjs";

const chromium = process.env.CHROMIUM ?? "/usr/bin/chromium";
let redis, gateway, browser;
before(async () => {
  assert.ok(fs.existsSync(chromium), `${chromium} is missing: scripts/node-tools installs Debian's chromium`);
  redis = await Redis.start();
  gateway = await Gateway.start(redis, { GATEWAY_DEMO: "on" });
  browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    userDataDir: tmpdir(),
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});
after(async () => {
  await browser?.close();
  await gateway?.kill();
  await redis?.stop();
});

test("the demo page shows a message applied with mirrorctl, live", async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${gateway.url}/demo`);
  await page.$eval("#user", (el) => (el.value = "bob"));
  await page.click("#connect button");
  await page.waitForFunction(() => document.querySelector("#status").textContent === "connected as bob");
  await page.waitForFunction(() => document.querySelector("#events").textContent.includes("resync"));

  const mirror = new Mirror(redis);
  await mirror.apply([mirror.conversation("c-demo", ["alice", "bob"])]);
  const [id] = await mirror.messages("c-demo", "alice", 1);
  await page.waitForFunction((id) => document.querySelector("#events").textContent.includes(id), {}, id);
  const shown = await page.$eval("#events", (el) => el.textContent);
  assert.match(shown, new RegExp(`entry: \\d+-\\d+ message.created ${id} `));
  assert.ok(!shown.includes("ack refused"), shown);
  assert.deepEqual(errors, []);
  // the page acknowledged the entry: the device's lastSeen is the entry's id
  const entryId = shown.match(/entry: (\d+-\d+)/)[1];
  // (its acknowledgement is on its way when the entry shows)
  await until(async () => (await redis.get("device:{demo-browser}:lastSeen")) === entryId, `lastSeen becomes ${entryId}`);
  const shot = path.join(process.env.CARGO_TARGET_DIR ?? path.join(root, "target"), "gateway-demo.png");
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(fs.statSync(shot).size > 1000, "the screenshot was written");
});
