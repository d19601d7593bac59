// The hybrid handshake against the real daemon: the full mode matrix, the PQ policies
// of both sides, tampered messages, and every close code a client can provoke.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Daemon } from './daemon.mjs';
import { WebSocket, closeCodeFor, nextEvent, tamperReceive, tamperSend } from './helpers.mjs';
import { ClientHandshake, connect, deviceIdOf, generateDeviceKey, getServerInfo } from '../dist/index.js';

const MATRIX = [
  ['XK', 1, false],
  ['XK', 1, true],
  ['XK', 2, true],
  ['IK', 1, false],
  ['IK', 1, true],
  ['IK', 2, true],
];

function rejectsWith(promise, code, closeCode) {
  return assert.rejects(promise, (error) => {
    assert.equal(error.name, 'CommuCatError', String(error));
    assert.equal(error.code, code, `${error.code}: ${error.message}`);
    if (closeCode !== undefined) assert.equal(error.closeCode, closeCode, error.message);
    return true;
  });
}

/** Message 1 for `info` with the SDK's own handshake code, `overrides` applied. */
function message1(info, overrides = {}) {
  const key = info.noise_keys.at(-1);
  const handshake = new ClientHandshake({
    pattern: 'XK',
    version: 1,
    pq: false,
    keyVersion: key.version,
    serverStatic: Buffer.from(key.public, 'hex'),
    serverKem: info.post_quantum.kem_public_hex ? Buffer.from(info.post_quantum.kem_public_hex, 'hex') : undefined,
    clientSecret: generateDeviceKey(),
    random: (n) => new Uint8Array(randomBytes(n)),
    ...overrides,
  });
  return handshake.message1;
}

describe('default daemon (PQ offered, not required)', () => {
  let d;
  before(async () => {
    d = await Daemon.start('[limits]\nconnect_rate_per_ip = 1000\nconnect_burst = 1000\n');
  });
  after(() => d?.dispose());

  for (const [pattern, version, pq] of MATRIX) {
    test(`${pattern} v${version} ${pq ? 'hybrid' : 'classical'} reaches a registered session`, async () => {
      const deviceKey = generateDeviceKey();
      const s = await connect(d.url, { WebSocket, pattern, version, pq, deviceKey, keepalive: false });
      try {
        assert.equal(s.pq, pq);
        assert.equal(s.pattern, pattern);
        assert.equal(s.version, version);
        assert.match(s.sessionId, /^[0-9a-f]{32}$/);
        assert.equal(s.deviceId, deviceIdOf(deviceKey));
        assert.ok((await s.ping()) >= 0);
        // Registered: another session sees it online (for IK only after our first message).
        const other = await connect(d.url, { WebSocket, keepalive: false });
        try {
          assert.equal(await other.lookup(s.deviceId), true);
        } finally {
          await other.close();
        }
      } finally {
        await s.close();
      }
    });
  }

  test('defaults: XK, version 2, hybrid', async () => {
    const s = await connect(d.url, { WebSocket, keepalive: false });
    assert.deepEqual([s.pattern, s.version, s.pq], ['XK', 2, true]);
    await s.close();
  });

  test('a tampered message 2 is refused by the client', async () => {
    for (const pattern of ['XK', 'IK']) {
      await rejectsWith(connect(d.url, { WebSocket: tamperReceive(0, 40), pattern, keepalive: false }), 'decrypt_failed');
    }
  });

  test('a tampered message 1 closes with 4401', async () => {
    // The last byte is in the Noise payload tag.
    await rejectsWith(connect(d.url, { WebSocket: tamperSend(0), keepalive: false }), 'decrypt_failed', 4401);
    await rejectsWith(connect(d.url, { WebSocket: tamperSend(0), pattern: 'IK', keepalive: false }), 'decrypt_failed', 4401);
  });

  test('a tampered header closes with 4401 (the header is in the prologue)', async () => {
    // Clear the PQ flag (byte 6) of a version 1 hybrid message 1: still a valid header,
    // but no longer the prologue the client authenticated.
    await rejectsWith(
      connect(d.url, { WebSocket: tamperSend(0, 6), version: 1, keepalive: false }),
      'decrypt_failed',
      4401,
    );
  });

  test('an unknown pattern byte closes with 4400', async () => {
    await rejectsWith(connect(d.url, { WebSocket: tamperSend(0, 1), keepalive: false }), 'malformed', 4400);
  });

  test('a tampered message 3 closes with 4401', async () => {
    await rejectsWith(connect(d.url, { WebSocket: tamperSend(1), pattern: 'XK', keepalive: false }), 'decrypt_failed', 4401);
  });

  test('a tampered first transport message (IK) closes with 4401', async () => {
    await rejectsWith(connect(d.url, { WebSocket: tamperSend(1), pattern: 'IK', keepalive: false }), 'decrypt_failed', 4401);
  });

  test('a bad header closes with 4400', async () => {
    const ws = `ws://${d.http}/api/connect`;
    assert.equal(await closeCodeFor(ws, [Uint8Array.of(1, 1, 0)]), 4400);
    assert.equal(await closeCodeFor(ws, [Uint8Array.of(9, 1, 0, 0, 0, 1, 0)]), 4400);
    assert.equal(await closeCodeFor(ws, ['text frame']), 4400);
  });

  test('an unknown key version closes with 4404', async () => {
    const info = await getServerInfo(d.url);
    const code = await closeCodeFor(`ws://${d.http}/api/connect`, [message1(info, { keyVersion: 999 })]);
    assert.equal(code, 4404);
  });

  test('a newer session of the same device replaces the older one with 4409', async () => {
    const deviceKey = generateDeviceKey();
    const first = await connect(d.url, { WebSocket, deviceKey, keepalive: false, reconnect: true });
    const closed = nextEvent(first, 'close');
    const second = await connect(d.url, { WebSocket, deviceKey, keepalive: false });
    const event = await closed;
    assert.equal(event.code, 4409);
    // Reconnecting would only displace the newer session in turn.
    assert.equal(event.willReconnect, false);
    assert.equal(first.connected, false);
    assert.equal(await second.lookup(second.deviceId), true);
    await second.close();
  });

  test('requirePq on the client refuses a classical session', async () => {
    await assert.rejects(connect(d.url, { WebSocket, requirePq: true, pq: false }), { code: 'invalid_argument' });
    const s = await connect(d.url, { WebSocket, requirePq: true, keepalive: false });
    assert.equal(s.pq, true);
    await s.close();
  });
});

describe('daemon with [crypto] pq = false', () => {
  let d;
  before(async () => {
    d = await Daemon.start('[crypto]\npq = false\n');
  });
  after(() => d?.dispose());

  test('classical XK and IK work and are the default', async () => {
    for (const pattern of ['XK', 'IK']) {
      const s = await connect(d.url, { WebSocket, pattern, keepalive: false });
      assert.equal(s.pq, false);
      assert.equal(s.version, 1);
      assert.ok((await s.ping()) >= 0);
      await s.close();
    }
  });

  test('asking for PQ fails before connecting; a raw PQ message 1 closes with 4403', async () => {
    await rejectsWith(connect(d.url, { WebSocket, pq: true }), 'pq_unavailable');
    await rejectsWith(connect(d.url, { WebSocket, requirePq: true }), 'pq_required');
    const info = await getServerInfo(d.url);
    assert.equal(info.post_quantum.enabled, false);
    // A PQ header with a made-up payload: the policy check comes before the payload's.
    const fake = message1(info, { pq: false });
    fake[6] = 1;
    assert.equal(await closeCodeFor(`ws://${d.http}/api/connect`, [fake]), 4403);
  });
});

describe('daemon with [crypto] require_pq = true', () => {
  let d;
  before(async () => {
    d = await Daemon.start('[crypto]\nrequire_pq = true\n');
  });
  after(() => d?.dispose());

  test('a classical handshake is refused with 4403, a hybrid one works', async () => {
    for (const pattern of ['XK', 'IK']) {
      await rejectsWith(connect(d.url, { WebSocket, pattern, pq: false }), 'policy', 4403);
      const s = await connect(d.url, { WebSocket, pattern, keepalive: false });
      assert.equal(s.pq, true);
      await s.close();
    }
  });
});

describe('a full server', () => {
  let d;
  before(async () => {
    d = await Daemon.start('[limits]\nmax_sessions = 1\n');
  });
  after(() => d?.dispose());

  test('a connection over the limit closes with 4429', async () => {
    const first = await connect(d.url, { WebSocket, keepalive: false });
    await assert.rejects(connect(d.url, { WebSocket, keepalive: false }), (e) => {
      assert.equal(e.code, 'server_full');
      assert.equal(e.closeCode, 4429);
      return true;
    });
    await first.close();
  });
});

describe('a refused upgrade', () => {
  let d;
  before(async () => {
    d = await Daemon.start('[limits]\nconnect_rate_per_ip = 1\nconnect_burst = 1\n');
  });
  after(() => d?.dispose());

  test('HTTP 429 on the upgrade is a websocket error, not a crash', async () => {
    const first = await connect(d.url, { WebSocket, keepalive: false });
    await assert.rejects(connect(d.url, { WebSocket, keepalive: false }), { code: 'websocket', status: 429 });
    await first.close();
  });
});

describe('idle sessions', () => {
  let d;
  before(async () => {
    d = await Daemon.start('[session]\nttl_seconds = 2\nkeepalive_interval = 1\n');
  });
  after(() => d?.dispose());

  test('without keepalives the server closes with 4408; with them the session lives', async () => {
    const alive = await connect(d.url, { WebSocket });
    const idle = await connect(d.url, { WebSocket, keepalive: false });
    assert.equal(alive.keepaliveInterval, 1);
    assert.equal(alive.ttlSeconds, 2);
    const keepalives = [];
    alive.on('keepalive', (e) => keepalives.push(e.rttMs));
    const event = await nextEvent(idle, 'close', 10_000);
    assert.equal(event.code, 4408);
    assert.equal(event.willReconnect, false);
    await new Promise((r) => setTimeout(r, 2_500));
    assert.equal(alive.connected, true);
    assert.ok(keepalives.length >= 3, `keepalives: ${keepalives.length}`);
    assert.equal(await alive.lookup(alive.deviceId), true);
    await alive.close();
  });
});
