/**
 * The small HTTP layer of discovery and assist: URL joining as the Rust client does it,
 * a bounded fetch, and problem+json errors turned into `CommuCatError`.
 */
import { CommuCatError } from './errors.js';

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export interface HttpOptions {
  /** A `fetch` to use instead of the global one. */
  fetch?: FetchLike;
  /** Bound on the whole request, in milliseconds (default 10 000). */
  timeoutMs?: number;
  /** Cancels the request. */
  signal?: AbortSignal;
}

export const DEFAULT_TIMEOUT_MS = 10_000;

/** `base` (an http or https URL with a host) with `path` appended. */
export function joinUrl(base: string, path: string): string {
  let url: URL;
  try {
    url = new URL(base);
  } catch (cause) {
    throw new CommuCatError('invalid_argument', `invalid URL ${JSON.stringify(base)}`, { cause });
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || !url.host) {
    throw new CommuCatError('invalid_argument', `invalid URL ${JSON.stringify(base)}: expected http(s)://host[:port]`);
  }
  return `${base.replace(/\/+$/, '')}${path}`;
}

/** The WebSocket URL of `/api/connect` under `base` (ws:// for http, wss:// for https). */
export function connectUrl(base: string): string {
  const http = joinUrl(base, '/api/connect');
  return http.startsWith('https://') ? `wss://${http.slice(8)}` : `ws://${http.slice(7)}`;
}

/** Fetches `url` and returns its JSON body, with a timeout and typed errors. */
export async function fetchJson(url: string, init: RequestInit, options: HttpOptions = {}): Promise<unknown> {
  const doFetch = options.fetch ?? globalThis.fetch;
  if (typeof doFetch !== 'function') {
    throw new CommuCatError('invalid_argument', 'no global fetch: pass the fetch option');
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  const onAbort = () => controller.abort();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    let response: Response;
    try {
      response = await doFetch(url, { ...init, signal: controller.signal });
    } catch (cause) {
      if (controller.signal.aborted && !options.signal?.aborted) {
        throw new CommuCatError('timeout', `${url}: no answer in ${timeoutMs} ms`, { cause });
      }
      throw new CommuCatError('http', `${url}: ${(cause as Error)?.message ?? cause}`, { cause });
    }
    const text = await response.text();
    if (!response.ok) {
      let detail = text.slice(0, 200);
      try {
        const problem = JSON.parse(text) as { detail?: unknown };
        if (typeof problem.detail === 'string') detail = problem.detail;
      } catch {
        // Not problem+json: keep the start of the body.
      }
      throw new CommuCatError('http', `${url}: HTTP ${response.status}: ${detail}`, { status: response.status });
    }
    try {
      return JSON.parse(text) as unknown;
    } catch (cause) {
      throw new CommuCatError('bad_response', `${url}: the body is not JSON`, { cause });
    }
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
  }
}
