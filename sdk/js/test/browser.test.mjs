// The demo page (/demo/, served by the real daemon) in headless Chromium: two pages get
// device ids, one connects to the other with connectPeer over the post-quantum session,
// and they exchange a message and a 1 MiB file whose SHA-256, computed by the receiving
// page over the bytes it got, must equal the one computed here over the file sent. Three
// paths: a direct data channel, TURN only through a real coturn with assist's
// credentials (the selected pair must be relay/relay), and with ICE made to fail, the
// daemon's relay fallback.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Daemon, tempDir } from './daemon.mjs';
import { Coturn } from './coturn.mjs';
import { launchChromium } from './chromium.mjs';

const WAIT_MS = 30_000;
const FILE_WAIT_MS = 60_000;

/** Opens /demo/ with `query` and waits for its session; page errors are kept. */
async function openDemo(browser, url, query) {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    // The browser's own request for /favicon.ico (404) is not the page's error.
    if (m.type() === 'error' && !m.location()?.url?.endsWith('/favicon.ico')) errors.push(m.text());
  });
  page.errors = errors;
  await page.goto(`${url}/demo/${query}`, { timeout: WAIT_MS });
  await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT_MS }).catch(async (e) => {
    const status = await page.$eval('#status', (el) => el.textContent);
    throw new Error(`demo did not connect (${status}); page errors: ${errors.join(' | ')}`, { cause: e });
  });
  return page;
}

async function state(page) {
  return page.evaluate(() => ({
    path: document.getElementById('path').dataset,
    log: [...document.querySelectorAll('#log li')].map((li) => `${li.dataset.from}/${li.dataset.kind}: ${li.textContent}`),
  }));
}

/** Page `b` connects to page `a`; both must reach `path`. */
async function pair(browser, url, query, path) {
  const a = await openDemo(browser, url, query);
  const b = await openDemo(browser, url, query);
  const aId = await a.$eval('#device-id', (el) => el.textContent);
  const bId = await b.$eval('#device-id', (el) => el.textContent);
  assert.match(aId, /^[0-9a-f]{64}$/);
  assert.notEqual(aId, bId);
  for (const page of [a, b]) {
    assert.equal(await page.$eval('#pq', (el) => el.dataset.pq), 'true');
  }
  // Input goes to the tab in front (a background tab is not rendered, and a click waits
  // for its layout), as a user would switch tabs.
  await b.bringToFront();
  await b.type('#peer-id', aId);
  await b.click('#peer-connect');
  for (const page of [a, b]) {
    await page.waitForSelector(`#path[data-path="${path}"]`, { timeout: WAIT_MS }).catch(async (e) => {
      throw new Error(`no ${path} path: ${JSON.stringify(await state(page))} ${page.errors.join(' | ')}`, { cause: e });
    });
  }
  // The answering page learned the caller's id from its signal.
  assert.equal(await a.$eval('#peer-id', (el) => el.value), bId);
  return { a, b };
}

/** A message from `a` to `b`, and a 1 MiB file from `b` to `a`, verified by content. */
async function exchange({ a, b }, dir) {
  await a.bringToFront();
  await a.type('#message', 'hello over the PQ-signaled channel ✓');
  await a.click('#send');
  const text = await b.waitForSelector('#log li[data-kind="text"][data-from="peer"]', { timeout: WAIT_MS });
  assert.equal(await text.evaluate((el) => el.textContent), 'hello over the PQ-signaled channel ✓');

  const bytes = randomBytes(1 << 20);
  const path = join(dir, 'one-mebibyte.bin');
  writeFileSync(path, bytes);
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  await b.bringToFront();
  const input = await b.$('#file');
  await input.uploadFile(path);
  const entry = await a
    .waitForSelector('#log li[data-kind="file"][data-from="peer"][data-verified]', { timeout: FILE_WAIT_MS })
    .catch(async (e) => {
      throw new Error(`file not received: ${JSON.stringify(await state(a))}`, { cause: e });
    });
  const got = await entry.evaluate((el) => ({ ...el.dataset }));
  assert.equal(got.verified, 'true', JSON.stringify(got));
  assert.equal(got.name, 'one-mebibyte.bin');
  assert.equal(got.received, String(bytes.length));
  assert.equal(got.sha256, sha256);
  // The sender shows the same digest for what it sent.
  await b.waitForSelector('#log li[data-kind="file"][data-from="me"][data-sent="true"]', { timeout: WAIT_MS });
  assert.equal(await b.$eval('#log li[data-kind="file"][data-from="me"]', (el) => el.dataset.sha256), sha256);
  for (const page of [a, b]) assert.deepEqual(page.errors, []);
}

describe('demo page in headless Chromium', () => {
  let d;
  let chromium;
  let dir;
  before(async () => {
    dir = tempDir('browser');
    d = await Daemon.start('');
    chromium = await launchChromium();
  });
  after(async () => {
    await chromium?.close();
    await d?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  test('two pages: a message and a 1 MiB file over a WebRTC data channel', async () => {
    const pages = await pair(chromium.browser, d.url, '', 'p2p');
    try {
      for (const page of [pages.a, pages.b]) {
        const local = await page.$eval('#path', (el) => el.dataset.local);
        assert.ok(['host', 'srflx', 'prflx'].includes(local), `local candidate ${local}`);
      }
      await exchange(pages, dir);
    } finally {
      await pages.a.close();
      await pages.b.close();
    }
  });

  test('with ICE made to fail, the daemon relay fallback delivers the message and the file', async () => {
    const pages = await pair(chromium.browser, d.url, '?fail_ice=1&connect_timeout_ms=2000', 'relay');
    try {
      assert.match(await pages.a.$eval('#path', (el) => el.textContent), /daemon relay fallback/);
      await exchange(pages, dir);
    } finally {
      await pages.a.close();
      await pages.b.close();
    }
  });

  test('indexedDbKeyStore keeps the device id across page loads', async () => {
    const page = await chromium.browser.newPage();
    const idWith = (name) =>
      page.evaluate(async (name) => {
        const sdk = await import('/demo/commucat-sdk.min.js');
        const session = await sdk.connect(location.origin, { deviceKey: sdk.indexedDbKeyStore(name), keepalive: false });
        const id = session.deviceId;
        await session.close();
        return id;
      }, name);
    try {
      await page.goto(`${d.url}/demo/`, { timeout: WAIT_MS });
      const first = await idWith('commucat-test');
      assert.match(first, /^[0-9a-f]{64}$/);
      await page.reload({ timeout: WAIT_MS });
      assert.equal(await idWith('commucat-test'), first);
      assert.notEqual(await idWith('commucat-other'), first);
    } finally {
      await page.close();
    }
  });

  test('the page refuses unknown options', async () => {
    const page = await chromium.browser.newPage();
    try {
      await page.goto(`${d.url}/demo/?policy=sometimes`, { timeout: WAIT_MS });
      await page.waitForSelector('#status[data-state="error"]', { timeout: WAIT_MS });
      assert.match(await page.$eval('#status', (el) => el.textContent), /policy: all or relay/);
    } finally {
      await page.close();
    }
  });
});

describe('demo page against a daemon with [auth] required, in headless Chromium', () => {
  // Characters a query parser would change (`+` to a space) or split on.
  const TOKEN = `${randomBytes(24).toString('hex')}+&%=/`;
  let d;
  let chromium;
  before(async () => {
    d = await Daemon.start(`[auth]\nrequired = true\ntokens = ["${TOKEN}"]\n`);
    chromium = await launchChromium();
  });
  after(async () => {
    await chromium?.close();
    await d?.dispose();
  });

  test('a token in the fragment opens the session and fetches assist with it', async () => {
    const page = await openDemo(chromium.browser, d.url, `#access_token=${encodeURIComponent(TOKEN)}`);
    try {
      assert.match(await page.$eval('#device-id', (el) => el.textContent), /^[0-9a-f]{64}$/);
      // Taken out of the address (and the history entry) once read.
      assert.equal(await page.evaluate(() => location.href), `${d.url}/demo/`);
      assert.equal(await page.$eval('#token-connect', (el) => el.disabled), true);
      assert.deepEqual(page.errors, []);
    } finally {
      await page.close();
    }
  });

  test('without a token the page says so, and a token typed in its field connects', async () => {
    const page = await chromium.browser.newPage();
    try {
      await page.goto(`${d.url}/demo/`, { timeout: WAIT_MS });
      await page.waitForSelector('#status[data-state="error"]', { timeout: WAIT_MS });
      assert.match(await page.$eval('#status', (el) => el.textContent), /requires an access token/);
      await page.type('#access-token', 'not-the-token-but-long-enough-to-try');
      await page.click('#token-connect');
      await page.waitForSelector('#status[data-state="error"]', { timeout: WAIT_MS });
      assert.equal(await page.$eval('#token-connect', (el) => el.disabled), false);
      await page.$eval('#access-token', (el) => {
        el.value = '';
      });
      await page.type('#access-token', TOKEN);
      await page.click('#token-connect');
      await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT_MS });
      assert.match(await page.$eval('#device-id', (el) => el.textContent), /^[0-9a-f]{64}$/);
    } finally {
      await page.close();
    }
  });

  test('a token in the query is refused: the page request would carry it', async () => {
    const page = await chromium.browser.newPage();
    try {
      await page.goto(`${d.url}/demo/?access_token=${encodeURIComponent(TOKEN)}`, { timeout: WAIT_MS });
      await page.waitForSelector('#status[data-state="error"]', { timeout: WAIT_MS });
      assert.match(await page.$eval('#status', (el) => el.textContent), /goes in the fragment/);
      assert.equal(await page.$eval('#token-connect', (el) => el.disabled), true);
    } finally {
      await page.close();
    }
  });
});

describe('demo page through TURN (coturn) in headless Chromium', () => {
  let coturn;
  let d;
  let chromium;
  let dir;
  before(async () => {
    dir = tempDir('browser-turn');
    const secret = 'sdk-browser-turn-secret';
    coturn = await Coturn.start(secret);
    d = await Daemon.start(`[[ice.turn]]\nurls = ["turn:127.0.0.1:${coturn.port}?transport=udp"]\nsecret = "${secret}"\n`);
    chromium = await launchChromium();
  });
  after(async () => {
    await chromium?.close();
    await d?.dispose();
    await coturn?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("?policy=relay: the selected pair is relay ↔ relay, with assist's TURN credentials", async () => {
    const pages = await pair(chromium.browser, d.url, '?policy=relay', 'p2p');
    try {
      for (const page of [pages.a, pages.b]) {
        const { local, remote } = await page.$eval('#path', (el) => ({ ...el.dataset }));
        assert.equal(local, 'relay');
        assert.equal(remote, 'relay');
      }
      await exchange(pages, dir);
    } finally {
      await pages.a.close();
      await pages.b.close();
    }
  });
});
