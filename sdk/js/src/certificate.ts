/**
 * Device certificates of docs/protocol.md §4.9: ML-DSA-65 by the server's identity key
 * over a fixed text, checked here with the key the verified server-info vouches for.
 */
import { ml_dsa65 } from '@noble/post-quantum/ml-dsa.js';
import { hexToBytes, isHex, utf8 } from './bytes.js';
import { CommuCatError } from './errors.js';
import { SIGNATURE_LEN, SIGNATURE_PUBLIC_LEN } from './discovery.js';

export interface Certificate {
  deviceId: string;
  notBefore: string;
  notAfter: string;
  signatureHex: string;
}

const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;

export function certificateText(domain: string, deviceId: string, notBefore: string, notAfter: string): string {
  return `commucat-device-cert-v1\ndomain=${domain}\ndevice=${deviceId}\nnot_before=${notBefore}\nnot_after=${notAfter}`;
}

/**
 * Checks a `certificate` message for `deviceId` against the identity key `caPublicHex`
 * and returns it typed.
 */
export function verifyCertificate(
  message: Record<string, unknown>,
  domain: string,
  deviceId: string,
  caPublicHex: string,
): Certificate {
  const bad = (what: string): never => {
    throw new CommuCatError('bad_certificate', `certificate: ${what}`);
  };
  const { device_id: device, not_before: notBefore, not_after: notAfter, signature_hex: signature } = message;
  if (device !== deviceId) bad('issued for another device');
  if (typeof notBefore !== 'string' || !TIMESTAMP.test(notBefore)) bad('not_before');
  if (typeof notAfter !== 'string' || !TIMESTAMP.test(notAfter)) bad('not_after');
  if (!isHex(signature, SIGNATURE_LEN)) bad('signature_hex');
  const text = certificateText(domain, deviceId, notBefore as string, notAfter as string);
  const ok = ml_dsa65.verify(
    hexToBytes(signature as string, 'signature_hex'),
    utf8(text),
    hexToBytes(caPublicHex, 'device_ca_public', SIGNATURE_PUBLIC_LEN),
  );
  if (!ok) bad('the signature does not verify with the server identity key');
  return { deviceId, notBefore: notBefore as string, notAfter: notAfter as string, signatureHex: signature as string };
}
