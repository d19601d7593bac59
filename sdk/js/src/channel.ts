/**
 * A binary WebSocket with the contract's framing rules (§4.1) enforced on the client:
 * a text frame or a message over 65 551 bytes ends the connection with 4400. Messages
 * are queued until a consumer reads them, so none is lost between the handshake and
 * the session taking over.
 */
import { CommuCatError, closedError } from './errors.js';
import { MAX_CIPHERTEXT_LEN } from './transport.js';

/** The part of the WebSocket API the SDK uses (browsers' and the `ws` package's). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: string, listener: (event: any) => void): void;
  removeEventListener(type: string, listener: (event: any) => void): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

const OPEN = 1;

export interface ChannelClose {
  code: number;
  reason: string;
}

export class Channel {
  private readonly socket: WebSocketLike;
  private readonly queue: Uint8Array[] = [];
  private waiter: { resolve: (m: Uint8Array) => void; reject: (e: Error) => void } | null = null;
  private consumer: ((message: Uint8Array) => void) | null = null;
  private closeListener: ((close: ChannelClose) => void) | null = null;
  private lastError = '';
  /** Set once the socket is closed (or we decided it is). */
  closed: ChannelClose | null = null;
  /** Resolves when the socket itself has reported its close. */
  readonly socketClosed: Promise<void>;
  private markSocketClosed: () => void = () => {};

  private constructor(socket: WebSocketLike) {
    this.socket = socket;
    this.socketClosed = new Promise((resolve) => {
      this.markSocketClosed = resolve;
    });
    socket.binaryType = 'arraybuffer';
    socket.addEventListener('message', (event: { data: unknown }) => this.onMessage(event.data));
    socket.addEventListener('close', (event: { code?: number; reason?: string }) => {
      this.markSocketClosed();
      this.onClosed({ code: event.code ?? 1006, reason: event.reason ?? '' });
    });
    // An error event is always followed by close, which carries the code. The listener
    // must exist all the same: an EventEmitter-based WebSocket (the `ws` package) throws
    // an 'error' nobody listens to.
    socket.addEventListener('error', (event: { message?: unknown }) => {
      // Browsers say nothing here; `ws` says why (e.g. "Unexpected server response: 429").
      if (typeof event?.message === 'string') this.lastError = event.message;
    });
  }

  /** Opens `url`, bounded by `timeoutMs`. */
  static open(WebSocketImpl: WebSocketConstructor, url: string, timeoutMs: number): Promise<Channel> {
    return new Promise((resolve, reject) => {
      let socket: WebSocketLike;
      try {
        socket = new WebSocketImpl(url);
      } catch (cause) {
        reject(new CommuCatError('websocket', `cannot open ${url}`, { cause }));
        return;
      }
      const channel = new Channel(socket);
      let settled = false;
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        channel.close(1000, 'connect timeout');
        reject(new CommuCatError('timeout', `${url}: no WebSocket in ${timeoutMs} ms`));
      }, timeoutMs);
      socket.addEventListener('open', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(channel);
      });
      channel.closeListener = (close) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(
          close.code === 1006
            ? new CommuCatError('websocket', `${url}: the WebSocket could not be opened ${channel.lastError}`.trim(), {
                closeCode: 1006,
                // `ws` names the HTTP status of a refused upgrade (401, 429); browsers do not.
                ...upgradeStatus(channel.lastError),
              })
            : closedError(close.code, close.reason),
        );
      };
    });
  }

  private onMessage(data: unknown): void {
    if (this.closed) return;
    if (typeof data === 'string') {
      this.fail(4400, 'text frame');
      return;
    }
    let bytes: Uint8Array;
    if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
    else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    else {
      this.fail(4400, 'unexpected frame type');
      return;
    }
    if (bytes.length > MAX_CIPHERTEXT_LEN) {
      this.fail(4400, 'message too large');
      return;
    }
    if (this.waiter) {
      const waiter = this.waiter;
      this.waiter = null;
      waiter.resolve(bytes);
    } else if (this.consumer) {
      this.consumer(bytes);
    } else {
      this.queue.push(bytes);
    }
  }

  private onClosed(close: ChannelClose): void {
    if (this.closed) return;
    this.closed = close;
    if (this.waiter) {
      const waiter = this.waiter;
      this.waiter = null;
      waiter.reject(closedError(close.code, close.reason));
    }
    this.closeListener?.(close);
  }

  /** Ends the connection from our side for a protocol violation by the peer. */
  fail(code: number, reason: string): void {
    this.close(code, reason);
  }

  /** The next message (handshake phase); rejects when the connection closes. */
  next(timeoutMs: number): Promise<Uint8Array> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.closed) return Promise.reject(closedError(this.closed.code, this.closed.reason));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new CommuCatError('timeout', `no answer from the server in ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = {
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  /** Hands every further message (queued ones first) to `consumer`, and the close to `onClose`. */
  attach(consumer: (message: Uint8Array) => void, onClose: (close: ChannelClose) => void): void {
    this.consumer = consumer;
    this.closeListener = onClose;
    while (this.queue.length > 0 && this.consumer === consumer) {
      consumer(this.queue.shift() as Uint8Array);
    }
    if (this.closed) onClose(this.closed);
  }

  send(bytes: Uint8Array): void {
    // The server may close right after the upgrade (4429): report its code, not ours.
    if (this.closed) throw closedError(this.closed.code, this.closed.reason);
    // Closing but its close event not yet delivered: discard, as browsers do; that event
    // follows and settles everything waiting with the server's code.
    if (this.socket.readyState !== OPEN) return;
    this.socket.send(bytes);
  }

  /**
   * Closes with `code`. The local view is closed at once (the socket's own close event
   * may come later or, on a dead network, never).
   */
  close(code: number, reason: string): void {
    try {
      this.socket.close(code, reason);
    } catch {
      // Already closing.
    }
    this.onClosed({ code, reason });
  }
}

function upgradeStatus(message: string): { status?: number } {
  const match = /Unexpected server response: (\d{3})/.exec(message);
  return match ? { status: Number(match[1]) } : {};
}
