/**
 * One error type for everything the SDK refuses or the server reports, so that callers
 * can branch on `code` instead of parsing messages.
 */

/** What went wrong, as a stable string. */
export type ErrorCode =
  // Caller input.
  | 'invalid_argument'
  // HTTP and discovery.
  | 'http'
  | 'bad_response'
  | 'bad_signature'
  | 'pin_mismatch'
  | 'no_key'
  | 'pq_unavailable'
  | 'pq_required'
  // Network.
  | 'websocket'
  | 'timeout'
  | 'not_connected'
  | 'protocol'
  | 'bad_certificate'
  // Close codes of the server (docs/protocol.md §4.12), and their client-side twins.
  | 'malformed'
  | 'decrypt_failed'
  | 'policy'
  | 'unknown_key_version'
  | 'session_timeout'
  | 'replaced'
  | 'server_full'
  | 'server_shutdown'
  | 'counter_exhausted'
  | 'server_error'
  | 'closed'
  // Request-level errors the server sends on a live session (§4.10).
  | 'peer_offline'
  | 'too_large'
  | 'rate_limited'
  | 'bad_request';

const CLOSE_CODES: Readonly<Record<number, ErrorCode>> = {
  1001: 'server_shutdown',
  1008: 'counter_exhausted',
  1011: 'server_error',
  4400: 'malformed',
  4401: 'decrypt_failed',
  4403: 'policy',
  4404: 'unknown_key_version',
  4408: 'session_timeout',
  4409: 'replaced',
  4429: 'server_full',
};

const SERVER_ERRORS: ReadonlySet<string> = new Set([
  'peer_offline',
  'too_large',
  'rate_limited',
  'bad_request',
]);

export interface CommuCatErrorDetails {
  /** WebSocket close code, when the connection was closed with one. */
  closeCode?: number;
  /** HTTP status, for `http` errors. */
  status?: number;
  /** For `signal`/`relay` errors: the device the message was for. */
  to?: string;
  cause?: unknown;
}

export class CommuCatError extends Error {
  readonly code: ErrorCode;
  readonly closeCode: number | undefined;
  readonly status: number | undefined;
  readonly to: string | undefined;

  constructor(code: ErrorCode, message: string, details: CommuCatErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'CommuCatError';
    this.code = code;
    this.closeCode = details.closeCode;
    this.status = details.status;
    this.to = details.to;
  }
}

/** The error code a WebSocket close code stands for. */
export function closeCodeToError(code: number): ErrorCode {
  return CLOSE_CODES[code] ?? 'closed';
}

/** An error for a connection the server (or the network) closed. */
export function closedError(code: number, reason: string): CommuCatError {
  const text = reason ? `: ${reason}` : '';
  return new CommuCatError(closeCodeToError(code), `connection closed with code ${code}${text}`, {
    closeCode: code,
  });
}

/** The server's `{"type":"error","code":…}` as an error; unknown codes count as `bad_request`. */
export function serverError(code: unknown, detail: unknown, to?: string): CommuCatError {
  const known = typeof code === 'string' && SERVER_ERRORS.has(code) ? (code as ErrorCode) : 'bad_request';
  const text = typeof detail === 'string' ? detail : String(code);
  return new CommuCatError(known, text, to === undefined ? {} : { to });
}
