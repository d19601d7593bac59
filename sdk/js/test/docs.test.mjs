// docs/sdk-api/ (npm run docs: typedoc + typedoc-plugin-markdown, from the types of
// src/) is committed; it must be what a fresh generation gives, so it cannot drift from
// the code. Warnings (an exported signature naming an undocumented type) are errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from './daemon.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const committed = fileURLToPath(new URL('../../../docs/sdk-api', import.meta.url));

function files(dir) {
  const out = [];
  const walk = (d) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, entry.name);
      if (entry.isDirectory()) walk(p);
      else out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

test('docs/sdk-api is the reference typedoc generates from the sources', () => {
  const out = tempDir('typedoc');
  try {
    const run = spawnSync(process.execPath, [join(root, 'node_modules/typedoc/bin/typedoc'), '--out', out], {
      cwd: root,
      encoding: 'utf8',
      timeout: 180_000,
    });
    assert.equal(run.status, 0, `typedoc failed:\n${run.stdout}\n${run.stderr}`);
    const fresh = files(out);
    assert.deepEqual(files(committed), fresh, 'file list differs: run npm run docs and commit docs/sdk-api');
    for (const name of fresh) {
      assert.equal(
        readFileSync(join(committed, name), 'utf8'),
        readFileSync(join(out, name), 'utf8'),
        `docs/sdk-api/${name} is stale: run npm run docs and commit it`,
      );
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
