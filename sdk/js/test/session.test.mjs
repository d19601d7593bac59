// Session messages between two JS clients through the real daemon, the ratchet past
// 4096 messages, certificates, persistent device keys and reconnect after a restart.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Daemon, freePort, tempDir } from './daemon.mjs';
import { WebSocket, nextEvent, sleep } from './helpers.mjs';
import { connect, deviceIdOf, getServerInfo } from '../dist/index.js';
import { fileKeyStore } from '../dist/keystore-node.js';

const OFFLINE = 'ab'.repeat(32);

describe('two JS sessions', () => {
  let d;
  let a;
  let b;
  before(async () => {
    d = await Daemon.start('');
    a = await connect(d.url, { WebSocket, keepalive: false });
    b = await connect(d.url, { WebSocket, pattern: 'IK', keepalive: false });
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await d?.dispose();
  });

  test('signal carries JSON both ways', async () => {
    const atB = nextEvent(b, 'signal');
    a.signal(b.deviceId, { kind: 'offer', sdp: 'v=0\r\n', n: [1, 2.5, null] });
    assert.deepEqual(await atB, { from: a.deviceId, body: { kind: 'offer', n: [1, 2.5, null], sdp: 'v=0\r\n' } });
    const atA = nextEvent(a, 'signal');
    // Device ids are accepted in either case.
    b.signal(a.deviceId.toUpperCase(), 'hello');
    assert.deepEqual(await atA, { from: b.deviceId, body: 'hello' });
  });

  test('relay carries bytes', async () => {
    const data = new Uint8Array(16_384).map((_, i) => (i * 7) & 0xff);
    const atB = nextEvent(b, 'relay');
    a.relay(b.deviceId, data);
    const event = await atB;
    assert.equal(event.from, a.deviceId);
    assert.deepEqual(event.data, data);
  });

  test('oversized signal and relay are refused before sending', () => {
    assert.throws(() => a.relay(b.deviceId, new Uint8Array(16_385)), { code: 'too_large' });
    assert.throws(() => a.signal(b.deviceId, 'x'.repeat(16_400)), { code: 'too_large' });
    assert.throws(() => a.signal('not-a-device', 1), { code: 'invalid_argument' });
  });

  test('lookup reports presence', async () => {
    assert.equal(await a.lookup(b.deviceId), true);
    assert.equal(await a.lookup(OFFLINE), false);
  });

  test('a signal to an offline device yields a peer_offline error event', async () => {
    const error = nextEvent(a, 'error');
    a.signal(OFFLINE, 'anyone?');
    const e = await error;
    assert.equal(e.code, 'peer_offline');
    assert.equal(e.to, OFFLINE);
    // The session stays usable.
    assert.ok((await a.ping()) >= 0);
  });

  test('certify returns a certificate verified with the server identity key', async () => {
    // A signal first: certify must not take its answer for its own.
    a.signal(OFFLINE, 'x');
    const errors = [];
    const off = a.on('error', (e) => errors.push(e.code));
    const cert = await a.certify();
    off();
    assert.equal(cert.deviceId, a.deviceId);
    assert.match(cert.notBefore, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    assert.equal(Date.parse(cert.notAfter) - Date.parse(cert.notBefore), 24 * 3600 * 1000);
    assert.equal(cert.signatureHex.length, 3309 * 2);
    assert.deepEqual(errors, ['peer_offline']);
  });

  test('5000 pipelined pings: both directions ratchet past 4096 messages', async () => {
    const pings = [];
    for (let i = 0; i < 5000; i++) pings.push(b.ping());
    const rtts = await Promise.all(pings);
    assert.equal(rtts.length, 5000);
    // Still in step after the ratchet: messages flow both ways.
    const atA = nextEvent(a, 'signal');
    b.signal(a.deviceId, { after: 'ratchet' });
    assert.deepEqual((await atA).body, { after: 'ratchet' });
    assert.equal(await b.lookup(a.deviceId), true);
  });

  test('a closed session is offline at once', async () => {
    const c = await connect(d.url, { WebSocket, keepalive: false });
    assert.equal(await a.lookup(c.deviceId), true);
    const closed = nextEvent(c, 'close');
    await c.close();
    assert.deepEqual(await closed, { code: 1000, reason: 'closed by the client', willReconnect: false });
    assert.equal(await a.lookup(c.deviceId), false);
    assert.throws(() => c.signal(a.deviceId, 1), { code: 'not_connected' });
    await assert.rejects(c.ping(), { code: 'not_connected' });
  });

  test('assist on connect', async () => {
    const c = await connect(d.url, { WebSocket, keepalive: false, assist: true });
    assert.ok(Array.isArray(c.assist.ice.ice_servers));
    assert.equal(c.assist.ice.ice_servers[0].urls[0].startsWith('stun:'), true);
    await c.close();
  });
});

describe('device keys', () => {
  let d;
  let dir;
  before(async () => {
    d = await Daemon.start('');
    dir = tempDir('keys');
  });
  after(async () => {
    await d?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a file key store creates the key once (mode 0600) and keeps the device id', async () => {
    const path = join(dir, 'device.key');
    const first = await connect(d.url, { WebSocket, keepalive: false, deviceKey: fileKeyStore(path) });
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const text = readFileSync(path, 'utf8').trim();
    assert.match(text, /^[0-9a-f]{64}$/);
    assert.equal(first.deviceId, deviceIdOf(new Uint8Array(Buffer.from(text, 'hex'))));
    await first.close();
    const again = await connect(d.url, { WebSocket, keepalive: false, deviceKey: fileKeyStore(path) });
    assert.equal(again.deviceId, first.deviceId);
    await again.close();
  });

  test('ephemeral keys differ per connect; bad keys are refused', async () => {
    const x = await connect(d.url, { WebSocket, keepalive: false, deviceKey: 'ephemeral' });
    const y = await connect(d.url, { WebSocket, keepalive: false });
    assert.notEqual(x.deviceId, y.deviceId);
    await x.close();
    await y.close();
    await assert.rejects(connect(d.url, { WebSocket, deviceKey: new Uint8Array(31) }), { code: 'invalid_argument' });
  });
});

describe('reconnect', () => {
  test('after the daemon restarts on the same port and state dir', async () => {
    const dir = tempDir('restart');
    const bind = `127.0.0.1:${await freePort()}`;
    let d = await Daemon.start('', { dir, bind });
    const info = await getServerInfo(d.url);
    const pin = info.device_ca_public;
    const peer = await connect(d.url, { WebSocket, keepalive: false });
    const s = await connect(d.url, {
      WebSocket,
      serverIdentity: pin,
      reconnect: { initialDelayMs: 100, maxDelayMs: 1_000 },
      pattern: 'IK',
    });
    try {
      const firstSession = s.sessionId;
      const closed = nextEvent(s, 'close');
      const reconnected = nextEvent(s, 'reconnect', 30_000);
      await d.stop();
      const event = await closed;
      assert.equal(event.code, 1001);
      assert.equal(event.willReconnect, true);
      await sleep(300);
      d = await Daemon.start('', { dir, bind });
      const r = await reconnected;
      assert.notEqual(r.sessionId, firstSession);
      assert.equal(s.sessionId, r.sessionId);
      assert.equal(s.connected, true);
      // Same state dir: same identity, so the pin still holds; the IK session is registered.
      const other = await connect(d.url, { WebSocket, keepalive: false });
      assert.equal(await other.lookup(s.deviceId), true);
      const got = nextEvent(s, 'signal');
      other.signal(s.deviceId, 'welcome back');
      assert.equal((await got).body, 'welcome back');
      await other.close();
    } finally {
      await s.close();
      await peer.close();
      await d.dispose();
    }
  });
});

describe('access tokens', () => {
  let d;
  const token = 'sdk-test-token-0123456789';
  before(async () => {
    d = await Daemon.start(`[auth]\nrequired = true\ntokens = ["${token}"]\n`);
  });
  after(() => d?.dispose());

  test('with [auth] required, connect and assist need the token', async () => {
    await assert.rejects(connect(d.url, { WebSocket, keepalive: false }), { code: 'websocket', status: 401 });
    await assert.rejects(connect(d.url, { WebSocket, keepalive: false, assist: true, accessToken: 'wrong-token-0123456789' }), {
      code: 'websocket',
      status: 401,
    });
    const s = await connect(d.url, { WebSocket, keepalive: false, assist: true, accessToken: token });
    assert.ok(s.assist.ice.ice_servers.length >= 1);
    assert.ok((await s.ping()) >= 0);
    await s.close();
  });
});

describe('liveness and refresh', () => {
  test('assist is refreshed at half of its credential lifetime', async () => {
    const d = await Daemon.start('[ice]\ncredential_ttl = 2\n');
    const s = await connect(d.url, { WebSocket, keepalive: false, assist: true });
    try {
      const first = s.assist.ice.username_fragment;
      const started = Date.now();
      const fresh = await nextEvent(s, 'assist', 5_000);
      const elapsed = Date.now() - started;
      assert.ok(elapsed >= 700 && elapsed <= 3_000, `refreshed after ${elapsed} ms`);
      assert.notEqual(fresh.ice.username_fragment, first);
      assert.equal(s.assist, fresh);
    } finally {
      await s.close();
      await d.dispose();
    }
  });

  test('connect is bounded by timeoutMs when the server does not answer', async () => {
    const d = await Daemon.start('');
    try {
      const info = await getServerInfo(d.url);
      d.child.kill('SIGSTOP');
      const started = Date.now();
      await assert.rejects(connect(d.url, { WebSocket, timeoutMs: 1_000 }), { code: 'timeout' });
      // With the document supplied by a fetch that answers at once, the handshake itself times out.
      const fetchInfo = async () => new Response(JSON.stringify(info), { status: 200 });
      await assert.rejects(connect(d.url, { WebSocket, timeoutMs: 1_000, fetch: fetchInfo }), { code: 'timeout' });
      assert.ok(Date.now() - started < 5_000, `took ${Date.now() - started} ms`);
    } finally {
      d.child.kill('SIGCONT');
      await d.dispose();
    }
  });

  test('a server that stops answering is detected by the keepalive, and the session reconnects', async () => {
    const d = await Daemon.start('[session]\nttl_seconds = 30\nkeepalive_interval = 1\n');
    const s = await connect(d.url, {
      WebSocket,
      timeoutMs: 2_000,
      reconnect: { initialDelayMs: 100, maxDelayMs: 500 },
    });
    try {
      const first = s.sessionId;
      const closed = nextEvent(s, 'close', 10_000);
      const reconnected = nextEvent(s, 'reconnect', 30_000);
      // Frozen, not dead: the TCP connection stays open, only the answers stop.
      d.child.kill('SIGSTOP');
      const event = await closed;
      assert.equal(event.code, 4408);
      assert.equal(event.reason, 'keepalive timeout');
      assert.equal(event.willReconnect, true);
      d.child.kill('SIGCONT');
      const r = await reconnected;
      assert.notEqual(r.sessionId, first);
      assert.ok((await s.ping()) >= 0);
    } finally {
      d.child.kill('SIGCONT');
      await s.close();
      await d.dispose();
    }
  });
});
