//! TURN servers from the configuration: URL checks, the `ice.servers` entries with REST or
//! static credentials, and the browser-ready `ice_servers` URLs.

use zeroize::Zeroizing;

use super::credentials::{turn_rest_credential, turn_rest_username};
use crate::config::{TurnServerConfig, TurnUrl};

impl TurnUrl {
    /// The URL for `RTCPeerConnection({iceServers})`: explicit transport; `turns:` is TCP.
    /// `None` for port 53, which browsers refuse.
    pub fn for_browsers(&self) -> Option<String> {
        if self.port == 53 {
            return None;
        }
        let transport = if self.secure {
            "tcp"
        } else {
            self.transport.as_deref().unwrap_or("udp")
        };
        let scheme = if self.secure { "turns" } else { "turn" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        Some(format!(
            "{scheme}:{host}:{}?transport={transport}",
            self.port
        ))
    }
}

/// How a TURN server authenticates our clients.
enum TurnAuth {
    /// coturn `use-auth-secret`: time-limited REST credentials.
    Rest(Zeroizing<Vec<u8>>),
    Static {
        username: String,
        password: Zeroizing<String>,
    },
}

/// A configured TURN server, ready to hand out credentials.
pub struct TurnServer {
    pub urls: Vec<String>,
    pub browser_urls: Vec<String>,
    pub realm: Option<String>,
    auth: TurnAuth,
}

/// Credentials for one TURN server in one assist response.
#[derive(Debug, Clone)]
pub struct IssuedTurn {
    pub username: String,
    pub credential: String,
    /// `None` for static credentials, which do not expire.
    pub expires_at: Option<u64>,
    pub is_rest: bool,
}

impl TurnServer {
    pub fn from_config(c: &TurnServerConfig) -> Result<Self, String> {
        let parsed = c
            .urls
            .iter()
            .map(|u| TurnUrl::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        let auth = match (c.signing_secret(), &c.username, &c.password) {
            (Some(secret), _, _) => TurnAuth::Rest(Zeroizing::new(secret.as_bytes().to_vec())),
            (None, Some(u), Some(p)) => TurnAuth::Static {
                username: u.clone(),
                password: Zeroizing::new(p.to_string()),
            },
            _ => return Err("no credentials configured".into()),
        };
        Ok(Self {
            urls: c.urls.clone(),
            browser_urls: parsed.iter().filter_map(TurnUrl::for_browsers).collect(),
            realm: c.realm.clone(),
            auth,
        })
    }

    /// Whether this server mints time-limited REST credentials from a shared secret.
    pub fn uses_rest_secret(&self) -> bool {
        matches!(self.auth, TurnAuth::Rest(_))
    }

    /// Whether credentials minted by `self` are accepted by `other` too: both use the
    /// same REST signing secret.
    pub fn shares_secret_with(&self, other: &TurnServer) -> bool {
        match (&self.auth, &other.auth) {
            (TurnAuth::Rest(a), TurnAuth::Rest(b)) => a == b,
            _ => false,
        }
    }

    /// Credentials for a client holding `ufrag`, valid `ttl_secs` from `now`.
    pub fn issue(&self, ufrag: &str, now: u64, ttl_secs: u32) -> IssuedTurn {
        match &self.auth {
            TurnAuth::Rest(secret) => {
                let expiry = now.saturating_add(u64::from(ttl_secs));
                let username = turn_rest_username(expiry, ufrag);
                let credential = turn_rest_credential(secret, &username);
                IssuedTurn {
                    username,
                    credential,
                    expires_at: Some(expiry),
                    is_rest: true,
                }
            }
            TurnAuth::Static { username, password } => IssuedTurn {
                username: username.clone(),
                credential: password.to_string(),
                expires_at: None,
                is_rest: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders_browser_urls() {
        let u = TurnUrl::parse("turn:turn.example.org").unwrap();
        assert_eq!(u.port, 3478);
        assert_eq!(
            u.for_browsers().unwrap(),
            "turn:turn.example.org:3478?transport=udp"
        );
        let s = TurnUrl::parse("turns:turn.example.org:443?transport=udp").unwrap();
        assert_eq!(
            s.for_browsers().unwrap(),
            "turns:turn.example.org:443?transport=tcp"
        );
        let v6 = TurnUrl::parse("turn:[2001:db8::1]:3479?transport=tcp").unwrap();
        assert_eq!(
            v6.for_browsers().unwrap(),
            "turn:[2001:db8::1]:3479?transport=tcp"
        );
        assert!(
            TurnUrl::parse("turn:dns.example:53")
                .unwrap()
                .for_browsers()
                .is_none()
        );
    }

    #[test]
    fn rest_credentials_use_expiry_and_ufrag() {
        let cfg = TurnServerConfig {
            urls: vec!["turn:t.example".into()],
            secret: Some(crate::config::Secret::new("s3cret")),
            ..Default::default()
        };
        let t = TurnServer::from_config(&cfg).unwrap();
        let issued = t.issue("ufragufragufrag0", 1000, 600);
        assert_eq!(issued.username, "1600:ufragufragufrag0");
        assert_eq!(
            issued.credential,
            turn_rest_credential(b"s3cret", "1600:ufragufragufrag0")
        );
        assert_eq!(issued.expires_at, Some(1600));
    }
}
