// getServerInfo's key bundle check (with and without a pin) and getAssist, against
// the real daemon; forged documents are served through a fetch that edits the answer.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ml_dsa65 } from '@noble/post-quantum/ml-dsa.js';
import { Daemon } from './daemon.mjs';
import { getAssist, getServerInfo, keyBundleText } from '../dist/index.js';

const hex = (b) => Buffer.from(b).toString('hex');

/** A fetch that passes `edit` the parsed server-info before the SDK sees it. */
function editingFetch(edit) {
  return async (url, init) => {
    const response = await fetch(url, init);
    const body = await response.json();
    edit(body);
    return new Response(JSON.stringify(body), { status: response.status, headers: response.headers });
  };
}

describe('server-info', () => {
  let d;
  let other;
  before(async () => {
    [d, other] = await Promise.all([Daemon.start(''), Daemon.start('[crypto]\npq = false\n')]);
  });
  after(async () => {
    await d?.dispose();
    await other?.dispose();
  });

  test('verifies, with and without the right pin', async () => {
    const info = await getServerInfo(d.url);
    assert.equal(info.post_quantum.enabled, true);
    assert.equal(info.noise_keys.length, 1);
    const pinned = await getServerInfo(d.url, { serverIdentity: info.device_ca_public.toUpperCase() });
    assert.equal(pinned.noise_public, info.noise_public);
  });

  test('the rebuilt bundle text is the documented one', async () => {
    const info = await getServerInfo(other.url);
    const k = info.noise_keys[0];
    assert.equal(
      keyBundleText(info),
      `commucat-keybundle-v1\ndomain=localhost\nnoise=${k.version},${k.public},${k.valid_after},${k.rotates_at},${k.expires_at}\nkem=`,
    );
    assert.equal(info.post_quantum.kem_public_hex, undefined);
  });

  test('a wrong pin is refused', async () => {
    const otherIdentity = (await getServerInfo(other.url)).device_ca_public;
    await assert.rejects(getServerInfo(d.url, { serverIdentity: otherIdentity }), { code: 'pin_mismatch' });
    await assert.rejects(getServerInfo(d.url, { serverIdentity: 'abcd' }), { code: 'invalid_argument' });
  });

  test('a tampered bundle is refused', async () => {
    const edits = [
      (b) => (b.noise_keys[0].public = 'ff'.repeat(32)),
      (b) => (b.noise_keys[0].expires_at = '2099-01-01T00:00:00Z'),
      (b) => (b.domain = 'evil.example'),
      (b) => (b.post_quantum.kem_public_hex = b.post_quantum.kem_public_hex.replace(/^../, '00')),
      (b) => delete b.post_quantum.kem_public_hex && (b.post_quantum.enabled = false),
      (b) => b.noise_keys.push({ ...b.noise_keys[0], version: 2 }),
    ];
    for (const edit of edits) {
      await assert.rejects(getServerInfo(d.url, { fetch: editingFetch(edit) }), { code: 'bad_signature' }, String(edit));
    }
  });

  test('a document re-signed by another key passes only without a pin', async () => {
    const info = await getServerInfo(d.url);
    const attacker = ml_dsa65.keygen(new Uint8Array(32).fill(7));
    const forge = (b) => {
      b.noise_keys[0].public = 'ee'.repeat(32);
      b.post_quantum.signature_public_hex = hex(attacker.publicKey);
      b.device_ca_public = hex(attacker.publicKey);
      b.post_quantum.key_bundle_signature_hex = hex(
        ml_dsa65.sign(new TextEncoder().encode(keyBundleText(b)), attacker.secretKey),
      );
    };
    // Self-consistent, so it verifies with its own key: this is why callers pin.
    const unpinned = await getServerInfo(d.url, { fetch: editingFetch(forge) });
    assert.equal(unpinned.noise_keys[0].public, 'ee'.repeat(32));
    await assert.rejects(
      getServerInfo(d.url, { fetch: editingFetch(forge), serverIdentity: info.device_ca_public }),
      { code: 'pin_mismatch' },
    );
    // Only one of the two identity fields swapped: refused even without a pin.
    await assert.rejects(
      getServerInfo(d.url, { fetch: editingFetch((b) => (b.device_ca_public = hex(attacker.publicKey))) }),
      { code: 'bad_response' },
    );
  });

  test('the pinned key left in device_ca_public does not vouch for a bundle another key signed', async () => {
    const info = await getServerInfo(d.url);
    const attacker = ml_dsa65.keygen(new Uint8Array(32).fill(9));
    const forge = (b) => {
      b.noise_keys[0].public = '55'.repeat(32);
      b.post_quantum.signature_public_hex = hex(attacker.publicKey);
      b.post_quantum.key_bundle_signature_hex = hex(
        ml_dsa65.sign(new TextEncoder().encode(keyBundleText(b)), attacker.secretKey),
      );
    };
    await assert.rejects(
      getServerInfo(d.url, { fetch: editingFetch(forge), serverIdentity: info.device_ca_public }),
      { code: 'pin_mismatch' },
    );
    await assert.rejects(getServerInfo(d.url, { fetch: editingFetch(forge) }), { code: 'bad_response' });
  });

  test('a signature by the pinned key over another text is refused', async () => {
    // The signature field of one daemon pasted into the other's document, keys matching the pin.
    const stolen = (await getServerInfo(other.url)).post_quantum.key_bundle_signature_hex;
    const info = await getServerInfo(d.url);
    await assert.rejects(
      getServerInfo(d.url, {
        serverIdentity: info.device_ca_public,
        fetch: editingFetch((b) => (b.post_quantum.key_bundle_signature_hex = stolen)),
      }),
      { code: 'bad_signature' },
    );
  });

  test('HTTP errors and bad URLs are typed', async () => {
    await assert.rejects(getServerInfo('ftp://127.0.0.1'), { code: 'invalid_argument' });
    await assert.rejects(getServerInfo(`${d.url}/nope`), (e) => e.code === 'http' && e.status === 404);
    await assert.rejects(getServerInfo('http://127.0.0.1:1'), { code: 'http' });
  });
});

describe('assist', () => {
  let d;
  before(async () => {
    d = await Daemon.start('');
  });
  after(() => d?.dispose());

  test('GET returns ice_servers ready for RTCPeerConnection', async () => {
    const a = await getAssist(d.url);
    assert.equal(a.noise.pattern, 'XK');
    assert.equal(a.ice.ttl_secs, 600);
    assert.equal(a.ice.username_fragment.length, 16);
    assert.equal(a.ice.password.length, 32);
    assert.ok(a.ice.ice_servers.length >= 1);
    assert.match(a.ice.ice_servers[0].urls[0], /^stun:127\.0\.0\.1:\d+$/);
    assert.deepEqual(Object.keys(a.multipath.sample_segments), ['commucat-ws']);
  });

  test('POST sends the request as JSON', async () => {
    const a = await getAssist(d.url, {
      paths: [
        { address: '203.0.113.1', port: 443, id: 'r2', priority: 5 },
        { address: 'example.org', port: 8443 },
      ],
      fec: { mtu: 1200, repair_overhead: 0.4 },
    });
    assert.equal(a.multipath.fec_mtu, 1200);
    assert.equal(a.multipath.primary_path, 'r2');
    assert.deepEqual(a.multipath.sample_segments, { r2: { total: 3, repair: 1 }, 'path-2': { total: 2, repair: 1 } });
  });

  test('a refused request is an http error with the field named', async () => {
    await assert.rejects(getAssist(d.url, { fec: { mtu: 10 } }), (e) => {
      assert.equal(e.code, 'http');
      assert.equal(e.status, 400);
      assert.match(e.message, /fec\.mtu/);
      return true;
    });
  });
});
