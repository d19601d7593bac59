/**
 * `GET /api/server-info` and the key bundle check of docs/protocol.md §2.3: nothing in
 * the document is trusted before the ML-DSA-65 signature over the rebuilt text verifies,
 * and with a pin the pinned key is the one that verifies.
 */
import { ml_dsa65 } from '@noble/post-quantum/ml-dsa.js';
import { hexToBytes, isHex, utf8 } from './bytes.js';
import { CommuCatError } from './errors.js';
import { fetchJson, joinUrl, type HttpOptions } from './http.js';

export const SIGNATURE_PUBLIC_LEN = 1952;
export const SIGNATURE_LEN = 3309;
const KEM_PUBLIC_LEN = 1184;

export interface NoiseKeyInfo {
  version: number;
  /** Hex of the X25519 public key. */
  public: string;
  valid_after: string;
  rotates_at: string;
  expires_at: string;
}

export interface PostQuantumInfo {
  enabled: boolean;
  kem_algorithm?: string;
  signature_algorithm: string;
  /** Absent when the server runs with the KEM off. */
  kem_public_hex?: string;
  signature_public_hex: string;
  key_bundle_signature_hex: string;
}

/** The verified discovery document (unknown fields are kept as the server sent them). */
export interface ServerInfo {
  domain: string;
  noise_public: string;
  noise_keys: NoiseKeyInfo[];
  device_ca_public: string;
  supported_patterns: string[];
  supported_versions: number[];
  session: { ttl_seconds: number; keepalive_interval: number };
  presence?: { ttl_seconds: number };
  device_rotation?: { enabled: boolean; min_interval_seconds: number; proof_ttl_seconds: number };
  pairing?: { auto_approve: boolean; pairing_ttl: number; max_auto_devices: number };
  post_quantum: PostQuantumInfo;
  endpoints?: { connect: string; stun: string[] };
  limits?: {
    max_request_body_bytes: number;
    max_signal_body_bytes: number;
    max_relay_data_bytes: number;
    relay_bytes_per_second: number;
    max_sessions: number;
    handshake_timeout_seconds: number;
  };
  [field: string]: unknown;
}

export interface ServerInfoOptions extends HttpOptions {
  /**
   * The server's ML-DSA-65 identity key (`device_ca_public`, hex) obtained out of band.
   * Without it the signature only proves that the document is self-consistent.
   */
  serverIdentity?: string;
}

function fail(what: string): never {
  throw new CommuCatError('bad_response', `server-info: ${what}`);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Checks the shape of every field the SDK relies on; refuses anything else. */
export function parseServerInfo(value: unknown): ServerInfo {
  if (!isObject(value)) fail('not a JSON object');
  if (typeof value['domain'] !== 'string' || value['domain'] === '') fail('domain');
  const keys = value['noise_keys'];
  if (!Array.isArray(keys) || keys.length === 0) fail('noise_keys is empty');
  for (const key of keys) {
    if (!isObject(key)) fail('noise_keys entry');
    const version = key['version'];
    if (typeof version !== 'number' || !Number.isInteger(version) || version < 0 || version > 0xffff_ffff) {
      fail('noise_keys[].version');
    }
    if (!isHex(key['public'], 32)) fail('noise_keys[].public');
    for (const t of ['valid_after', 'rotates_at', 'expires_at']) {
      if (typeof key[t] !== 'string') fail(`noise_keys[].${t}`);
    }
  }
  const pq = value['post_quantum'];
  if (!isObject(pq)) fail('post_quantum');
  if (typeof pq['enabled'] !== 'boolean') fail('post_quantum.enabled');
  if (!isHex(pq['signature_public_hex'], SIGNATURE_PUBLIC_LEN)) fail('post_quantum.signature_public_hex');
  if (!isHex(pq['key_bundle_signature_hex'], SIGNATURE_LEN)) fail('post_quantum.key_bundle_signature_hex');
  if (pq['kem_public_hex'] !== undefined && !isHex(pq['kem_public_hex'], KEM_PUBLIC_LEN)) {
    fail('post_quantum.kem_public_hex');
  }
  if (pq['enabled'] && pq['kem_public_hex'] === undefined) fail('post_quantum.kem_public_hex is missing');
  if (!isHex(value['device_ca_public'], SIGNATURE_PUBLIC_LEN)) fail('device_ca_public');
  const session = value['session'];
  if (!isObject(session) || typeof session['ttl_seconds'] !== 'number' || typeof session['keepalive_interval'] !== 'number') {
    fail('session');
  }
  return value as ServerInfo;
}

/** The signed text of §2.3, rebuilt from the document's own values. */
export function keyBundleText(info: Pick<ServerInfo, 'domain' | 'noise_keys' | 'post_quantum'>): string {
  const lines = ['commucat-keybundle-v1', `domain=${info.domain}`];
  for (const k of info.noise_keys) {
    lines.push(`noise=${k.version},${k.public},${k.valid_after},${k.rotates_at},${k.expires_at}`);
  }
  lines.push(`kem=${info.post_quantum.kem_public_hex ?? ''}`);
  return lines.join('\n');
}

/**
 * Verifies the key bundle signature of a parsed document. With `serverIdentity` the
 * pinned key verifies, and a document naming another identity key is refused.
 */
export function verifyServerInfo(info: ServerInfo, serverIdentity?: string): void {
  const published = info.post_quantum.signature_public_hex.toLowerCase();
  let verifier = published;
  if (serverIdentity !== undefined) {
    const pin = serverIdentity.toLowerCase();
    hexToBytes(pin, 'serverIdentity', SIGNATURE_PUBLIC_LEN);
    if (pin !== published || pin !== info.device_ca_public.toLowerCase()) {
      throw new CommuCatError('pin_mismatch', 'server-info names another identity key than the pinned one');
    }
    verifier = pin;
  }
  // Both fields name the one identity key (§1); a document where they differ would let
  // certificates be checked with a key the bundle signature never vouched for.
  if (info.device_ca_public.toLowerCase() !== published) {
    throw new CommuCatError('bad_response', 'server-info: device_ca_public differs from signature_public_hex');
  }
  const ok = ml_dsa65.verify(
    hexToBytes(info.post_quantum.key_bundle_signature_hex, 'key_bundle_signature_hex', SIGNATURE_LEN),
    utf8(keyBundleText(info)),
    hexToBytes(verifier, 'identity key', SIGNATURE_PUBLIC_LEN),
  );
  if (!ok) throw new CommuCatError('bad_signature', 'server-info: the key bundle signature does not verify');
}

/** Fetches `/api/server-info` from `url` (the daemon's base URL) and verifies it. */
export async function getServerInfo(url: string, options: ServerInfoOptions = {}): Promise<ServerInfo> {
  const body = await fetchJson(joinUrl(url, '/api/server-info'), { method: 'GET' }, options);
  const info = parseServerInfo(body);
  verifyServerInfo(info, options.serverIdentity);
  return info;
}
