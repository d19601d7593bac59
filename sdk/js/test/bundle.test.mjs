// The browser bundle (npm run bundle): built for the browser platform, so a Node-only
// import in the core would have failed the build; small enough (issue 11: ≤ 120 KB
// minified and gzipped); exporting the public API; and the copy the demo page embeds
// is the same bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const path = new URL('../dist/commucat-sdk.min.js', import.meta.url);

test('the minified bundle is at most 120 KB gzipped and carries no Node imports', () => {
  const bundle = readFileSync(path);
  const gzipped = gzipSync(bundle, { level: 9 }).length;
  assert.ok(gzipped <= 120 * 1024, `bundle is ${gzipped} bytes gzipped`);
  assert.doesNotMatch(bundle.toString('utf8'), /from\s*["']node:|require\(["']node:/);
});

test('the bundle exports the public API', async () => {
  const sdk = await import(path.href);
  for (const name of ['connect', 'getServerInfo', 'getAssist', 'CommuCatError', 'Session', 'indexedDbKeyStore', 'deviceIdOf']) {
    assert.equal(typeof sdk[name], 'function', name);
  }
});

test('the demo embeds the SDK bundle byte for byte as built from the sources', () => {
  // `npm test` rebuilds dist/commucat-sdk.min.js from src/ first; the daemon embeds the
  // committed demo/commucat-sdk.min.js (npm run demo copies a fresh build there).
  const fresh = readFileSync(path);
  const committed = readFileSync(new URL('../demo/commucat-sdk.min.js', import.meta.url));
  assert.ok(fresh.equals(committed), 'demo/commucat-sdk.min.js is stale: run npm run demo and commit it');
});
