/**
 * The Noise Protocol Framework (revision 34) for the two patterns the daemon speaks,
 * `Noise_XK_25519_ChaChaPoly_BLAKE2s` and `Noise_IK_25519_ChaChaPoly_BLAKE2s`, on the
 * @noble primitives. Both roles are implemented: the client uses the initiator; the
 * responder lets the test suite replay the daemon's deterministic known answers.
 */
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { x25519 } from '@noble/curves/ed25519.js';
import { blake2s } from '@noble/hashes/blake2.js';
import { hmac } from '@noble/hashes/hmac.js';
import { concatBytes, utf8, wipe } from './bytes.js';
import { CommuCatError } from './errors.js';

export type Pattern = 'XK' | 'IK';
type Token = 'e' | 's' | 'ee' | 'es' | 'se' | 'ss';

export const DH_LEN = 32;
const HASH_LEN = 32;
const TAG_LEN = 16;
/** Noise's own limit on a handshake message. */
export const MAX_NOISE_MESSAGE_LEN = 65_535;

// Both patterns pre-share the responder's static key (`<- s`).
const MESSAGES: Record<Pattern, Token[][]> = {
  XK: [['e', 'es'], ['e', 'ee'], ['s', 'se']],
  IK: [['e', 'es', 's', 'ss'], ['e', 'ee', 'se']],
};

function dh(secret: Uint8Array, pub: Uint8Array): Uint8Array {
  try {
    // noble refuses an all-zero result (a low-order point), as the daemon does.
    return x25519.getSharedSecret(secret, pub);
  } catch (cause) {
    throw new CommuCatError('decrypt_failed', 'X25519 with the peer key failed', { cause });
  }
}

function nonceFor(n: number): Uint8Array {
  const nonce = new Uint8Array(12);
  const view = new DataView(nonce.buffer);
  view.setUint32(4, n % 0x1_0000_0000, true);
  view.setUint32(8, Math.floor(n / 0x1_0000_0000), true);
  return nonce;
}

/** Noise's HKDF with HMAC-BLAKE2s, two outputs. */
function hkdf2(chainingKey: Uint8Array, ikm: Uint8Array): [Uint8Array, Uint8Array] {
  const temp = hmac(blake2s, chainingKey, ikm);
  const out1 = hmac(blake2s, temp, Uint8Array.of(1));
  const out2 = hmac(blake2s, temp, concatBytes(out1, Uint8Array.of(2)));
  wipe(temp);
  return [out1, out2];
}

class SymmetricState {
  ck: Uint8Array;
  h: Uint8Array;
  private k: Uint8Array | null = null;
  private n = 0;

  constructor(protocolName: string) {
    const name = utf8(protocolName);
    // Names longer than HASHLEN are hashed (Noise §5.2); ours are 33 bytes.
    this.h = name.length <= HASH_LEN ? concatBytes(name, new Uint8Array(HASH_LEN - name.length)) : blake2s(name);
    this.ck = this.h.slice();
  }

  mixHash(data: Uint8Array): void {
    this.h = blake2s(concatBytes(this.h, data));
  }

  mixKey(ikm: Uint8Array): void {
    const [ck, k] = hkdf2(this.ck, ikm);
    wipe(this.ck, this.k);
    this.ck = ck;
    this.k = k;
    this.n = 0;
  }

  encryptAndHash(plaintext: Uint8Array): Uint8Array {
    let out = plaintext;
    if (this.k) {
      out = chacha20poly1305(this.k, nonceFor(this.n), this.h).encrypt(plaintext);
      this.n += 1;
    }
    this.mixHash(out);
    return out;
  }

  decryptAndHash(ciphertext: Uint8Array): Uint8Array {
    let out = ciphertext;
    if (this.k) {
      try {
        out = chacha20poly1305(this.k, nonceFor(this.n), this.h).decrypt(ciphertext);
      } catch (cause) {
        throw new CommuCatError('decrypt_failed', 'Noise handshake message failed authentication', { cause });
      }
      this.n += 1;
    }
    this.mixHash(ciphertext);
    return out;
  }

  get hasKey(): boolean {
    return this.k !== null;
  }

  /** The raw split keys (initiator → responder, responder → initiator). */
  split(): [Uint8Array, Uint8Array] {
    return hkdf2(this.ck, new Uint8Array(0));
  }

  destroy(): void {
    wipe(this.ck, this.k);
  }
}

export interface HandshakeParams {
  pattern: Pattern;
  initiator: boolean;
  prologue: Uint8Array;
  /** Own static X25519 private key. */
  staticSecret: Uint8Array;
  /** The peer's static public key when known beforehand (the initiator knows the responder's). */
  remoteStatic?: Uint8Array;
  /** Source of the ephemeral private key (32 bytes). */
  random: (length: number) => Uint8Array;
}

export class HandshakeState {
  private readonly ss: SymmetricState;
  private readonly messages: Token[][];
  private readonly initiator: boolean;
  private readonly s: Uint8Array;
  private readonly sPub: Uint8Array;
  private e: Uint8Array | null = null;
  private rs: Uint8Array | null;
  private re: Uint8Array | null = null;
  private index = 0;

  constructor(params: HandshakeParams) {
    this.ss = new SymmetricState(`Noise_${params.pattern}_25519_ChaChaPoly_BLAKE2s`);
    this.messages = MESSAGES[params.pattern];
    this.initiator = params.initiator;
    this.s = params.staticSecret.slice();
    this.sPub = x25519.getPublicKey(this.s);
    this.rs = params.remoteStatic ? params.remoteStatic.slice() : null;
    this.ss.mixHash(params.prologue);
    // Pre-message `<- s`: the responder's static key.
    const responderStatic = this.initiator ? this.rs : this.sPub;
    if (!responderStatic) throw new CommuCatError('invalid_argument', 'the initiator needs the responder static key');
    this.ss.mixHash(responderStatic);
    // Drawn now, before any other randomness of the handshake: the daemon's documented
    // draw order, which the known-answer tests depend on.
    this.e = params.random(DH_LEN);
  }

  get finished(): boolean {
    return this.index >= this.messages.length;
  }

  /** The handshake hash `h`. */
  get handshakeHash(): Uint8Array {
    return this.ss.h.slice();
  }

  get remoteStaticKey(): Uint8Array | null {
    return this.rs ? this.rs.slice() : null;
  }

  private tokens(writing: boolean): Token[] {
    const tokens = this.messages[this.index];
    const ourTurn = (this.index % 2 === 0) === this.initiator;
    if (!tokens || ourTurn !== writing) {
      throw new CommuCatError('protocol', 'Noise handshake message out of turn');
    }
    return tokens;
  }

  private mixDh(token: 'ee' | 'es' | 'se' | 'ss'): void {
    // First letter: the initiator's key; second: the responder's.
    const mine = this.initiator ? token[0] : token[1];
    const local = mine === 'e' ? this.e : this.s;
    const theirs = this.initiator ? token[1] : token[0];
    const remote = theirs === 'e' ? this.re : this.rs;
    if (!local || !remote) throw new CommuCatError('protocol', `Noise token ${token} without its keys`);
    const shared = dh(local, remote);
    this.ss.mixKey(shared);
    wipe(shared);
  }

  writeMessage(payload: Uint8Array): Uint8Array {
    const parts: Uint8Array[] = [];
    for (const token of this.tokens(true)) {
      if (token === 'e') {
        if (!this.e) throw new CommuCatError('protocol', 'Noise ephemeral key already used');
        const ePub = x25519.getPublicKey(this.e);
        parts.push(ePub);
        this.ss.mixHash(ePub);
      } else if (token === 's') {
        parts.push(this.ss.encryptAndHash(this.sPub));
      } else {
        this.mixDh(token);
      }
    }
    parts.push(this.ss.encryptAndHash(payload));
    this.index += 1;
    const message = concatBytes(...parts);
    if (message.length > MAX_NOISE_MESSAGE_LEN) {
      throw new CommuCatError('invalid_argument', 'Noise message over 65535 bytes');
    }
    return message;
  }

  readMessage(message: Uint8Array): Uint8Array {
    if (message.length > MAX_NOISE_MESSAGE_LEN) {
      throw new CommuCatError('malformed', 'Noise message over 65535 bytes');
    }
    let offset = 0;
    const take = (length: number): Uint8Array => {
      if (message.length - offset < length) {
        throw new CommuCatError('malformed', `Noise message of ${message.length} bytes is too short`);
      }
      const part = message.subarray(offset, offset + length);
      offset += length;
      return part;
    };
    for (const token of this.tokens(false)) {
      if (token === 'e') {
        this.re = take(DH_LEN).slice();
        this.ss.mixHash(this.re);
      } else if (token === 's') {
        const sealed = take(this.ss.hasKey ? DH_LEN + TAG_LEN : DH_LEN);
        this.rs = this.ss.decryptAndHash(sealed);
      } else {
        this.mixDh(token);
      }
    }
    // The payload: with a key it carries at least its tag.
    const rest = message.subarray(offset);
    if (this.ss.hasKey && rest.length < TAG_LEN) {
      throw new CommuCatError('malformed', 'Noise message too short for its payload tag');
    }
    const payload = this.ss.decryptAndHash(rest);
    this.index += 1;
    return payload;
  }

  /** The raw split keys `k1` (initiator → responder) and `k2`; only once finished. */
  rawSplit(): [Uint8Array, Uint8Array] {
    if (!this.finished) throw new CommuCatError('protocol', 'Noise handshake not finished');
    return this.ss.split();
  }

  destroy(): void {
    this.ss.destroy();
    wipe(this.s, this.e);
    this.e = null;
  }
}
