//! Loading every key at start: what the configuration supplies is decoded here, once;
//! what is missing is generated and persisted; a rotation that fell due while the
//! daemon was stopped is carried out before anything is served.

use zeroize::Zeroizing;

use super::rotation;
use super::sealed::KeyringContents;
use super::store::{ICE_SECRET_FILE, IDENTITY_SEED_FILE, KEM_SEED_FILE, KeyStore};
use super::{
    ConfiguredKeyError, ICE_SECRET_LEN, IDENTITY_SEED_LEN, IdentityKeys, KEM_PUBLIC_LEN,
    KEM_SEED_LEN, KemKeys, KeysError, NoiseKeyRing, StaticKeys,
};
use crate::config::Config;

/// Everything loaded from the keystore at start.
pub struct LoadedKeys {
    pub store: KeyStore,
    pub static_keys: StaticKeys,
    pub ring: NoiseKeyRing,
    /// A rotation fell due while the daemon was stopped and was carried out at start.
    pub rotated_at_start: bool,
}

/// Loads every key, generating (and persisting) what is missing; a due rotation is done
/// here so the daemon never starts on a key past its `rotates_at`. Nothing is deleted.
pub fn load(config: &Config, now: u64) -> Result<LoadedKeys, KeysError> {
    let store = KeyStore::open(&config.server.resolved_state_dir())?;
    let identity = IdentityKeys::from_seed(&*store.load_or_create_identity_seed()?);
    let ice_secret = match config.ice.credential_secret_bytes()? {
        Some(secret) => secret,
        None => store.load_or_create_secret::<ICE_SECRET_LEN>(ICE_SECRET_FILE)?,
    };
    let kem = configured_or_stored_kem(config, &store)?;
    let loaded = store.load_noise_keys()?.unwrap_or_default();
    let had_keys = loaded.newest().is_some();
    let crypto = &config.crypto;
    let advanced = rotation::advance(
        &store,
        &loaded,
        now,
        crypto.rotation_interval,
        crypto.rotation_grace,
        // Never at start: the clock may be wrong (docs/operations.md, "Clock jumps").
        rotation::Pruning::Held,
    )?;
    let rotated_at_start = had_keys && advanced.as_ref().is_some_and(|a| a.new_version.is_some());
    let ring = advanced.map_or(loaded, |a| a.ring);
    Ok(LoadedKeys {
        store,
        static_keys: StaticKeys {
            kem,
            identity,
            ice_secret,
        },
        ring,
        rotated_at_start,
    })
}

/// Cluster mode: the keys this node serves with, from the shared keyring. Configured
/// key material (`[crypto] pq_kem_*`, `[ice] credential_secret`) wins over the ring's,
/// as it wins over the state directory's on a single node.
pub fn static_keys_from_keyring(
    config: &Config,
    contents: &KeyringContents,
) -> Result<StaticKeys, KeysError> {
    let identity = IdentityKeys::from_seed(&contents.identity_seed);
    let ice_secret = match config.ice.credential_secret_bytes()? {
        Some(secret) => secret,
        None => contents.ice_secret.clone(),
    };
    let kem = if !config.crypto.pq {
        None
    } else {
        match (&config.crypto.pq_kem_public, &config.crypto.pq_kem_secret) {
            (Some(public), Some(secret)) => Some(configured_kem(public, secret)?),
            _ => Some(KemKeys::from_seed(&contents.kem_seed)),
        }
    };
    Ok(StaticKeys {
        kem,
        identity,
        ice_secret,
    })
}

/// `commucat cluster import`: the keys a single node serves with from its state
/// directory (and configuration), as a keyring to share. Nothing is created or rotated
/// here; a directory without keys is refused.
pub fn keyring_from_state_dir(config: &Config) -> Result<KeyringContents, KeysError> {
    let dir = config.server.resolved_state_dir();
    if !dir.join(super::store::NOISE_KEYS_FILE).exists() {
        return Err(KeysError::Import(format!(
            "{} holds no Noise keys ({}): not the state directory of a single node",
            dir.display(),
            super::store::NOISE_KEYS_FILE
        )));
    }
    let store = KeyStore::open(&dir)?;
    let ring = store.load_noise_keys()?.unwrap_or_default();
    let identity_seed = store
        .read_secret::<IDENTITY_SEED_LEN>(IDENTITY_SEED_FILE)?
        .ok_or_else(|| {
            KeysError::Import(format!(
                "{} has no {IDENTITY_SEED_FILE}: the identity key cannot be carried over",
                dir.display()
            ))
        })?;
    let mut fresh = KeyringContents::generate();
    let ice_secret = match config.ice.credential_secret_bytes()? {
        Some(secret) => secret,
        None => store
            .read_secret::<ICE_SECRET_LEN>(ICE_SECRET_FILE)?
            .unwrap_or_else(|| fresh.ice_secret.clone()),
    };
    let kem_seed = match (&config.crypto.pq_kem_public, &config.crypto.pq_kem_secret) {
        (Some(public), Some(secret)) => {
            configured_kem(public, secret)?;
            let bytes = Zeroizing::new(hex::decode(secret.trim()).unwrap_or_default());
            let mut seed = Zeroizing::new([0u8; KEM_SEED_LEN]);
            if bytes.len() == KEM_SEED_LEN {
                seed.copy_from_slice(&bytes);
            }
            seed
        }
        _ => store
            .read_secret::<KEM_SEED_LEN>(KEM_SEED_FILE)?
            .unwrap_or_else(|| fresh.kem_seed.clone()),
    };
    fresh.identity_seed = identity_seed;
    fresh.ice_secret = ice_secret;
    fresh.kem_seed = kem_seed;
    fresh.ring = ring;
    Ok(fresh)
}

fn configured_or_stored_kem(
    config: &Config,
    store: &KeyStore,
) -> Result<Option<KemKeys>, KeysError> {
    if !config.crypto.pq {
        return Ok(None);
    }
    let kem = match (&config.crypto.pq_kem_public, &config.crypto.pq_kem_secret) {
        (Some(public), Some(secret)) => configured_kem(public, secret)?,
        _ => KemKeys::from_seed(&*store.load_or_create_kem_seed()?),
    };
    Ok(Some(kem))
}

/// Checks a configured `pq_kem_public`/`pq_kem_secret` pair and decodes it.
pub fn configured_kem(public_hex: &str, secret_hex: &str) -> Result<KemKeys, ConfiguredKeyError> {
    let secret = Zeroizing::new(
        hex::decode(secret_hex.trim())
            .map_err(|_| ConfiguredKeyError::new("crypto.pq_kem_secret", "must be hex"))?,
    );
    let seed: Zeroizing<[u8; KEM_SEED_LEN]> =
        Zeroizing::new(secret.as_slice().try_into().map_err(|_| {
            ConfiguredKeyError::new(
                "crypto.pq_kem_secret",
                format!(
                    "must be the 64-byte ML-KEM-768 seed (128 hex digits), got {} bytes",
                    secret.len()
                ),
            )
        })?);
    let public = hex::decode(public_hex.trim())
        .map_err(|_| ConfiguredKeyError::new("crypto.pq_kem_public", "must be hex"))?;
    if public.len() != KEM_PUBLIC_LEN {
        return Err(ConfiguredKeyError::new(
            "crypto.pq_kem_public",
            format!("must be {KEM_PUBLIC_LEN} bytes, got {}", public.len()),
        ));
    }
    let kem = KemKeys::from_seed(&seed);
    if kem.public_bytes != public {
        return Err(ConfiguredKeyError::new(
            "crypto.pq_kem_public",
            "does not match pq_kem_secret",
        ));
    }
    Ok(kem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_kem_checks_pair() {
        let seed = [3u8; 64];
        let kem = KemKeys::from_seed(&seed);
        let ok = configured_kem(&kem.public_hex, &hex::encode(seed)).unwrap();
        assert_eq!(ok.public_hex, kem.public_hex);
        let other = KemKeys::from_seed(&[4u8; 64]);
        let e = configured_kem(&other.public_hex, &hex::encode(seed))
            .err()
            .unwrap();
        assert_eq!(e.key, "crypto.pq_kem_public");
        assert_eq!(
            configured_kem(&kem.public_hex, "abcd").err().unwrap().key,
            "crypto.pq_kem_secret"
        );
    }
}
