//! `COMMUCAT_<SECTION>_<KEY>` environment overrides, typed by the setting's default.

use super::{Config, ConfigError};

/// Sections that environment overrides may address, longest names first so that
/// `COMMUCAT_DEVICE_ROTATION_ENABLED` is not read as section `device`.
const SECTIONS: &[&str] = &[
    "device_rotation",
    "presence",
    "cluster",
    "session",
    "pairing",
    "limits",
    "auth",
    "server",
    "crypto",
    "admin",
    "demo",
    "ice",
    "log",
];

/// Applies `COMMUCAT_<SECTION>_<KEY>=value` overrides. The value is read with the type
/// of the setting's default (bool, integer, list), so `COMMUCAT_CRYPTO_PQ=false` is a
/// boolean while a hex secret stays a string.
pub(super) fn apply_env_overrides(
    table: &mut toml::Table,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
    let defaults = toml::Table::try_from(Config {
        // Optional as a whole: its defaults type its overrides, and an override of any
        // of its settings turns cluster mode on.
        cluster: Some(super::ClusterConfig::default()),
        ..Config::default()
    })
    .map_err(|e| ConfigError::new("defaults", e.to_string()))?;
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("COMMUCAT_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let Some(section) = SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_"))) else {
            return Err(ConfigError::new(
                name.clone(),
                "unknown setting (no such section; [[ice.turn]] and [[transport]] are set in the file)",
            ));
        };
        let key = &rest[section.len() + 1..];
        if !known_key(&defaults, section, key) {
            return Err(ConfigError::new(
                name.clone(),
                format!("unknown setting {section}.{key}"),
            ));
        }
        let default = defaults.get(*section).and_then(|s| s.get(key));
        // Lists absent from the serialized defaults: optional, or secret (never serialized).
        let is_list = matches!(default, Some(toml::Value::Array(_)))
            || matches!(
                (*section, key),
                ("ice", "lite_public_address") | ("auth", "tokens") | ("auth", "jwt_secrets")
            );
        let value =
            env_value(default, is_list, raw).map_err(|m| ConfigError::new(name.clone(), m))?;
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => {
                t.insert(key.to_string(), value);
            }
            _ => return Err(ConfigError::new(*section, "must be a table")),
        }
    }
    Ok(())
}

fn known_key(defaults: &toml::Table, section: &str, key: &str) -> bool {
    let in_defaults = defaults.get(section).and_then(|s| s.get(key)).is_some();
    // Optional settings are absent from the serialized defaults.
    let optional = matches!(
        (section, key),
        ("server", "state_dir")
            | ("server", "public_url")
            | ("server", "tls_cert")
            | ("server", "tls_key")
            | ("crypto", "pq_kem_public")
            | ("crypto", "pq_kem_secret")
            | ("ice", "lite_public_address")
            | ("ice", "credential_secret")
            | ("admin", "token")
            | ("auth", "tokens")
            | ("auth", "tokens_file")
            | ("auth", "jwt_secrets")
            | ("cluster", "redis_url")
            | ("cluster", "node_id")
            | ("cluster", "keys_secret")
            | ("cluster", "redis_ca_file")
            | ("cluster", "redis_client_cert_file")
            | ("cluster", "redis_client_key_file")
    );
    (in_defaults || optional) && key != "turn"
}

fn env_value(
    default: Option<&toml::Value>,
    is_list: bool,
    raw: &str,
) -> Result<toml::Value, String> {
    let raw = raw.trim();
    Ok(match default {
        Some(toml::Value::Boolean(_)) => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
            "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
            _ => return Err(format!("expected a boolean, got {raw:?}")),
        },
        Some(toml::Value::Integer(_)) => toml::Value::Integer(
            raw.parse::<i64>()
                .map_err(|_| format!("expected an integer, got {raw:?}"))?,
        ),
        Some(toml::Value::Float(_)) => toml::Value::Float(
            raw.parse::<f64>()
                .map_err(|_| format!("expected a number, got {raw:?}"))?,
        ),
        _ if is_list => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        _ => toml::Value::String(raw.to_string()),
    })
}
