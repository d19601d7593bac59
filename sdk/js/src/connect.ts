/** `connect()`: a verified, post-quantum (when available) session with the daemon. */
import { CommuCatError } from './errors.js';
import { deviceIdOf, resolveDeviceKey, type DeviceKeySource } from './keystore.js';
import { establishLink } from './link.js';
import { Session, type SessionOptions } from './session.js';
import { wipe } from './bytes.js';

export interface ConnectOptions extends SessionOptions {
  /** A 32-byte X25519 secret, `"ephemeral"` (default) or a `DeviceKeyStore`. */
  deviceKey?: DeviceKeySource;
}

/**
 * Fetches and verifies server-info, runs the hybrid handshake on `/api/connect` of `url`
 * (the daemon's base URL, `http(s)://host:port`) and returns the open session.
 */
export async function connect(url: string, options: ConnectOptions = {}): Promise<Session> {
  const secret = await resolveDeviceKey(options.deviceKey);
  const deviceId = deviceIdOf(secret);
  const { deviceKey: _unused, ...sessionOptions } = options;
  let session: Session;
  try {
    const link = await establishLink(url, sessionOptions, secret, deviceId);
    session = new Session(url, sessionOptions, secret, deviceId, link);
  } catch (error) {
    wipe(secret);
    throw error;
  }
  try {
    await session.confirm();
    if (options.assist) await session.startAssist(options.assist === true ? undefined : options.assist);
  } catch (error) {
    await session.close();
    throw error instanceof CommuCatError ? error : new CommuCatError('websocket', String(error), { cause: error });
  }
  return session;
}
