// Shared test helpers: WebSocket wrappers that tamper with one handshake message, and
// bounded waits.
import WebSocket from 'ws';

export { WebSocket };

/** A WebSocket that flips one byte of the `index`-th message it sends (0-based). */
export function tamperSend(index, at = -1) {
  return class extends WebSocket {
    #sent = 0;
    send(data, ...rest) {
      if (this.#sent++ === index) {
        const copy = new Uint8Array(data);
        copy[at < 0 ? copy.length + at : at] ^= 0x01;
        data = copy;
      }
      return super.send(data, ...rest);
    }
  };
}

/** A WebSocket that flips one byte of the `index`-th binary message it receives. */
export function tamperReceive(index, at = -1) {
  return class extends WebSocket {
    #received = 0;
    addEventListener(type, listener, ...rest) {
      if (type !== 'message') return super.addEventListener(type, listener, ...rest);
      return super.addEventListener(
        type,
        (event) => {
          if (typeof event.data !== 'string' && this.#received++ === index) {
            const copy = new Uint8Array(event.data.slice(0));
            copy[at < 0 ? copy.length + at : at] ^= 0x01;
            listener({ data: copy.buffer });
            return;
          }
          listener(event);
        },
        ...rest,
      );
    }
  };
}

/** Resolves with the next `type` event of `emitter`, or rejects after `ms`. */
export function nextEvent(emitter, type, ms = 10_000, filter = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${type} event in ${ms} ms`));
    }, ms);
    const off = emitter.on(type, (event) => {
      if (!filter(event)) return;
      clearTimeout(timer);
      off();
      resolve(event);
    });
  });
}

/** Opens a raw WebSocket to `url` and resolves with the close code the server sends after `frames`. */
export function closeCodeFor(wsUrl, frames, ms = 15_000) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl);
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`no close in ${ms} ms`));
    }, ms);
    ws.on('open', () => {
      for (const frame of frames) ws.send(frame);
    });
    ws.on('close', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
    ws.on('error', () => {});
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
