/**
 * Key schedule of docs/protocol.md §4.5 and §4.6: HKDF-SHA3-512 for the session keys
 * and for the per-direction ratchet.
 */
import { expand, extract } from '@noble/hashes/hkdf.js';
import { sha3_512 } from '@noble/hashes/sha3.js';
import { concatBytes, utf8, wipe } from './bytes.js';

export const KEY_LEN = 32;
const SESSION_INFO_HYBRID = utf8('commucat.hybrid.session.v1');
const SESSION_INFO_CLASSICAL = utf8('commucat.classical.session.v1');
// One label for both modes: the contract says so (§4.6).
const RATCHET_INFO = utf8('commucat.hybrid.ratchet.v1');

/** The three keys a finished handshake yields. */
export interface SessionKeys {
  rootKey: Uint8Array;
  clientToServer: Uint8Array;
  serverToClient: Uint8Array;
}

/** `okm = HKDF-SHA3-512(salt = h, ikm = k1 ‖ k2 ‖ ss_s? ‖ ss_e?, info, 96)`. */
export function deriveSessionKeys(
  handshakeHash: Uint8Array,
  k1: Uint8Array,
  k2: Uint8Array,
  ssS?: Uint8Array,
  ssE?: Uint8Array,
): SessionKeys {
  const hybrid = ssS !== undefined || ssE !== undefined;
  const parts = [k1, k2];
  if (ssS) parts.push(ssS);
  if (ssE) parts.push(ssE);
  const ikm = concatBytes(...parts);
  const prk = extract(sha3_512, ikm, handshakeHash);
  const okm = expand(sha3_512, prk, hybrid ? SESSION_INFO_HYBRID : SESSION_INFO_CLASSICAL, 3 * KEY_LEN);
  const keys = {
    rootKey: okm.slice(0, KEY_LEN),
    clientToServer: okm.slice(KEY_LEN, 2 * KEY_LEN),
    serverToClient: okm.slice(2 * KEY_LEN),
  };
  wipe(ikm, prk, okm);
  return keys;
}

/**
 * Next key of one direction. HKDF-Expand's first block does not depend on the
 * requested length, so 32 bytes are "the first 32 bytes" of any longer output.
 */
export function ratchetKey(rootKey: Uint8Array, key: Uint8Array): Uint8Array {
  const prk = extract(sha3_512, key, rootKey);
  const next = expand(sha3_512, prk, RATCHET_INFO, KEY_LEN);
  wipe(prk);
  return next;
}

export function wipeSessionKeys(keys: SessionKeys): void {
  wipe(keys.rootKey, keys.clientToServer, keys.serverToClient);
}
