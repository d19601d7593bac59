//! The keystore in the state directory.
//!
//! Every file is written atomically (temp file, fsync, rename, fsync dir) with mode 0600.
//! A corrupt, unreadable or group/world-readable file stops the daemon; it is never
//! silently replaced, because replacing a key breaks every client that pinned it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::{IDENTITY_SEED_LEN, KEM_SEED_LEN, NoiseKey, NoiseKeyRing};

pub const NOISE_KEYS_FILE: &str = "noise_keys.json";
pub const KEM_SEED_FILE: &str = "kem.seed";
pub const IDENTITY_SEED_FILE: &str = "identity.seed";
pub const ICE_SECRET_FILE: &str = "ice.secret";
/// Locked exclusively while a process uses the directory, so that two daemons never
/// mint competing keys in it.
pub const LOCK_FILE: &str = ".lock";

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("keystore {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "keystore {path} is corrupt: {reason}; restore it from a backup or remove it deliberately"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "keystore {path} is accessible to group or others (mode {mode:o}); run: chmod 600 {path}"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "state directory {dir} is in use by another commucat process (it holds {dir}/{LOCK_FILE}); stop it or give this one its own state_dir"
    )]
    Locked { dir: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyStoreError + '_ {
    move |source| KeyStoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A write buffer for serialized secrets: when it grows, the old allocation is zeroized
/// before it is freed (a plain `Vec` would leave copies of the key material behind), and
/// the last one when the buffer drops.
#[derive(Default)]
struct SecretBuffer(Zeroizing<Vec<u8>>);

impl SecretBuffer {
    fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Write for SecretBuffer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let needed = self.0.len() + data.len();
        if needed > self.0.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(needed.max(256) * 2));
            bigger.extend_from_slice(&self.0);
            // The old buffer is zeroized as it drops here.
            self.0 = bigger;
        }
        self.0.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Takes the directory's lock without waiting: a second process is refused at once.
fn lock_exclusively(dir: &Path) -> Result<File, KeyStoreError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(KeyStoreError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(source)) => Err(KeyStoreError::Io { path, source }),
    }
}

/// The state directory holding the key files, locked for this process while it lives.
#[derive(Debug, Clone)]
pub struct KeyStore {
    dir: PathBuf,
    /// The exclusive lock on [`LOCK_FILE`]; released when the last clone drops.
    _lock: std::sync::Arc<File>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoiseKeysFile {
    format: u32,
    keys: Vec<NoiseKeyRecord>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoiseKeyRecord {
    version: u32,
    secret_hex: String,
    valid_after: u64,
    rotates_at: u64,
    expires_at: u64,
}

impl Drop for NoiseKeyRecord {
    fn drop(&mut self) {
        self.secret_hex.zeroize();
    }
}

impl KeyStore {
    /// Opens (creating with mode 0700 if needed) the state directory.
    pub fn open(dir: &Path) -> Result<Self, KeyStoreError> {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err(dir))?;
        }
        let meta = fs::metadata(dir).map_err(io_err(dir))?;
        if !meta.is_dir() {
            return Err(KeyStoreError::Io {
                path: dir.to_path_buf(),
                source: io::Error::other("not a directory"),
            });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "state directory is accessible to group or others; chmod 700 it");
        }
        let lock = lock_exclusively(dir)?;
        remove_stale_temp_files(dir);
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: std::sync::Arc::new(lock),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Reads a fixed-length secret, or `None` if the file does not exist.
    pub fn read_secret<const N: usize>(
        &self,
        name: &str,
    ) -> Result<Option<Zeroizing<[u8; N]>>, KeyStoreError> {
        let path = self.path(name);
        let Some(bytes) = self.read_private(&path)? else {
            return Ok(None);
        };
        if bytes.len() != N {
            return Err(KeyStoreError::Corrupt {
                path,
                reason: format!("expected {N} bytes, found {}", bytes.len()),
            });
        }
        // Copied straight into zeroizing memory: no plain array of the secret on the stack.
        let mut secret = Zeroizing::new([0u8; N]);
        secret.copy_from_slice(&bytes);
        Ok(Some(secret))
    }

    /// Reads the secret `name`, generating and persisting a random one on first start.
    pub fn load_or_create_secret<const N: usize>(
        &self,
        name: &str,
    ) -> Result<Zeroizing<[u8; N]>, KeyStoreError> {
        if let Some(existing) = self.read_secret::<N>(name)? {
            return Ok(existing);
        }
        let mut fresh = Zeroizing::new([0u8; N]);
        rand::fill(&mut fresh[..]);
        self.write_atomic(name, &fresh[..])?;
        Ok(fresh)
    }

    pub fn load_or_create_kem_seed(&self) -> Result<Zeroizing<[u8; KEM_SEED_LEN]>, KeyStoreError> {
        self.load_or_create_secret::<KEM_SEED_LEN>(KEM_SEED_FILE)
    }

    pub fn load_or_create_identity_seed(
        &self,
    ) -> Result<Zeroizing<[u8; IDENTITY_SEED_LEN]>, KeyStoreError> {
        self.load_or_create_secret::<IDENTITY_SEED_LEN>(IDENTITY_SEED_FILE)
    }

    /// Loads the Noise key ring, or `None` on first start.
    pub fn load_noise_keys(&self) -> Result<Option<NoiseKeyRing>, KeyStoreError> {
        let path = self.path(NOISE_KEYS_FILE);
        let Some(bytes) = self.read_private(&path)? else {
            return Ok(None);
        };
        let corrupt = |reason: String| KeyStoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        let file: NoiseKeysFile =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("invalid JSON: {e}")))?;
        if file.format != 1 {
            return Err(corrupt(format!("unsupported format {}", file.format)));
        }
        if file.keys.is_empty() {
            return Err(corrupt("no keys".into()));
        }
        let mut keys = Vec::with_capacity(file.keys.len());
        for record in &file.keys {
            let secret = Zeroizing::new(
                hex::decode(&record.secret_hex)
                    .map_err(|_| corrupt(format!("key {}: secret is not hex", record.version)))?,
            );
            if secret.len() != 32 {
                return Err(corrupt(format!(
                    "key {}: secret is not 32 bytes",
                    record.version
                )));
            }
            let mut key = Zeroizing::new([0u8; 32]);
            key.copy_from_slice(&secret);
            if !(record.valid_after <= record.rotates_at && record.rotates_at <= record.expires_at)
            {
                return Err(corrupt(format!(
                    "key {}: times out of order",
                    record.version
                )));
            }
            keys.push(NoiseKey::new(
                record.version,
                *key,
                record.valid_after,
                record.rotates_at,
                record.expires_at,
            ));
        }
        NoiseKeyRing::from_keys(keys).map(Some).map_err(corrupt)
    }

    /// Persists the whole ring atomically.
    pub fn save_noise_keys(&self, ring: &NoiseKeyRing) -> Result<(), KeyStoreError> {
        let file = NoiseKeysFile {
            format: 1,
            keys: ring
                .keys()
                .iter()
                .map(|k| NoiseKeyRecord {
                    version: k.version,
                    secret_hex: hex::encode(k.secret_bytes().as_slice()),
                    valid_after: k.valid_after,
                    rotates_at: k.rotates_at,
                    expires_at: k.expires_at,
                })
                .collect(),
        };
        let mut json = SecretBuffer::default();
        serde_json::to_writer_pretty(&mut json, &file).map_err(|e| KeyStoreError::Io {
            path: self.path(NOISE_KEYS_FILE),
            source: io::Error::other(e),
        })?;
        self.write_atomic(NOISE_KEYS_FILE, json.as_bytes())
    }

    /// Reads a key file after checking that only its owner can read it.
    fn read_private(&self, path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, KeyStoreError> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(path)(e)),
        };
        let meta = file.metadata().map_err(io_err(path))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyStoreError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        if meta.len() > 1 << 20 {
            return Err(KeyStoreError::Corrupt {
                path: path.to_path_buf(),
                reason: "file larger than 1 MiB".into(),
            });
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
        file.read_to_end(&mut bytes).map_err(io_err(path))?;
        Ok(Some(bytes))
    }

    /// Temp file (0600, exclusive) → write → fsync → rename → fsync directory.
    pub fn write_atomic(&self, name: &str, contents: &[u8]) -> Result<(), KeyStoreError> {
        let target = self.path(name);
        let tmp = self.path(&format!(".{name}{TEMP_INFIX}{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(contents)?;
            f.sync_all()?;
            fs::rename(&tmp, &target)?;
            File::open(&self.dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(io_err(&target))
    }
}

/// Temp files are `.<name>.tmp.<pid>`.
const TEMP_INFIX: &str = ".tmp.";

/// A process killed between creating and renaming a temp file leaves it behind; whoever
/// holds the directory lock owns every temp file in it, so they are all stale. Best
/// effort: a leftover costs a few bytes, never a key.
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_temp = name
            .to_str()
            .is_some_and(|n| n.starts_with('.') && n.contains(TEMP_INFIX));
        if is_temp && let Err(e) = fs::remove_file(entry.path()) {
            tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove a stale temp file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_files_of_a_killed_writer_are_removed_when_the_lock_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        store.write_atomic("kem.seed", &[7; 64]).unwrap();
        drop(store);
        let stale = dir.path().join(".noise_keys.json.tmp.999999");
        fs::write(&stale, b"half a ring").unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        assert!(!stale.exists());
        assert_eq!(fs::read(dir.path().join("kem.seed")).unwrap(), [7; 64]);
        drop(store);
    }

    #[test]
    fn secrets_round_trip_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let a = store.load_or_create_secret::<32>("ice.secret").unwrap();
        let b = store.load_or_create_secret::<32>("ice.secret").unwrap();
        assert_eq!(*a, *b);
        let mode = fs::metadata(dir.path().join("ice.secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn wrong_length_is_corrupt_and_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        store.write_atomic("kem.seed", b"short").unwrap();
        let err = store.load_or_create_kem_seed().err().unwrap();
        assert!(matches!(err, KeyStoreError::Corrupt { .. }), "{err}");
        assert_eq!(fs::read(dir.path().join("kem.seed")).unwrap(), b"short");
    }

    #[test]
    fn group_readable_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        store.load_or_create_identity_seed().unwrap();
        let path = dir.path().join("identity.seed");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = store.load_or_create_identity_seed().err().unwrap();
        assert!(matches!(err, KeyStoreError::Permissions { .. }), "{err}");
    }

    #[test]
    fn noise_ring_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        assert!(store.load_noise_keys().unwrap().is_none());
        let ring = NoiseKeyRing::from_keys(vec![
            NoiseKey::generate(1, 100, 10, 10),
            NoiseKey::generate(2, 110, 10, 10),
        ])
        .unwrap();
        store.save_noise_keys(&ring).unwrap();
        let loaded = store.load_noise_keys().unwrap().unwrap();
        assert_eq!(loaded.keys().len(), 2);
        assert_eq!(loaded.keys()[1].public(), ring.keys()[1].public());
        assert_eq!(loaded.keys()[1].rotates_at, 120);
    }

    #[test]
    fn garbage_json_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        store.write_atomic(NOISE_KEYS_FILE, b"{not json").unwrap();
        assert!(matches!(
            store.load_noise_keys(),
            Err(KeyStoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_second_opener_is_refused_until_the_first_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let first = KeyStore::open(dir.path()).unwrap();
        let err = KeyStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, KeyStoreError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("another commucat"), "{err}");
        drop(first);
        KeyStore::open(dir.path()).expect("the lock is released with the store");
    }

    #[test]
    fn the_secret_buffer_never_grows_in_place() {
        let mut buffer = SecretBuffer::default();
        let mut capacities = Vec::new();
        for chunk in 0..200u8 {
            buffer.write_all(&[chunk; 7]).unwrap();
            capacities.push(buffer.0.capacity());
        }
        assert_eq!(buffer.as_bytes().len(), 1400);
        assert!(
            buffer
                .as_bytes()
                .chunks(7)
                .enumerate()
                .all(|(i, c)| c == [i as u8; 7])
        );
        // Every growth was a fresh zeroizing allocation of at least double the need.
        assert!(
            capacities
                .windows(2)
                .all(|w| w[1] == w[0] || w[1] >= 2 * w[0].min(w[1]))
        );
    }
}
