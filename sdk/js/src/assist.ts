/**
 * `GET`/`POST /api/p2p/assist` (docs/protocol.md §2.4): per-client advice with ICE
 * credentials and `ice.ice_servers` ready for `new RTCPeerConnection({iceServers})`.
 */
import { CommuCatError } from './errors.js';
import { fetchJson, joinUrl, type HttpOptions } from './http.js';

export interface AssistRequest {
  peer_hint?: string;
  paths?: { address: string; port: number; id?: string; priority?: number; server_name?: string }[];
  prefer_reality?: boolean;
  fec?: { mtu?: number; repair_overhead?: number };
  min_paths?: number;
}

/** One entry of `ice.ice_servers`: the shape `RTCIceServer` has. */
export interface IceServer {
  urls: string[];
  username?: string;
  credential?: string;
}

export interface AssistResponse {
  noise: {
    pattern: string;
    prologue_hex: string;
    server_static_public_hex: string;
    key_version: number;
    /** A throwaway X25519 key pair: not a device identity. */
    device_seed_hex: string;
    static_public_hex: string;
  };
  pq: {
    identity_public_hex: string;
    signed_prekey_public_hex: string;
    kem_public_hex: string;
    signature_public_hex: string;
  } | null;
  ice: {
    username_fragment: string;
    password: string;
    ttl_secs: number;
    expires_at: string;
    keepalive_interval_secs: number;
    trickle: boolean;
    servers: {
      urls: string[];
      username: string;
      credential: string;
      ttl_secs: number | null;
      expires_at: string | null;
      realm?: string | null;
    }[];
    ice_servers: IceServer[];
    lite_candidates: {
      candidate: string;
      component: number;
      protocol: string;
      foundation: string;
      priority: number;
      ip: string;
      port: number;
      typ: string;
    }[];
  };
  transports: {
    path_id: string;
    transport: string;
    address: string;
    port: number;
    priority: number;
    resistance: string;
    latency: string;
    throughput: string;
  }[];
  multipath: {
    fec_mtu: number;
    fec_overhead: number;
    primary_path: string;
    sample_segments: Record<string, { total: number; repair: number }>;
  };
  obfuscation: Record<string, unknown>;
  security: Record<string, number>;
  [field: string]: unknown;
}

export interface AssistOptions extends HttpOptions {
  /** For a daemon with `[auth] required`: sent as `Authorization: Bearer`. */
  accessToken?: string;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Checks what callers build on: the ICE part and the Noise key advice. */
export function parseAssist(value: unknown): AssistResponse {
  const fail = (what: string): never => {
    throw new CommuCatError('bad_response', `assist: ${what}`);
  };
  if (!isObject(value)) fail('not a JSON object');
  const v = value as Record<string, unknown>;
  const ice = v['ice'];
  if (!isObject(ice)) fail('ice');
  const i = ice as Record<string, unknown>;
  if (typeof i['username_fragment'] !== 'string' || typeof i['password'] !== 'string') fail('ice credentials');
  if (typeof i['ttl_secs'] !== 'number' || i['ttl_secs'] < 0) fail('ice.ttl_secs');
  const servers = i['ice_servers'];
  if (!Array.isArray(servers)) fail('ice.ice_servers');
  for (const s of servers as unknown[]) {
    if (!isObject(s) || !Array.isArray(s['urls']) || !s['urls'].every((u) => typeof u === 'string')) {
      fail('ice.ice_servers[].urls');
    }
  }
  if (!isObject(v['noise'])) fail('noise');
  return v as AssistResponse;
}

/**
 * Fetches P2P advice from `url` (the daemon's base URL): `GET` without `request`,
 * `POST` with it as JSON.
 */
export async function getAssist(url: string, request?: AssistRequest, options: AssistOptions = {}): Promise<AssistResponse> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (options.accessToken !== undefined) headers['authorization'] = `Bearer ${options.accessToken}`;
  const init: RequestInit =
    request === undefined
      ? { method: 'GET', headers }
      : { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify(request) };
  return parseAssist(await fetchJson(joinUrl(url, '/api/p2p/assist'), init, options));
}

/** When to fetch fresh advice: about half of the shortest credential lifetime (§3.2). */
export function assistRefreshDelayMs(assist: AssistResponse): number {
  let ttl = assist.ice.ttl_secs;
  for (const server of assist.ice.servers ?? []) {
    if (typeof server.ttl_secs === 'number' && server.ttl_secs < ttl) ttl = server.ttl_secs;
  }
  return Math.max(1, ttl) * 500;
}
