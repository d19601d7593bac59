// Whole handshakes with every random input fixed (tests/vectors/known_answers.json,
// "handshakes"): the SDK's initiator against a responder built from the SDK's own Noise
// code, both fed the daemon's deterministic streams, must reproduce the daemon's
// messages and keys byte for byte.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { sha3_256 } from '@noble/hashes/sha3.js';
import { x25519 } from '@noble/curves/ed25519.js';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { ClientHandshake, clientTransport, deriveSessionKeys, encodeHeader } from '../dist/index.js';
import { HandshakeState } from '../dist/noise.js';

const vectors = JSON.parse(readFileSync(new URL('../../../tests/vectors/known_answers.json', import.meta.url), 'utf8'));
const hex = (b) => Buffer.from(b).toString('hex');
const utf8 = (s) => new TextEncoder().encode(s);

/** The daemon's test stream: SHA3-256(label ‖ u64 LE counter), block after block. */
function seeded(label) {
  let counter = 0n;
  let block = new Uint8Array(0);
  return (n) => {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      if (block.length === 0) {
        const c = new Uint8Array(8);
        new DataView(c.buffer).setBigUint64(0, counter++, true);
        block = sha3_256(new Uint8Array([...utf8(label), ...c]));
      }
      out[i] = block[0];
      block = block.subarray(1);
    }
    return out;
  };
}

const secret = (label) => seeded(label)(32);

/** The responder side, as src/crypto/handshake/server.rs draws its randomness. */
function respond(c, message1, serverStatic, kem, editHello = (h) => h, editPayload = (p) => p) {
  const random = seeded('server');
  const header = message1.subarray(0, 7);
  assert.deepEqual(header, encodeHeader(c.version, c.pattern, c.key_version, c.pq));
  const noise = new HandshakeState({
    pattern: c.pattern,
    initiator: false,
    prologue: new Uint8Array([...utf8('commucat'), ...header]),
    staticSecret: serverStatic,
    random,
  });
  const payload = noise.readMessage(message1.subarray(7));
  const ssS = c.pq ? ml_kem768.decapsulate(payload.subarray(0, 1088), kem.secretKey) : undefined;
  let ctE = new Uint8Array(0);
  let ssE;
  if (c.version === 2) {
    const encapsulated = ml_kem768.encapsulate(payload.subarray(1088, 1088 + 1184), random(32));
    ctE = encapsulated.cipherText;
    ssE = encapsulated.sharedSecret;
  }
  const sessionId = hex(random(16));
  const hello = `{"session_id":"${sessionId}","pq":${c.pq},"key_version":${c.key_version},"ttl_seconds":120,"keepalive_interval":30}`;
  const message2 = noise.writeMessage(editPayload(new Uint8Array([...ctE, ...utf8(editHello(hello))])));
  return { noise, message2, ssS, ssE };
}

for (const c of vectors.handshakes.cases) {
  test(`known answer: ${c.pattern} version ${c.version} ${c.pq ? 'hybrid' : 'classical'}`, () => {
    const { client, serverStatic, kem } = setup(c);
    assert.equal(hex(sha3_256(client.message1)), c.message1_sha3, 'message 1');
    const server = respond(c, client.message1, serverStatic, kem);
    assert.equal(hex(sha3_256(server.message2)), c.message2_sha3, 'message 2');
    const established = client.readMessage2(server.message2);
    assert.equal(established.message3 === undefined ? null : hex(sha3_256(established.message3)), c.message3_sha3, 'message 3');
    if (established.message3) assert.deepEqual(server.noise.readMessage(established.message3), new Uint8Array(0));
    assert.equal(hex(established.keys.rootKey), c.root_key);
    assert.equal(hex(established.keys.clientToServer), c.client_to_server);
    assert.equal(hex(established.keys.serverToClient), c.server_to_client);
    // The responder derives the same keys from its own split and KEM secrets.
    const [k1, k2] = server.noise.rawSplit();
    const serverKeys = deriveSessionKeys(server.noise.handshakeHash, k1, k2, server.ssS, server.ssE);
    assert.equal(hex(serverKeys.rootKey), c.root_key);
    assert.equal(hex(serverKeys.serverToClient), c.server_to_client);
    const { sealer } = clientTransport(established.keys);
    assert.equal(hex(sealer.seal(utf8('{"type":"ping","id":1}'))), c.first_ping, 'first ping');
  });
}

/** A fresh client and the matching responder inputs of known-answer case `c`. */
function setup(c) {
  const serverStatic = secret('server-static-2');
  const kem = ml_kem768.keygen(seeded('server-kem')(64));
  const client = new ClientHandshake({
    pattern: c.pattern,
    version: c.version,
    pq: c.pq,
    keyVersion: c.key_version,
    serverStatic: x25519.getPublicKey(serverStatic),
    serverKem: kem.publicKey,
    clientSecret: secret('client-static'),
    random: seeded('client'),
  });
  return { client, serverStatic, kem };
}

test('the client accepts message 2 only as reading R4.3 says', () => {
  const hellos = [
    (h) => h.replace(/"pq":(true|false)/, (_, v) => `"pq":${v === 'true' ? 'false' : 'true'}`),
    (h) => h.replace('"key_version":2', '"key_version":1'),
    (h) => h.replace(/"session_id":"([0-9a-f]{32})"/, (_, id) => `"session_id":"${id.toUpperCase()}"`),
    (h) => h.replace(/"session_id":"([0-9a-f]{32})"/, (_, id) => `"session_id":"${id.slice(2)}"`),
    (h) => h.replace('"ttl_seconds":120', '"ttl_seconds":"120"'),
    (h) => h.replace('"keepalive_interval":30', '"keepalive_interval":-1'),
    (h) => h.slice(0, -1),
    () => '[1,2]',
  ];
  for (const c of vectors.handshakes.cases) {
    for (const edit of hellos) {
      const { client, serverStatic, kem } = setup(c);
      const { message2 } = respond(c, client.message1, serverStatic, kem, edit);
      assert.throws(() => client.readMessage2(message2), { code: 'malformed' }, `${c.pattern}: ${edit}`);
    }
    // Unknown fields are ignored.
    const { client, serverStatic, kem } = setup(c);
    const { message2 } = respond(c, client.message1, serverStatic, kem, (h) => h.replace('{', '{"extra":[1],'));
    assert.equal(client.readMessage2(message2).hello.key_version, 2);
  }
});

test('message 2 that is truncated, tampered or lacks ct_e is refused', () => {
  const [xkV2] = vectors.handshakes.cases;
  {
    const { client, serverStatic, kem } = setup(xkV2);
    const { message2 } = respond(xkV2, client.message1, serverStatic, kem);
    assert.throws(() => client.readMessage2(message2.subarray(0, 40)), { code: 'malformed' });
  }
  {
    const { client, serverStatic, kem } = setup(xkV2);
    const { message2 } = respond(xkV2, client.message1, serverStatic, kem);
    const tampered = message2.slice();
    tampered[100] ^= 1;
    assert.throws(() => client.readMessage2(tampered), { code: 'decrypt_failed' });
  }
  {
    // A version 2 payload of only a few bytes: no room for ct_e.
    const { client, serverStatic, kem } = setup(xkV2);
    const { message2 } = respond(xkV2, client.message1, serverStatic, kem, (h) => h, (p) => p.subarray(0, 100));
    assert.throws(() => client.readMessage2(message2), { code: 'malformed' });
  }
  {
    // Over Noise's 65535-byte limit.
    const { client } = setup(xkV2);
    assert.throws(() => client.readMessage2(new Uint8Array(65_536)), { code: 'malformed' });
  }
});
