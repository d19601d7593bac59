/**
 * The encrypted transport of docs/protocol.md §4.6: ChaCha20-Poly1305 with an empty aad,
 * nonce = 4 zero bytes ‖ u64 little-endian counter, and a ratchet after every 4096th
 * message of a direction. The directions are independent state machines.
 */
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { wipe } from './bytes.js';
import { CommuCatError } from './errors.js';
import { KEY_LEN, ratchetKey, type SessionKeys } from './kdf.js';

export const TAG_LEN = 16;
export const MAX_PLAINTEXT_LEN = 65_535;
export const MAX_CIPHERTEXT_LEN = MAX_PLAINTEXT_LEN + TAG_LEN;
export const REKEY_INTERVAL = 4096;
// Counters are JS numbers; past 2^53 they would lose precision, far beyond any session.
const MAX_COUNTER = Number.MAX_SAFE_INTEGER;

class Direction {
  private key: Uint8Array;
  private readonly rootKey: Uint8Array;
  /** Counter of the next message. */
  counter = 0;

  constructor(rootKey: Uint8Array, key: Uint8Array) {
    if (rootKey.length !== KEY_LEN || key.length !== KEY_LEN) {
      throw new CommuCatError('invalid_argument', 'transport keys must be 32 bytes');
    }
    this.rootKey = rootKey.slice();
    this.key = key.slice();
  }

  nonce(): Uint8Array {
    if (this.counter >= MAX_COUNTER) {
      throw new CommuCatError('counter_exhausted', 'transport message counter exhausted');
    }
    const nonce = new Uint8Array(12);
    const view = new DataView(nonce.buffer);
    view.setUint32(4, this.counter % 0x1_0000_0000, true);
    view.setUint32(8, Math.floor(this.counter / 0x1_0000_0000), true);
    return nonce;
  }

  cipher(nonce: Uint8Array) {
    return chacha20poly1305(this.key, nonce);
  }

  /** After message `counter` was sealed or opened. */
  advance(): void {
    if (this.counter % REKEY_INTERVAL === REKEY_INTERVAL - 1) {
      const next = ratchetKey(this.rootKey, this.key);
      wipe(this.key);
      this.key = next;
    }
    this.counter += 1;
  }

  destroy(): void {
    wipe(this.key, this.rootKey);
  }
}

/** The sealing half (client → server for a client). */
export class Sealer {
  private readonly direction: Direction;

  constructor(rootKey: Uint8Array, key: Uint8Array) {
    this.direction = new Direction(rootKey, key);
  }

  get counter(): number {
    return this.direction.counter;
  }

  seal(plaintext: Uint8Array): Uint8Array {
    if (plaintext.length > MAX_PLAINTEXT_LEN) {
      throw new CommuCatError('too_large', `transport message of ${plaintext.length} bytes is too large`);
    }
    const ciphertext = this.direction.cipher(this.direction.nonce()).encrypt(plaintext);
    this.direction.advance();
    return ciphertext;
  }

  destroy(): void {
    this.direction.destroy();
  }
}

/** The opening half (server → client for a client). */
export class Opener {
  private readonly direction: Direction;

  constructor(rootKey: Uint8Array, key: Uint8Array) {
    this.direction = new Direction(rootKey, key);
  }

  get counter(): number {
    return this.direction.counter;
  }

  /** On failure the state is unchanged; the caller is expected to end the session. */
  open(ciphertext: Uint8Array): Uint8Array {
    if (ciphertext.length > MAX_CIPHERTEXT_LEN) {
      throw new CommuCatError('malformed', `transport message of ${ciphertext.length} bytes is too large`);
    }
    if (ciphertext.length < TAG_LEN) {
      throw new CommuCatError('decrypt_failed', 'transport message shorter than its tag');
    }
    let plaintext: Uint8Array;
    try {
      plaintext = this.direction.cipher(this.direction.nonce()).decrypt(ciphertext);
    } catch (cause) {
      if (cause instanceof CommuCatError) throw cause;
      throw new CommuCatError('decrypt_failed', 'transport message failed authentication', { cause });
    }
    this.direction.advance();
    return plaintext;
  }

  destroy(): void {
    this.direction.destroy();
  }
}

/** Both directions of the client's transport. */
export interface ClientTransport {
  sealer: Sealer;
  opener: Opener;
}

/** The client seals with `client_to_server` and opens with `server_to_client`. */
export function clientTransport(keys: SessionKeys): ClientTransport {
  return {
    sealer: new Sealer(keys.rootKey, keys.clientToServer),
    opener: new Opener(keys.rootKey, keys.serverToClient),
  };
}
