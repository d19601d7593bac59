//! Relations between settings that serde cannot express; every error names its key.

use std::collections::HashSet;

use super::{
    Config, ConfigError, MIN_AUTH_SECRET_LEN, SERVER_PATH_ID, TransportKind, TurnServerConfig,
    TurnUrl,
};

impl Config {
    /// Checks the relations serde cannot express; every error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_auth()?;
        self.validate_server()?;
        self.validate_crypto()?;
        self.validate_ice()?;
        self.validate_transports()?;
        self.validate_misc()?;
        self.validate_cluster()
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        cluster.validate()?;
        let lead = cluster.key_lead_seconds();
        if self.crypto.rotation_grace <= lead {
            return Err(ConfigError::new(
                "crypto.rotation_grace",
                format!(
                    "must exceed {lead} s in cluster mode (node_ttl_seconds + 2 ×                      heartbeat_seconds): a new key is published that long after it is minted,                      and the old one must stay valid until then"
                ),
            ));
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let auth = &self.auth;
        if auth.required
            && auth.tokens.is_empty()
            && auth.tokens_file.is_none()
            && auth.jwt_secrets.is_empty()
        {
            return Err(ConfigError::new(
                "auth.required",
                "needs tokens, tokens_file or jwt_secrets to check against",
            ));
        }
        for (key, secrets) in [
            ("auth.tokens", &auth.tokens),
            ("auth.jwt_secrets", &auth.jwt_secrets),
        ] {
            if secrets.iter().any(|s| s.len() < MIN_AUTH_SECRET_LEN) {
                return Err(ConfigError::new(
                    key,
                    format!("each entry must be at least {MIN_AUTH_SECRET_LEN} characters"),
                ));
            }
        }
        Ok(())
    }

    fn validate_server(&self) -> Result<(), ConfigError> {
        if let Some(bad) = self
            .server
            .trusted_proxies
            .iter()
            .find(|p| super::parse_network(p).is_none())
        {
            return Err(ConfigError::new(
                "server.trusted_proxies",
                format!("{bad:?} is not an address or CIDR network"),
            ));
        }
        if self.server.proxy_protocol && self.server.trusted_proxies.is_empty() {
            return Err(ConfigError::new(
                "server.proxy_protocol",
                "needs server.trusted_proxies: only their connections carry the header",
            ));
        }
        if self.server.domain.trim().is_empty() {
            return Err(ConfigError::new("server.domain", "must not be empty"));
        }
        if let Some(public_url) = &self.server.public_url {
            let url = url::Url::parse(public_url)
                .map_err(|e| ConfigError::new("server.public_url", format!("not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(ConfigError::new(
                    "server.public_url",
                    "must be an http:// or https:// URL with a host",
                ));
            }
        }
        // The files themselves are read where TLS is set up (`http::tls`), at start, by
        // `check-config` and on reload.
        for (key, path) in [
            ("server.tls_cert", &self.server.tls_cert),
            ("server.tls_key", &self.server.tls_key),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(ConfigError::new(key, "must not be empty when set"));
            }
        }
        match (&self.server.tls_cert, &self.server.tls_key) {
            (Some(_), None) => Err(ConfigError::new(
                "server.tls_key",
                "missing: tls_cert and tls_key are given together",
            )),
            (None, Some(_)) => Err(ConfigError::new(
                "server.tls_cert",
                "missing: tls_cert and tls_key are given together",
            )),
            _ => Ok(()),
        }
    }

    fn validate_crypto(&self) -> Result<(), ConfigError> {
        let c = &self.crypto;
        if c.prologue.len() > 256 {
            return Err(ConfigError::new("crypto.prologue", "longer than 256 bytes"));
        }
        if c.require_pq && !c.pq {
            return Err(ConfigError::new(
                "crypto.require_pq",
                "cannot be true while crypto.pq is false",
            ));
        }
        if c.rotation_interval == 0 || c.rotation_interval > u64::from(u32::MAX) {
            return Err(ConfigError::new(
                "crypto.rotation_interval",
                "must be between 1 and 4294967295 seconds",
            ));
        }
        if c.rotation_grace > u64::from(u32::MAX) {
            return Err(ConfigError::new(
                "crypto.rotation_grace",
                "must be at most 4294967295 seconds",
            ));
        }
        if c.device_cert_ttl == 0 || c.device_cert_ttl > 366 * 86_400 {
            return Err(ConfigError::new(
                "crypto.device_cert_ttl",
                "must be between 1 second and 366 days",
            ));
        }
        match (&c.pq_kem_public, &c.pq_kem_secret) {
            (None, None) => {}
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "crypto.pq_kem_secret",
                    "missing: pq_kem_public and pq_kem_secret are given together",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "crypto.pq_kem_public",
                    "missing: pq_kem_public and pq_kem_secret are given together",
                ));
            }
            (Some(public), Some(secret)) => {
                // Lengths and the pair's match are checked where the key is decoded
                // (`keys::configured_kem`), once, at start and by `check-config`.
                if hex::decode(public.trim()).is_err() {
                    return Err(ConfigError::new("crypto.pq_kem_public", "must be hex"));
                }
                if hex::decode(secret.trim()).is_err() {
                    return Err(ConfigError::new("crypto.pq_kem_secret", "must be hex"));
                }
            }
        }
        Ok(())
    }

    fn validate_ice(&self) -> Result<(), ConfigError> {
        let ice = &self.ice;
        if ice.lite_enabled && ice.lite_bind.is_empty() {
            return Err(ConfigError::new(
                "ice.lite_bind",
                "needs at least one address",
            ));
        }
        if let Some(addrs) = &ice.lite_public_address
            && let Some(bad) = addrs
                .iter()
                .find(|a| a.ip().is_unspecified() || a.port() == 0)
        {
            return Err(ConfigError::new(
                "ice.lite_public_address",
                format!("{bad} is not a reachable address"),
            ));
        }
        if !(1..=7 * 86_400).contains(&ice.credential_ttl) {
            return Err(ConfigError::new(
                "ice.credential_ttl",
                "must be between 1 and 604800 seconds",
            ));
        }
        ice.credential_secret_bytes()?;
        if !(60..=7 * 86_400).contains(&ice.turn_ttl) {
            return Err(ConfigError::new(
                "ice.turn_ttl",
                "must be between 60 and 604800 seconds",
            ));
        }
        if ice.keepalive_interval == 0 {
            return Err(ConfigError::new(
                "ice.keepalive_interval",
                "must be at least 1",
            ));
        }
        if ice.rate_limit_per_ip == 0 {
            return Err(ConfigError::new(
                "ice.rate_limit_per_ip",
                "must be at least 1",
            ));
        }
        if ice.rate_limit_burst == 0 {
            return Err(ConfigError::new(
                "ice.rate_limit_burst",
                "must be at least 1",
            ));
        }
        if !(16..=16_777_216).contains(&ice.rate_limit_table_size) {
            return Err(ConfigError::new(
                "ice.rate_limit_table_size",
                "must be between 16 and 16777216",
            ));
        }
        for (i, turn) in ice.turn.iter().enumerate() {
            validate_turn(turn, &format!("ice.turn[{i}]"))?;
        }
        Ok(())
    }

    fn validate_transports(&self) -> Result<(), ConfigError> {
        let mut ids = HashSet::new();
        for (i, t) in self.transport.iter().enumerate() {
            let key = format!("transport[{i}]");
            if t.id.is_empty() || t.id.len() > 64 {
                return Err(ConfigError::new(
                    format!("{key}.id"),
                    "must be 1 to 64 characters",
                ));
            }
            if t.id == SERVER_PATH_ID || !ids.insert(t.id.as_str()) {
                return Err(ConfigError::new(
                    format!("{key}.id"),
                    format!("duplicate id {:?}", t.id),
                ));
            }
            if !is_host(&t.address) {
                return Err(ConfigError::new(
                    format!("{key}.address"),
                    "must be a hostname or IP address",
                ));
            }
            if t.port == 0 {
                return Err(ConfigError::new(
                    format!("{key}.port"),
                    "must be 1 to 65535",
                ));
            }
            if let Some(fp) = &t.reality_fingerprint {
                if t.transport != TransportKind::Reality {
                    return Err(ConfigError::new(
                        format!("{key}.reality_fingerprint"),
                        "only applies to transport = \"reality\"",
                    ));
                }
                if fp.is_empty() || hex::decode(fp).is_err() {
                    return Err(ConfigError::new(
                        format!("{key}.reality_fingerprint"),
                        "must be non-empty hex",
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_misc(&self) -> Result<(), ConfigError> {
        // Bounded so that every deadline computed from them stays representable.
        if !(1..=86_400).contains(&self.session.ttl_seconds) {
            return Err(ConfigError::new(
                "session.ttl_seconds",
                "must be between 1 and 86400",
            ));
        }
        if !(1..=86_400).contains(&self.session.keepalive_interval) {
            return Err(ConfigError::new(
                "session.keepalive_interval",
                "must be between 1 and 86400",
            ));
        }
        if self.admin.token.as_deref() == Some("") {
            return Err(ConfigError::new(
                "admin.token",
                "must not be empty when set",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::new("log.level", format!("not a valid filter: {e}")))?;
        let l = &self.limits;
        if l.max_sessions == 0 {
            return Err(ConfigError::new(
                "limits.max_sessions",
                "must be at least 1",
            ));
        }
        if !(1..=3600).contains(&l.http_header_timeout_seconds) {
            return Err(ConfigError::new(
                "limits.http_header_timeout_seconds",
                "must be between 1 and 3600",
            ));
        }
        if !(1..=3600).contains(&l.http_body_timeout_seconds) {
            return Err(ConfigError::new(
                "limits.http_body_timeout_seconds",
                "must be between 1 and 3600",
            ));
        }
        if !(1..=3600).contains(&l.http_write_timeout_seconds) {
            return Err(ConfigError::new(
                "limits.http_write_timeout_seconds",
                "must be between 1 and 3600",
            ));
        }
        if l.max_http_connections == 0 {
            return Err(ConfigError::new(
                "limits.max_http_connections",
                "must be at least 1",
            ));
        }
        if !(1..=3600).contains(&l.handshake_timeout_seconds) {
            return Err(ConfigError::new(
                "limits.handshake_timeout_seconds",
                "must be between 1 and 3600",
            ));
        }
        if l.connect_rate_per_ip == 0 || l.connect_burst == 0 {
            return Err(ConfigError::new(
                "limits.connect_rate_per_ip",
                "connect_rate_per_ip and connect_burst must be at least 1",
            ));
        }
        if l.max_http_connections_per_ip == 0 || l.max_sessions_per_ip == 0 {
            return Err(ConfigError::new(
                "limits.max_http_connections_per_ip",
                "max_http_connections_per_ip and max_sessions_per_ip must be at least 1",
            ));
        }
        if l.assist_rate_per_ip == 0 || l.assist_burst == 0 {
            return Err(ConfigError::new(
                "limits.assist_rate_per_ip",
                "assist_rate_per_ip and assist_burst must be at least 1",
            ));
        }
        if l.relay_bytes_per_second < 16 * 1024 {
            return Err(ConfigError::new(
                "limits.relay_bytes_per_second",
                "must be at least 16384 (one maximal relay message)",
            ));
        }
        Ok(())
    }
}

fn validate_turn(turn: &TurnServerConfig, key: &str) -> Result<(), ConfigError> {
    if turn.urls.is_empty() {
        return Err(ConfigError::new(
            format!("{key}.urls"),
            "needs at least one URL",
        ));
    }
    for url in &turn.urls {
        TurnUrl::parse(url)
            .map_err(|e| ConfigError::new(format!("{key}.urls"), format!("{url:?}: {e}")))?;
    }
    if turn.secret.is_some() && !turn.secrets.is_empty() {
        // `secret` would silently win, so a rotation that adds `secrets` but leaves the old
        // `secret` in place keeps minting with the old one.
        return Err(ConfigError::new(
            format!("{key}.secrets"),
            "give either secret or secrets (new first, then old), not both",
        ));
    }
    let has_secret = turn.secret.is_some() || !turn.secrets.is_empty();
    let has_static = turn.username.is_some() || turn.password.is_some();
    if has_secret && has_static {
        return Err(ConfigError::new(
            key.to_string(),
            "give either secret/secrets or username + password, not both",
        ));
    }
    if !has_secret && !has_static {
        return Err(ConfigError::new(
            key.to_string(),
            "needs secret, secrets, or username + password",
        ));
    }
    if has_static && (turn.username.is_none() || turn.password.is_none()) {
        return Err(ConfigError::new(
            key.to_string(),
            "static credentials need both username and password",
        ));
    }
    if turn.secret.as_deref() == Some("") || turn.secrets.iter().any(|s| s.is_empty()) {
        return Err(ConfigError::new(
            format!("{key}.secret"),
            "must not be empty",
        ));
    }
    Ok(())
}

/// True for an IP address or a syntactically valid DNS hostname.
pub fn is_host(s: &str) -> bool {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    s.trim_end_matches('.').split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}
