// A JS session and the Rust client (`commucat-cli chat`) talking through the real
// daemon: signal, relay and lookup both ways, and one device key file shared by both.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { CLI_BIN, Daemon, tempDir } from './daemon.mjs';
import { WebSocket, nextEvent } from './helpers.mjs';
import { connect, deviceIdOf, getServerInfo } from '../dist/index.js';
import { fileKeyStore } from '../dist/keystore-node.js';

const children = new Set();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

/** `commucat-cli chat`, with its stdout as lines and a bounded wait for a matching one. */
function chat(url, to, extra = []) {
  const child = spawn(CLI_BIN, ['chat', '--to', to, ...extra, url], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(child);
  const lines = [];
  const waiters = [];
  let stderr = '';
  let buffer = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk) => {
    buffer += chunk;
    let i;
    while ((i = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, i);
      buffer = buffer.slice(i + 1);
      lines.push(line);
      for (const w of [...waiters]) w();
    }
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const exited = new Promise((resolve) => child.once('exit', (code) => {
    children.delete(child);
    resolve(code);
  }));
  return {
    child,
    exited,
    lines,
    send: (line) => child.stdin.write(`${line}\n`),
    waitFor(predicate, ms = 10_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const line = lines.find(predicate);
          if (line === undefined) return false;
          clearTimeout(timer);
          waiters.splice(waiters.indexOf(check), 1);
          resolve(line);
          return true;
        };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(check), 1);
          reject(new Error(`no matching line in ${ms} ms; stdout: ${lines.join(' | ')}; stderr: ${stderr}`));
        }, ms);
        waiters.push(check);
        check();
      });
    },
    async stop() {
      child.stdin.end();
      let timer;
      const code = await Promise.race([exited, new Promise((r) => (timer = setTimeout(() => r('timeout'), 5_000)))]);
      clearTimeout(timer);
      if (code === 'timeout') {
        child.kill('SIGTERM');
        return exited;
      }
      return code;
    },
  };
}

describe('JS session and commucat-cli chat', () => {
  let d;
  let dir;
  before(async () => {
    d = await Daemon.start('');
    dir = tempDir('cli');
  });
  after(async () => {
    for (const child of children) child.kill('SIGTERM');
    await d?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const pattern of ['XK', 'IK']) {
    test(`signal, relay and lookup both ways (JS ${pattern}, Rust ${pattern === 'XK' ? 'IK' : 'XK'})`, async () => {
      const identity = (await getServerInfo(d.url)).device_ca_public;
      const js = await connect(d.url, { WebSocket, pattern, keepalive: false, serverIdentity: identity });
      const rust = chat(d.url, js.deviceId, ['--pattern', pattern === 'XK' ? 'ik' : 'xk', '--server-identity', identity]);
      try {
        const rustId = (await rust.waitFor((l) => l.startsWith('device_id='))).slice('device_id='.length);
        assert.match(rustId, /^[0-9a-f]{64}$/);
        // An IK client is registered after its first message; the CLI's library pings at once.
        assert.equal(await js.lookup(rustId), true);

        const signal = nextEvent(js, 'signal');
        rust.send('hello from rust');
        assert.deepEqual(await signal, { from: rustId, body: 'hello from rust' });

        const relay = nextEvent(js, 'relay');
        rust.send('/relay bytes from rust');
        const r = await relay;
        assert.equal(r.from, rustId);
        assert.equal(new TextDecoder().decode(r.data), 'bytes from rust');

        js.signal(rustId, 'hello from js');
        await rust.waitFor((l) => l === `${js.deviceId}: hello from js`);
        js.signal(rustId, { structured: [1, 2] });
        await rust.waitFor((l) => l === `${js.deviceId}: {"structured":[1,2]}`);
        js.relay(rustId, new TextEncoder().encode('bytes from js'));
        await rust.waitFor((l) => l === `${js.deviceId} [relay]: bytes from js`);

        rust.send('/lookup');
        await rust.waitFor((l) => l === `${js.deviceId} is online`);

        // The JS side's certificate verifies (the Rust client has no certify command).
        const cert = await js.certify();
        assert.equal(cert.deviceId, js.deviceId);

        assert.equal(await rust.stop(), 0);
        // The CLI closed its session: offline at once.
        assert.equal(await js.lookup(rustId), false);
      } finally {
        rust.child.kill('SIGTERM');
        await js.close();
      }
    });
  }

  test('one key file, one device: the CLI reads what the SDK wrote, and replaces its session (4409)', async () => {
    const path = join(dir, 'shared.key');
    const js = await connect(d.url, { WebSocket, keepalive: false, deviceKey: fileKeyStore(path) });
    const secret = new Uint8Array(Buffer.from(readFileSync(path, 'utf8').trim(), 'hex'));
    assert.equal(js.deviceId, deviceIdOf(secret));
    const replaced = nextEvent(js, 'close');
    const rust = chat(d.url, 'ab'.repeat(32), ['--key-file', path]);
    try {
      const rustId = (await rust.waitFor((l) => l.startsWith('device_id='))).slice('device_id='.length);
      assert.equal(rustId, js.deviceId);
      assert.equal((await replaced).code, 4409);
      assert.equal(await rust.stop(), 0);
    } finally {
      rust.child.kill('SIGTERM');
      await js.close();
    }
  });
});
