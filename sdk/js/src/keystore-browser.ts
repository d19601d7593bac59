/**
 * A device key in IndexedDB (browsers). The key is stored as raw bytes under one
 * record; anything able to run script on the origin can read it, as with any web key.
 */
import { CommuCatError } from './errors.js';
import { generateDeviceKey, type DeviceKeyStore } from './keystore.js';

const STORE = 'keys';

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

export function indexedDbKeyStore(name = 'commucat-device', record = 'device'): DeviceKeyStore {
  return {
    async load(): Promise<Uint8Array> {
      if (typeof indexedDB === 'undefined') {
        throw new CommuCatError('invalid_argument', 'IndexedDB is not available here');
      }
      const open = indexedDB.open(name, 1);
      open.onupgradeneeded = () => open.result.createObjectStore(STORE);
      const db = await request(open);
      try {
        const tx = db.transaction(STORE, 'readwrite');
        const store = tx.objectStore(STORE);
        const existing: unknown = await request(store.get(record));
        if (existing instanceof Uint8Array && existing.length === 32) return existing;
        if (existing !== undefined) throw new CommuCatError('invalid_argument', `IndexedDB ${name} holds no 32-byte key`);
        const key = generateDeviceKey();
        try {
          // `add`, not `put`: never overwrite a key another tab stored meanwhile.
          await request(store.add(key, record));
          return key;
        } catch {
          key.fill(0);
        }
      } finally {
        db.close();
      }
      // Another tab won the race: use its key.
      return this.load();
    },
  };
}
