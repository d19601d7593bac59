/**
 * Where the device key comes from. The device id is the X25519 public key of this
 * secret, so a device that wants to be reachable under the same id keeps it.
 */
import { x25519 } from '@noble/curves/ed25519.js';
import { randomBytes } from '@noble/hashes/utils.js';
import { bytesToHex } from './bytes.js';
import { CommuCatError } from './errors.js';

export const DEVICE_KEY_LEN = 32;

/** A persistent store of one device key (see `keystore-node` and `keystore-browser`). */
export interface DeviceKeyStore {
  /** The stored key, created and stored first if there is none. */
  load(): Promise<Uint8Array>;
}

/** A 32-byte X25519 secret, `"ephemeral"` for a fresh key per `connect`, or a store. */
export type DeviceKeySource = Uint8Array | 'ephemeral' | DeviceKeyStore;

export function generateDeviceKey(): Uint8Array {
  return randomBytes(DEVICE_KEY_LEN);
}

/** The device id (`device_id` of the daemon): hex of the X25519 public key. */
export function deviceIdOf(secret: Uint8Array): string {
  if (secret.length !== DEVICE_KEY_LEN) throw new CommuCatError('invalid_argument', 'a device key is 32 bytes');
  return bytesToHex(x25519.getPublicKey(secret));
}

/** A private copy of the key the caller chose; the caller may wipe its own. */
export async function resolveDeviceKey(source: DeviceKeySource | undefined): Promise<Uint8Array> {
  if (source === undefined || source === 'ephemeral') return generateDeviceKey();
  if (source instanceof Uint8Array) {
    if (source.length !== DEVICE_KEY_LEN) {
      throw new CommuCatError('invalid_argument', `deviceKey must be ${DEVICE_KEY_LEN} bytes, got ${source.length}`);
    }
    return source.slice();
  }
  if (typeof source === 'object' && source !== null && typeof source.load === 'function') {
    const key = await source.load();
    if (!(key instanceof Uint8Array) || key.length !== DEVICE_KEY_LEN) {
      throw new CommuCatError('invalid_argument', 'the device key store returned no 32-byte key');
    }
    // A copy: the session wipes its key on close, and a store may keep its own.
    return key.slice();
  }
  throw new CommuCatError('invalid_argument', 'deviceKey must be 32 bytes, "ephemeral" or a DeviceKeyStore');
}
