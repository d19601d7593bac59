/**
 * The client side of the hybrid handshake of docs/protocol.md §4.2–4.5: the 7-byte
 * header, the ML-KEM fields inside the Noise payloads, the server hello of message 2,
 * and the combiner that turns all of it into session keys.
 */
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { concatBytes, fromUtf8, utf8, wipe } from './bytes.js';
import { CommuCatError } from './errors.js';
import { deriveSessionKeys, type SessionKeys } from './kdf.js';
import { DH_LEN, HandshakeState, type Pattern } from './noise.js';

export type { Pattern } from './noise.js';
export type HandshakeVersion = 1 | 2;

export const HEADER_LEN = 7;
export const KEM_CIPHERTEXT_LEN = 1088;
export const KEM_PUBLIC_LEN = 1184;
const KEM_SEED_LEN = 64;
const KEM_RANDOM_LEN = 32;
const FLAG_PQ = 0x01;
export const DEFAULT_PROLOGUE = utf8('commucat');

/** The JSON part of message 2. */
export interface ServerHello {
  session_id: string;
  pq: boolean;
  key_version: number;
  ttl_seconds: number;
  keepalive_interval: number;
}

export interface ClientHandshakeParams {
  pattern: Pattern;
  version: HandshakeVersion;
  pq: boolean;
  keyVersion: number;
  /** The server's Noise static public key of `keyVersion`. */
  serverStatic: Uint8Array;
  /** The server's ML-KEM-768 encapsulation key; required when `pq`. */
  serverKem?: Uint8Array;
  /** The server's configured prologue (default `commucat`). */
  prologue?: Uint8Array;
  /** The client's static X25519 private key (its public key is the device id). */
  clientSecret: Uint8Array;
  /** Randomness; tests pass a deterministic stream to replay known answers. */
  random: (length: number) => Uint8Array;
}

export interface ClientEstablished {
  hello: ServerHello;
  /** XK: message 3, to send before any transport message; IK: undefined. */
  message3: Uint8Array | undefined;
  keys: SessionKeys;
}

/** The clear header in front of Noise message 1. */
export function encodeHeader(version: HandshakeVersion, pattern: Pattern, keyVersion: number, pq: boolean): Uint8Array {
  if (!Number.isInteger(keyVersion) || keyVersion < 0 || keyVersion > 0xffff_ffff) {
    throw new CommuCatError('invalid_argument', `key version ${keyVersion} is not a u32`);
  }
  const header = new Uint8Array(HEADER_LEN);
  header[0] = version;
  header[1] = pattern === 'XK' ? 1 : 2;
  new DataView(header.buffer).setUint32(2, keyVersion, false);
  header[6] = pq ? FLAG_PQ : 0;
  return header;
}

function isU64(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** The client's acceptance check of message 2 (docs/protocol.md reading R4.3). */
export function parseServerHello(json: Uint8Array, pq: boolean, keyVersion: number): ServerHello {
  let value: unknown;
  try {
    value = JSON.parse(fromUtf8(json));
  } catch (cause) {
    throw new CommuCatError('malformed', 'message 2 does not carry JSON', { cause });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new CommuCatError('malformed', 'message 2 JSON is not an object');
  }
  const hello = value as Record<string, unknown>;
  const sessionId = hello['session_id'];
  if (typeof sessionId !== 'string' || !/^[0-9a-f]{32}$/.test(sessionId)) {
    throw new CommuCatError('malformed', 'message 2 session_id is not 32 lowercase hex digits');
  }
  if (hello['pq'] !== pq || hello['key_version'] !== keyVersion) {
    throw new CommuCatError('malformed', 'message 2 pq/key_version do not repeat the header');
  }
  const ttl = hello['ttl_seconds'];
  const keepalive = hello['keepalive_interval'];
  if (!isU64(ttl) || !isU64(keepalive)) {
    throw new CommuCatError('malformed', 'message 2 session timings are not integers');
  }
  return { session_id: sessionId, pq, key_version: keyVersion, ttl_seconds: ttl, keepalive_interval: keepalive };
}

/** The initiator, from message 1 to the session keys. */
export class ClientHandshake {
  /** Header ‖ Noise message 1: one binary WebSocket message. */
  readonly message1: Uint8Array;
  private readonly noise: HandshakeState;
  private readonly pattern: Pattern;
  private readonly pq: boolean;
  private readonly keyVersion: number;
  private ssS: Uint8Array | undefined;
  private kemSecret: Uint8Array | undefined;
  private used = false;

  constructor(params: ClientHandshakeParams) {
    const { pattern, version, pq, keyVersion } = params;
    if (version !== 1 && version !== 2) throw new CommuCatError('invalid_argument', `unknown handshake version ${version}`);
    if (pattern !== 'XK' && pattern !== 'IK') throw new CommuCatError('invalid_argument', `unknown pattern ${pattern}`);
    if (version === 2 && !pq) throw new CommuCatError('invalid_argument', 'version 2 requires PQ');
    if (params.serverStatic.length !== DH_LEN) throw new CommuCatError('invalid_argument', 'server static key must be 32 bytes');
    if (params.clientSecret.length !== DH_LEN) throw new CommuCatError('invalid_argument', 'device key must be 32 bytes');
    this.pattern = pattern;
    this.pq = pq;
    this.keyVersion = keyVersion;
    const header = encodeHeader(version, pattern, keyVersion, pq);
    // The header is part of the prologue, so an edited header fails authentication.
    const prologue = concatBytes(params.prologue ?? DEFAULT_PROLOGUE, header);
    // Draw order (fixed by the daemon's known answers): Noise ephemeral, ct_s
    // encapsulation, ephemeral KEM seed.
    this.noise = new HandshakeState({
      pattern,
      initiator: true,
      prologue,
      staticSecret: params.clientSecret,
      remoteStatic: params.serverStatic,
      random: params.random,
    });
    const payload: Uint8Array[] = [];
    if (pq) {
      if (!params.serverKem || params.serverKem.length !== KEM_PUBLIC_LEN) {
        throw new CommuCatError('pq_unavailable', 'PQ needs the server ML-KEM-768 key');
      }
      const m = params.random(KEM_RANDOM_LEN);
      let encapsulated: { cipherText: Uint8Array; sharedSecret: Uint8Array };
      try {
        encapsulated = ml_kem768.encapsulate(params.serverKem, m);
      } catch (cause) {
        throw new CommuCatError('bad_response', 'the server ML-KEM-768 key is invalid', { cause });
      } finally {
        wipe(m);
      }
      payload.push(encapsulated.cipherText);
      this.ssS = encapsulated.sharedSecret;
    }
    if (version === 2) {
      const seed = params.random(KEM_SEED_LEN);
      const { publicKey, secretKey } = ml_kem768.keygen(seed);
      wipe(seed);
      payload.push(publicKey);
      this.kemSecret = secretKey;
    }
    const noiseMessage = this.noise.writeMessage(concatBytes(...payload));
    this.message1 = concatBytes(header, noiseMessage);
  }

  /** Processes message 2; for XK also writes message 3 (empty payload). */
  readMessage2(message2: Uint8Array): ClientEstablished {
    if (this.used) throw new CommuCatError('protocol', 'message 2 was already read');
    this.used = true;
    let ssE: Uint8Array | undefined;
    try {
      const payload = this.noise.readMessage(message2);
      let json = payload;
      if (this.kemSecret) {
        if (payload.length < KEM_CIPHERTEXT_LEN) {
          throw new CommuCatError('malformed', `message 2 payload of ${payload.length} bytes has no ct_e`);
        }
        // FIPS 203 decapsulation cannot fail on a ciphertext of the right length
        // (implicit rejection); a tampered one yields keys that fail on first use.
        ssE = ml_kem768.decapsulate(payload.subarray(0, KEM_CIPHERTEXT_LEN), this.kemSecret);
        json = payload.subarray(KEM_CIPHERTEXT_LEN);
      }
      const hello = parseServerHello(json, this.pq, this.keyVersion);
      const message3 = this.pattern === 'XK' ? this.noise.writeMessage(new Uint8Array(0)) : undefined;
      const [k1, k2] = this.noise.rawSplit();
      const keys = deriveSessionKeys(this.noise.handshakeHash, k1, k2, this.ssS, ssE);
      wipe(k1, k2);
      return { hello, message3, keys };
    } finally {
      this.destroy();
      wipe(ssE);
    }
  }

  /** Wipes the handshake secrets (also when the handshake is abandoned). */
  destroy(): void {
    this.noise.destroy();
    wipe(this.ssS, this.kemSecret);
    this.ssS = undefined;
    this.kemSecret = undefined;
  }
}
