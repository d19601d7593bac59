/**
 * The session object `connect` returns: typed messages over the encrypted transport
 * (docs/protocol.md §4.9), keepalives, reconnect with backoff, and assist refresh.
 *
 * Replies come in request order (§4.9), so requests that have an answer (`ping`,
 * `lookup`, `certify`) wait in one FIFO. `signal` and `relay` have no answer on success;
 * their errors are reported as `error` events. To tell a `certify` error from a
 * `signal` error, a `certify` that follows unanswered signals is preceded by a ping,
 * whose pong settles them.
 */
import { type AssistRequest, type AssistResponse, assistRefreshDelayMs, getAssist } from './assist.js';
import { fromBase64, fromUtf8, isHex, toBase64, utf8, wipe } from './bytes.js';
import { type Certificate, verifyCertificate } from './certificate.js';
import type { ChannelClose } from './channel.js';
import { Emitter } from './emitter.js';
import { CommuCatError, closedError, serverError } from './errors.js';
import type { ServerInfo } from './discovery.js';
import type { HandshakeVersion, Pattern } from './handshake.js';
import { establishLink, type Link, type LinkOptions } from './link.js';

export interface ReconnectOptions {
  /** First delay, in ms (default 250). */
  initialDelayMs?: number;
  /** Largest delay, in ms (default 30 000). */
  maxDelayMs?: number;
  /** Give up after this many failed attempts in a row (default: never). */
  maxAttempts?: number;
}

export interface SessionOptions extends LinkOptions {
  /** Send a ping every `keepalive_interval` seconds of message 2 (default true). */
  keepalive?: boolean;
  /** Reconnect with exponential backoff when the connection drops (default false). */
  reconnect?: boolean | ReconnectOptions;
  /**
   * Fetch `/api/p2p/assist` (with this request body when an object) on connect and
   * again at half of its credential lifetime; `session.assist` holds the latest.
   */
  assist?: boolean | AssistRequest;
}

export interface SessionEvents {
  /** A `signal` from another device. */
  signal: { from: string; body: unknown };
  /** `relay` bytes from another device. */
  relay: { from: string; data: Uint8Array };
  /** An error not tied to a returned promise (e.g. `peer_offline` for a `signal`). */
  error: CommuCatError;
  /** The connection ended; `willReconnect` says whether the session tries again. */
  close: { code: number; reason: string; willReconnect: boolean };
  /** A keepalive ping was answered. */
  keepalive: { rttMs: number };
  /** A new connection is up after a drop. */
  reconnect: { sessionId: string; attempt: number };
  /** Fresh assist advice. */
  assist: AssistResponse;
}

type Pending =
  | { kind: 'ping'; id: number; sentAt: number; resolve: (rtt: number) => void; reject: (e: Error) => void }
  | { kind: 'lookup'; device: string; resolve: (online: boolean) => void; reject: (e: Error) => void }
  | { kind: 'certify'; resolve: (c: Certificate) => void; reject: (e: Error) => void };

const DEFAULT_BODY_LIMIT = 16_384;
/** Closes after which reconnecting would only repeat the failure or fight another session. */
const FINAL_CLOSE_CODES = new Set([4403, 4409]);
const FINAL_ERRORS = new Set(['pin_mismatch', 'bad_signature', 'policy', 'pq_required', 'pq_unavailable', 'invalid_argument', 'no_key']);
const ASSIST_RETRY_MS = 5_000;

export class Session extends Emitter<SessionEvents> {
  /** Hex of the device's static X25519 public key: its address for `signal` and `relay`. */
  readonly deviceId: string;
  private readonly url: string;
  private readonly options: SessionOptions;
  private readonly secret: Uint8Array;
  private link: Link | null;
  private pending: Pending[] = [];
  /** `signal`/`relay` sent since the last request with an answer. */
  private unanswered = 0;
  private nextPingId = 1;
  private keepaliveTimer: ReturnType<typeof setInterval> | undefined;
  private keepalivePing: number | undefined;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private assistTimer: ReturnType<typeof setTimeout> | undefined;
  private latestAssist: AssistResponse | undefined;
  private closing = false;
  private closeEmitted = false;

  /**
   * Use `connect()`; the session takes ownership of `secret`.
   * @internal
   */
  constructor(url: string, options: SessionOptions, secret: Uint8Array, deviceId: string, link: Link) {
    super();
    this.url = url;
    this.options = options;
    this.secret = secret;
    this.deviceId = deviceId;
    this.link = link;
    this.attach(link);
  }

  /** Session id of the current connection (message 2). */
  get sessionId(): string {
    return this.current().hello.session_id;
  }

  /** Whether the current connection is post-quantum (hybrid). */
  get pq(): boolean {
    return this.current().pq;
  }

  get pattern(): Pattern {
    return this.current().pattern;
  }

  get version(): HandshakeVersion {
    return this.current().version;
  }

  /** The verified server-info of the current connection. */
  get serverInfo(): ServerInfo {
    return this.current().info;
  }

  /** Handshake time of the current connection, in ms. */
  get handshakeMs(): number {
    return this.current().handshakeMs;
  }

  get ttlSeconds(): number {
    return this.current().hello.ttl_seconds;
  }

  get keepaliveInterval(): number {
    return this.current().hello.keepalive_interval;
  }

  get connected(): boolean {
    return this.link !== null && this.link.channel.closed === null;
  }

  /** The latest assist advice (with the `assist` option). */
  get assist(): AssistResponse | undefined {
    return this.latestAssist;
  }

  private current(): Link {
    if (!this.link) throw new CommuCatError('not_connected', 'the session is not connected');
    return this.link;
  }

  /** Sends a JSON value to another device (`body` ≤ 16 KiB as JSON). Errors come as `error` events. */
  signal(to: string, body: unknown): void {
    const device = checkDevice(to, 'to');
    const json = JSON.stringify(body);
    if (json === undefined) throw new CommuCatError('invalid_argument', 'signal body is not JSON');
    const limit = this.link?.info.limits?.max_signal_body_bytes ?? DEFAULT_BODY_LIMIT;
    if (utf8(json).length > limit) throw new CommuCatError('too_large', `signal body over ${limit} bytes`);
    this.sendRaw(`{"type":"signal","to":"${device}","body":${json}}`);
    this.unanswered += 1;
  }

  /** Sends bytes through the server (the fallback path when P2P fails). */
  relay(to: string, data: Uint8Array): void {
    const device = checkDevice(to, 'to');
    if (!(data instanceof Uint8Array)) throw new CommuCatError('invalid_argument', 'relay data must be a Uint8Array');
    const limit = this.link?.info.limits?.max_relay_data_bytes ?? DEFAULT_BODY_LIMIT;
    if (data.length > limit) throw new CommuCatError('too_large', `relay data over ${limit} bytes`);
    this.sendRaw(JSON.stringify({ type: 'relay', to: device, data: toBase64(data) }));
    this.unanswered += 1;
  }

  /** Whether `device` has a live session now. */
  lookup(device: string): Promise<boolean> {
    const d = checkDevice(device, 'device');
    return new Promise((resolve, reject) => {
      this.request(JSON.stringify({ type: 'lookup', device: d }), { kind: 'lookup', device: d, resolve, reject });
    });
  }

  /** Round-trip time of one ping, in ms. */
  ping(): Promise<number> {
    return new Promise((resolve, reject) => {
      const id = this.nextPingId++;
      this.request(`{"type":"ping","id":${id}}`, { kind: 'ping', id, sentAt: performance.now(), resolve, reject });
    });
  }

  /** A device certificate for this device, verified with the server's identity key. */
  certify(): Promise<Certificate> {
    if (this.unanswered > 0) {
      // Settles the earlier signals first, so that an error after this is certify's.
      this.ping().catch(() => {});
    }
    return new Promise((resolve, reject) => {
      this.request('{"type":"certify"}', { kind: 'certify', resolve, reject });
    });
  }

  /** Ends the session (no reconnect) and wipes its keys. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.assistTimer);
    const link = this.link;
    if (link) {
      link.channel.close(1000, 'closed by the client');
      // Bounded: on a dead network the socket may never report its close.
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([link.channel.socketClosed, new Promise((r) => (timer = setTimeout(r, 2_000)))]);
      clearTimeout(timer);
    } else if (!this.closeEmitted) {
      this.closeEmitted = true;
      this.emit('close', { code: 1000, reason: 'closed by the client', willReconnect: false });
    }
    wipe(this.secret);
  }

  private sendRaw(json: string): void {
    const link = this.current();
    link.channel.send(link.sealer.seal(utf8(json)));
  }

  private request(json: string, entry: Pending): void {
    try {
      this.sendRaw(json);
    } catch (error) {
      entry.reject(error as Error);
      return;
    }
    this.unanswered = 0;
    this.pending.push(entry);
  }

  private attach(link: Link): void {
    link.channel.attach(
      (bytes) => this.onFrame(link, bytes),
      (close) => this.onLinkClosed(link, close),
    );
    if (this.options.keepalive !== false) {
      const intervalMs = Math.max(1, link.hello.keepalive_interval) * 1000;
      this.keepaliveTimer = setInterval(() => this.keepalive(link, intervalMs), intervalMs);
    }
  }

  private keepalive(link: Link, intervalMs: number): void {
    if (link !== this.link) return;
    const outstanding = this.keepalivePing;
    if (outstanding !== undefined && performance.now() - outstanding > 2 * intervalMs) {
      // Two intervals without a pong: the path is dead even if no close arrived.
      link.channel.close(4408, 'keepalive timeout');
      return;
    }
    if (outstanding !== undefined) return;
    this.keepalivePing = performance.now();
    this.ping().then(
      (rttMs) => {
        this.keepalivePing = undefined;
        this.emit('keepalive', { rttMs });
      },
      () => {
        this.keepalivePing = undefined;
      },
    );
  }

  private onFrame(link: Link, bytes: Uint8Array): void {
    if (link !== this.link) return;
    let message: Record<string, unknown>;
    try {
      const value: unknown = JSON.parse(fromUtf8(link.opener.open(bytes)));
      if (typeof value !== 'object' || value === null || Array.isArray(value) || typeof (value as { type?: unknown }).type !== 'string') {
        throw new CommuCatError('protocol', 'server message is not a typed JSON object');
      }
      message = value as Record<string, unknown>;
    } catch (error) {
      const decrypt = error instanceof CommuCatError && error.code === 'decrypt_failed';
      this.fail(link, decrypt ? 4401 : 4400, decrypt ? error : new CommuCatError('protocol', 'undecodable server message', { cause: error }));
      return;
    }
    try {
      this.dispatch(message);
    } catch (error) {
      this.fail(link, 4400, error as CommuCatError);
    }
  }

  private dispatch(message: Record<string, unknown>): void {
    switch (message['type']) {
      case 'signal':
      case 'relay': {
        // A malformed delivery is dropped, not fatal: the request FIFO is still in step.
        let event: { from: string; body: unknown } | { from: string; data: Uint8Array };
        try {
          const from = checkFrom(message['from']);
          event =
            message['type'] === 'signal'
              ? { from, body: message['body'] }
              : { from, data: fromBase64(message['data'] as string, 'relay data') };
        } catch (error) {
          this.emit('error', error as CommuCatError);
          return;
        }
        if ('data' in event) this.emit('relay', event);
        else this.emit('signal', event);
        return;
      }
      case 'pong': {
        const head = this.expect('ping');
        if (head.id !== message['id']) throw new CommuCatError('protocol', 'pong for another ping');
        head.resolve(performance.now() - head.sentAt);
        return;
      }
      case 'presence': {
        const head = this.expect('lookup');
        if (head.device !== message['device'] || typeof message['online'] !== 'boolean') {
          throw new CommuCatError('protocol', 'presence for another lookup');
        }
        head.resolve(message['online']);
        return;
      }
      case 'certificate': {
        const head = this.expect('certify');
        try {
          const info = this.current().info;
          head.resolve(verifyCertificate(message, info.domain, this.deviceId, info.device_ca_public));
        } catch (error) {
          head.reject(error as Error);
        }
        return;
      }
      case 'error': {
        const head = this.pending[0];
        if (head?.kind === 'certify') {
          // Nothing unanswered precedes a certify (see the module comment).
          this.pending.shift();
          head.reject(serverError(message['code'], message['detail']));
          return;
        }
        const detail = typeof message['detail'] === 'string' ? message['detail'] : '';
        const to = /^[0-9a-f]{64}\b/.exec(detail)?.[0];
        this.emit('error', serverError(message['code'], message['detail'], to));
        return;
      }
      default:
        // A newer server may send more; this client has no use for it.
        return;
    }
  }

  private expect<K extends Pending['kind']>(kind: K): Extract<Pending, { kind: K }> {
    const head = this.pending[0];
    if (!head || head.kind !== kind) throw new CommuCatError('protocol', `unexpected ${kind} answer`);
    this.pending.shift();
    return head as Extract<Pending, { kind: K }>;
  }

  private fail(link: Link, code: number, error: CommuCatError): void {
    this.emit('error', error);
    link.channel.close(code, error.message.slice(0, 100));
  }

  private onLinkClosed(link: Link, close: ChannelClose): void {
    if (link !== this.link) return;
    this.link = null;
    clearInterval(this.keepaliveTimer);
    this.keepalivePing = undefined;
    link.sealer.destroy();
    link.opener.destroy();
    const pending = this.pending;
    this.pending = [];
    this.unanswered = 0;
    const error = closedError(close.code, close.reason);
    for (const entry of pending) entry.reject(error);
    const willReconnect = Boolean(this.options.reconnect) && !this.closing && !FINAL_CLOSE_CODES.has(close.code);
    if (!willReconnect) {
      clearTimeout(this.assistTimer);
      this.closeEmitted = true;
    }
    this.emit('close', { code: close.code, reason: close.reason, willReconnect });
    if (willReconnect) this.scheduleReconnect(0);
    else if (!this.closing) wipe(this.secret);
  }

  private scheduleReconnect(attempt: number): void {
    const r = typeof this.options.reconnect === 'object' ? this.options.reconnect : {};
    const initial = r.initialDelayMs ?? 250;
    const max = r.maxDelayMs ?? 30_000;
    // Jitter spreads the clients of a restarted server over time.
    const delay = Math.min(max, initial * 2 ** attempt) * (0.8 + 0.4 * Math.random());
    this.reconnectTimer = setTimeout(() => void this.reconnect(attempt), delay);
  }

  private async reconnect(attempt: number): Promise<void> {
    if (this.closing) return;
    let link: Link;
    try {
      link = await establishLink(this.url, this.options, this.secret, this.deviceId);
    } catch (error) {
      if (this.closing) return;
      const e = error instanceof CommuCatError ? error : new CommuCatError('websocket', String(error), { cause: error });
      this.emit('error', e);
      const r = typeof this.options.reconnect === 'object' ? this.options.reconnect : {};
      const exhausted = r.maxAttempts !== undefined && attempt + 1 >= r.maxAttempts;
      if (FINAL_ERRORS.has(e.code) || (e.closeCode !== undefined && FINAL_CLOSE_CODES.has(e.closeCode)) || exhausted) {
        this.closeEmitted = true;
        clearTimeout(this.assistTimer);
        this.emit('close', { code: e.closeCode ?? 1006, reason: e.message, willReconnect: false });
        wipe(this.secret);
        return;
      }
      this.scheduleReconnect(attempt + 1);
      return;
    }
    if (this.closing) {
      link.channel.close(1000, 'closed by the client');
      return;
    }
    this.link = link;
    this.attach(link);
    try {
      await this.confirm();
    } catch {
      // The link closed again; its close event has scheduled the next attempt.
      return;
    }
    this.emit('reconnect', { sessionId: link.hello.session_id, attempt: attempt + 1 });
  }

  /**
   * IK: the server registers the session once a client message opens (§4.8); the pong
   * says it has. XK sessions are registered after message 3, so this is a no-op.
   */
  async confirm(): Promise<void> {
    if (this.current().pattern === 'IK') await this.ping();
  }

  /** Starts the assist refresh loop; resolves once the first advice is in. */
  async startAssist(request: AssistRequest | undefined): Promise<void> {
    const fetchOnce = () =>
      getAssist(this.url, request, {
        ...(this.options.accessToken !== undefined ? { accessToken: this.options.accessToken } : {}),
        ...(this.options.fetch ? { fetch: this.options.fetch } : {}),
        ...(this.options.timeoutMs !== undefined ? { timeoutMs: this.options.timeoutMs } : {}),
      });
    const schedule = (delay: number) => {
      if (this.closing || this.closeEmitted) return;
      this.assistTimer = setTimeout(() => {
        fetchOnce().then(
          (advice) => {
            this.latestAssist = advice;
            this.emit('assist', advice);
            schedule(assistRefreshDelayMs(advice));
          },
          (error: unknown) => {
            this.emit('error', error instanceof CommuCatError ? error : new CommuCatError('http', String(error)));
            schedule(ASSIST_RETRY_MS);
          },
        );
      }, delay);
    };
    const advice = await fetchOnce();
    this.latestAssist = advice;
    this.emit('assist', advice);
    schedule(assistRefreshDelayMs(advice));
  }
}

function checkDevice(device: string, what: string): string {
  if (!isHex(device, 32)) throw new CommuCatError('invalid_argument', `${what}: a device id is 64 hex digits`);
  return device.toLowerCase();
}

function checkFrom(from: unknown): string {
  if (!isHex(from, 32)) throw new CommuCatError('protocol', 'message from a malformed device id');
  return from as string;
}

