/**
 * A device key in a file (Node only): 64 hex digits, created with mode 0600 when
 * missing. Same format as `commucat-cli --key-file`, so both can share one device.
 */
import { open, readFile } from 'node:fs/promises';
import { bytesToHex, hexToBytes } from './bytes.js';
import { CommuCatError } from './errors.js';
import { generateDeviceKey, type DeviceKeyStore } from './keystore.js';

export function fileKeyStore(path: string): DeviceKeyStore {
  return {
    async load(): Promise<Uint8Array> {
      try {
        const text = await readFile(path, 'utf8');
        return hexToBytes(text.trim(), `device key file ${path}`, 32);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
          if (error instanceof CommuCatError) throw error;
          throw new CommuCatError('invalid_argument', `device key file ${path}: ${(error as Error).message}`);
        }
      }
      const key = generateDeviceKey();
      // 'wx': never overwrite a key another process created meanwhile.
      let file;
      try {
        file = await open(path, 'wx', 0o600);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'EEXIST') return this.load();
        throw new CommuCatError('invalid_argument', `device key file ${path}: ${(error as Error).message}`);
      }
      try {
        await file.writeFile(`${bytesToHex(key)}\n`);
        await file.sync();
      } finally {
        await file.close();
      }
      return key;
    },
  };
}
