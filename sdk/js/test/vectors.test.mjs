// The known answers of tests/vectors/known_answers.json, which the Rust suite
// (tests/vectors.rs) checks too, so that the two implementations cannot drift.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { sha1 } from '@noble/hashes/legacy.js';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { deriveSessionKeys, ratchetKey, clientTransport } from '../dist/index.js';
import { Opener } from '../dist/transport.js';

const vectors = JSON.parse(readFileSync(new URL('../../../tests/vectors/known_answers.json', import.meta.url), 'utf8'));
const hex = (b) => Buffer.from(b).toString('hex');
const bytes = (h) => new Uint8Array(Buffer.from(h, 'hex'));

function keysFor(mode) {
  const i = vectors.session_keys.inputs;
  const [h, k1, k2, ssS, ssE] = [i.handshake_hash, i.k1, i.k2, i.ss_s, i.ss_e].map(bytes);
  switch (mode) {
    case 'classical':
      return deriveSessionKeys(h, k1, k2);
    case 'hybrid_v1':
      return deriveSessionKeys(h, k1, k2, ssS);
    case 'hybrid_v2':
      return deriveSessionKeys(h, k1, k2, ssS, ssE);
    default:
      throw new Error(`unknown mode ${mode}`);
  }
}

test('session keys of every mode', () => {
  assert.equal(vectors.session_keys.cases.length, 3);
  for (const c of vectors.session_keys.cases) {
    const keys = keysFor(c.mode);
    assert.equal(hex(keys.rootKey), c.root_key, c.mode);
    assert.equal(hex(keys.clientToServer), c.client_to_server, c.mode);
    assert.equal(hex(keys.serverToClient), c.server_to_client, c.mode);
  }
});

test('ratchet step', () => {
  const r = vectors.ratchet;
  assert.equal(hex(ratchetKey(bytes(r.root_key), bytes(r.key))), r.next_key);
});

test('first transport message seals and opens', () => {
  const t = vectors.transport;
  const keys = keysFor(t.keys_from);
  const { sealer } = clientTransport(keys);
  const plaintext = new TextEncoder().encode(t.plaintext_utf8);
  const sealed = sealer.seal(plaintext);
  assert.equal(hex(sealed), t.client_message_0);
  // The server's opener of the same direction (client_to_server) recovers it.
  const serverSide = new Opener(keys.rootKey, keys.clientToServer);
  assert.deepEqual(serverSide.open(sealed), plaintext);
  // Message 1 uses the next nonce: the same bytes no longer open.
  assert.throws(() => serverSide.open(sealed), { code: 'decrypt_failed' });
});

test('the ratchet turns after every 4096th message of a direction', () => {
  const keys = keysFor('hybrid_v1');
  const { sealer } = clientTransport(keys);
  const opener = new Opener(keys.rootKey, keys.clientToServer);
  const message = new TextEncoder().encode('{"type":"ping","id":1}');
  const nonce = (n) => {
    const b = new Uint8Array(12);
    new DataView(b.buffer).setBigUint64(4, BigInt(n), true);
    return b;
  };
  // Expected key of each epoch, computed step by step from the contract.
  const epochKeys = [keys.clientToServer];
  epochKeys.push(ratchetKey(keys.rootKey, epochKeys[0]));
  epochKeys.push(ratchetKey(keys.rootKey, epochKeys[1]));
  for (let i = 0; i < 4096 * 2 + 2; i++) {
    const sealed = sealer.seal(message);
    const expected = chacha20poly1305(epochKeys[Math.floor(i / 4096)], nonce(i)).encrypt(message);
    assert.equal(hex(sealed), hex(expected), `message ${i}`);
    assert.deepEqual(opener.open(sealed), message);
  }
  assert.equal(sealer.counter, 8194);
  assert.equal(opener.counter, 8194);
});

test('transport length limits', () => {
  const keys = keysFor('classical');
  const { sealer, opener } = clientTransport(keys);
  assert.throws(() => sealer.seal(new Uint8Array(65_536)), { code: 'too_large' });
  assert.equal(sealer.seal(new Uint8Array(65_535)).length, 65_551);
  assert.throws(() => opener.open(new Uint8Array(65_552)), { code: 'malformed' });
  assert.throws(() => opener.open(new Uint8Array(15)), { code: 'decrypt_failed' });
  // A failed open leaves the counter where it was.
  assert.equal(opener.counter, 0);
});

// The ICE and TURN known answers are derivations the server makes; the SDK does not
// compute them, so they are reproduced here with the same primitives the SDK ships
// (@noble/hashes), which keeps the shared file checked in full by this suite.
const b64nopad = (b) => Buffer.from(b).toString('base64').replace(/=+$/, '');

test('ICE credentials', () => {
  const secret = bytes(vectors.ice.secret);
  for (const c of vectors.ice.credentials) {
    const mac = hmac(sha256, secret, new TextEncoder().encode(`commucat-ice-v1:${c.ufrag}`));
    assert.equal(b64nopad(mac).slice(0, 32), c.password, c.ufrag);
    const raw = Buffer.from(c.ufrag, 'base64');
    assert.equal(raw.length, 12);
    assert.equal(raw.readUInt32BE(0), c.expires_at, c.ufrag);
  }
});

test('TURN REST credential', () => {
  const t = vectors.turn_rest;
  const username = `${t.expiry}:${t.ufrag}`;
  assert.equal(username, t.username);
  const mac = hmac(sha1, new TextEncoder().encode(t.secret_utf8), new TextEncoder().encode(username));
  assert.equal(Buffer.from(mac).toString('base64'), t.credential);
});

test('host candidates', () => {
  const c = vectors.candidates;
  c.addresses.forEach((address, i) => {
    const ip = address.slice(0, address.lastIndexOf(':'));
    const foundation = hex(sha256(new TextEncoder().encode(`host/udp/${ip}`)).subarray(0, 4));
    assert.equal(foundation, c.foundations[i]);
    assert.equal(2 ** 24 * 126 + 2 ** 8 * (65535 - i) + 255, c.priorities[i]);
  });
});
