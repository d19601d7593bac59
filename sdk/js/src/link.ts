/**
 * One connection to `/api/connect`: verified server-info, WebSocket, hybrid handshake,
 * transport keys and the `welcome` check (docs/protocol.md §4.13 steps 1–5). A session
 * owns one link at a time and makes a new one to reconnect.
 */
import { randomBytes } from '@noble/hashes/utils.js';
import { fromUtf8, hexToBytes, utf8 } from './bytes.js';
import { Channel, type WebSocketConstructor } from './channel.js';
import { CommuCatError } from './errors.js';
import { ClientHandshake, DEFAULT_PROLOGUE, type HandshakeVersion, type Pattern, type ServerHello } from './handshake.js';
import { connectUrl, DEFAULT_TIMEOUT_MS, type FetchLike } from './http.js';
import { getServerInfo, type ServerInfo } from './discovery.js';
import { wipeSessionKeys } from './kdf.js';
import { clientTransport, type Opener, type Sealer } from './transport.js';

export interface LinkOptions {
  /** Noise pattern (default `"XK"`). */
  pattern?: Pattern;
  /** Handshake version; default 2 when the session is PQ and the server offers it, else 1. */
  version?: HandshakeVersion;
  /** Hybrid handshake; default: whenever the server offers it. */
  pq?: boolean;
  /** Refuse to connect unless the session is post-quantum (hybrid). */
  requirePq?: boolean;
  /** Which Noise key of the server; default the newest listed. */
  keyVersion?: number;
  /** The server's identity key (`device_ca_public`, hex) obtained out of band. */
  serverIdentity?: string;
  /** The server's `[crypto] prologue` (default `commucat`). */
  prologue?: string | Uint8Array;
  /** Bound on fetching server-info and on the handshake, in ms (default 10 000). */
  timeoutMs?: number;
  /** A WebSocket constructor where there is no global one (Node 20: the `ws` package). */
  WebSocket?: WebSocketConstructor;
  /** A fetch to use instead of the global one. */
  fetch?: FetchLike;
  /** For a daemon with `[auth] required`; sent as `?access_token=` on the upgrade. */
  accessToken?: string;
}

export interface Link {
  channel: Channel;
  sealer: Sealer;
  opener: Opener;
  hello: ServerHello;
  info: ServerInfo;
  pattern: Pattern;
  version: HandshakeVersion;
  pq: boolean;
  /** From sending message 1 to the session keys (message 3 sent for XK), in ms. */
  handshakeMs: number;
}

interface Mode {
  pattern: Pattern;
  version: HandshakeVersion;
  pq: boolean;
}

/** The handshake mode for `options` against a verified document. */
export function chooseMode(info: ServerInfo, options: LinkOptions): Mode {
  const offered = info.post_quantum.enabled && info.post_quantum.kem_public_hex !== undefined;
  const pattern = options.pattern ?? 'XK';
  if (pattern !== 'XK' && pattern !== 'IK') throw new CommuCatError('invalid_argument', `unknown pattern ${String(pattern)}`);
  if (options.requirePq && options.pq === false) {
    throw new CommuCatError('invalid_argument', 'requirePq contradicts pq: false');
  }
  const pq = options.pq ?? offered;
  if (pq && !offered) {
    throw new CommuCatError(
      options.requirePq ? 'pq_required' : 'pq_unavailable',
      'the server has post-quantum handshakes off',
    );
  }
  if (!pq && options.requirePq) throw new CommuCatError('pq_required', 'post-quantum session required');
  const version = options.version ?? (pq && info.supported_versions?.includes(2) ? 2 : 1);
  if (version !== 1 && version !== 2) throw new CommuCatError('invalid_argument', `unknown handshake version ${String(version)}`);
  if (version === 2 && !pq) throw new CommuCatError('invalid_argument', 'version 2 requires PQ');
  return { pattern, version, pq };
}

function webSocketImpl(options: LinkOptions): WebSocketConstructor {
  const impl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (!impl) throw new CommuCatError('invalid_argument', 'no global WebSocket: pass the WebSocket option');
  return impl;
}

/** Establishes one link with the device key `secret` (whose id is `deviceId`). */
export async function establishLink(url: string, options: LinkOptions, secret: Uint8Array, deviceId: string): Promise<Link> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const started = performance.now();
  const remaining = () => Math.max(1, timeoutMs - (performance.now() - started));
  const WebSocketImpl = webSocketImpl(options);
  const info = await getServerInfo(url, {
    ...(options.serverIdentity !== undefined ? { serverIdentity: options.serverIdentity } : {}),
    ...(options.fetch ? { fetch: options.fetch } : {}),
    timeoutMs,
  });
  const mode = chooseMode(info, options);
  const key =
    options.keyVersion === undefined
      ? info.noise_keys[info.noise_keys.length - 1]
      : info.noise_keys.find((k) => k.version === options.keyVersion);
  if (!key) throw new CommuCatError('no_key', `server-info lists no Noise key ${options.keyVersion ?? ''}`.trim());
  const prologue =
    options.prologue === undefined ? DEFAULT_PROLOGUE : typeof options.prologue === 'string' ? utf8(options.prologue) : options.prologue;
  const handshake = new ClientHandshake({
    ...mode,
    keyVersion: key.version,
    serverStatic: hexToBytes(key.public, 'noise key', 32),
    ...(mode.pq ? { serverKem: hexToBytes(info.post_quantum.kem_public_hex as string, 'kem_public_hex', 1184) } : {}),
    prologue,
    clientSecret: secret,
    random: randomBytes,
  });
  let wsUrl = connectUrl(url);
  if (options.accessToken !== undefined) wsUrl += `?access_token=${encodeURIComponent(options.accessToken)}`;
  let channel: Channel;
  try {
    channel = await Channel.open(WebSocketImpl, wsUrl, remaining());
  } catch (error) {
    handshake.destroy();
    throw error;
  }
  try {
    const t0 = performance.now();
    channel.send(handshake.message1);
    const message2 = await channel.next(remaining());
    let established;
    try {
      established = handshake.readMessage2(message2);
    } catch (error) {
      // Tell the server why, with the code it would use in our place.
      const code = error instanceof CommuCatError && error.code === 'decrypt_failed' ? 4401 : 4400;
      channel.fail(code, 'bad message 2');
      throw error;
    }
    if (established.message3) channel.send(established.message3);
    const handshakeMs = performance.now() - t0;
    const { sealer, opener } = clientTransport(established.keys);
    wipeSessionKeys(established.keys);
    const link: Link = { channel, sealer, opener, hello: established.hello, info, ...mode, handshakeMs };
    let welcome: unknown;
    try {
      welcome = JSON.parse(fromUtf8(opener.open(await channel.next(remaining()))));
    } catch (error) {
      if (error instanceof CommuCatError) {
        if (error.code === 'decrypt_failed') channel.fail(4401, 'decryption failure');
        throw error;
      }
      channel.fail(4400, 'bad welcome');
      throw new CommuCatError('protocol', 'the first server message is not JSON', { cause: error });
    }
    const w = welcome as Record<string, unknown>;
    if (w?.['type'] !== 'welcome' || w['session_id'] !== established.hello.session_id || w['device_id'] !== deviceId) {
      channel.fail(4400, 'bad welcome');
      throw new CommuCatError('protocol', 'the first server message is not the expected welcome');
    }
    return link;
  } catch (error) {
    handshake.destroy();
    channel.close(1000, 'handshake abandoned');
    throw error;
  }
}
