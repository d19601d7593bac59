/**
 * Byte helpers with strict input checks: every value that crosses the wire is decoded
 * here, so a sloppy encoding is refused in one place.
 */
import { CommuCatError } from './errors.js';

const HEX = /^(?:[0-9a-fA-F]{2})*$/;

export function bytesToHex(bytes: Uint8Array): string {
  let out = '';
  for (const b of bytes) out += b.toString(16).padStart(2, '0');
  return out;
}

/** Decodes hex of exactly `length` bytes when given (either case accepted). */
export function hexToBytes(hex: string, what: string, length?: number): Uint8Array {
  if (typeof hex !== 'string' || !HEX.test(hex)) {
    throw new CommuCatError('invalid_argument', `${what}: expected hex`);
  }
  if (length !== undefined && hex.length !== length * 2) {
    throw new CommuCatError('invalid_argument', `${what}: expected ${length} bytes of hex, got ${hex.length / 2}`);
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function isHex(value: unknown, length: number): value is string {
  return typeof value === 'string' && value.length === length * 2 && HEX.test(value);
}

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

/** Decodes UTF-8, refusing invalid sequences instead of replacing them. */
export function fromUtf8(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

export function toBase64(bytes: Uint8Array): string {
  let binary = '';
  // Chunked so that large inputs do not overflow the argument limit of fromCharCode.
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Standard base64 with canonical padding, as the server requires (§4.9). */
export function fromBase64(text: string, what: string): Uint8Array {
  if (typeof text !== 'string' || !BASE64.test(text)) {
    throw new CommuCatError('protocol', `${what}: expected base64`);
  }
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** Overwrites secrets that are no longer needed; JS cannot promise more than that. */
export function wipe(...buffers: (Uint8Array | undefined | null)[]): void {
  for (const b of buffers) b?.fill(0);
}
