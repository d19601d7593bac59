//! Start-up and shutdown: load keys, bind sockets, build the shared state, run the HTTP
//! router, the STUN responder and the rotation task until one shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, ConfigError};
use crate::ice::credentials::IceSecret;
use crate::ice::stun::StunResponder;
use crate::ice::stun_server::{StunMetrics, StunServer};
use crate::ice::turn::TurnServer;
use crate::keys::store::{ICE_SECRET_FILE, KeyStore, KeyStoreError};
use crate::keys::{IdentityKeys, KemKeys, NoiseKeyRing, StaticKeys, configured_kem, rotation};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimitConfig;
use crate::state::{AppState, Endpoints, StateParts};
use crate::timefmt::unix_now;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Keys(#[from] KeyStoreError),
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Stun(#[from] crate::ice::stun_server::StunBindError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Everything loaded from the keystore at start.
pub struct LoadedKeys {
    pub store: KeyStore,
    pub static_keys: StaticKeys,
    pub ring: NoiseKeyRing,
    /// A rotation fell due while the daemon was stopped and was carried out at start.
    pub rotated_at_start: bool,
}

/// Loads every key, generating (and persisting) what is missing; a due rotation is done
/// here so the daemon never starts on a key past its `rotates_at`.
pub fn load_keys(config: &Config, now: u64) -> Result<LoadedKeys, StartError> {
    let store = KeyStore::open(&config.server.resolved_state_dir())?;
    let identity = IdentityKeys::from_seed(&*store.load_or_create_identity_seed()?);
    let configured_secret = config.ice.credential_secret_bytes()?;
    let ice_secret = match configured_secret {
        Some(secret) => IceSecret::from_bytes(*secret),
        None => IceSecret::from_bytes(*store.load_or_create_secret::<32>(ICE_SECRET_FILE)?),
    };
    let kem = if !config.crypto.pq {
        None
    } else {
        match (&config.crypto.pq_kem_public, &config.crypto.pq_kem_secret) {
            (Some(public), Some(secret)) => Some(configured_kem(public, secret)?),
            _ => Some(KemKeys::from_seed(&*store.load_or_create_kem_seed()?)),
        }
    };
    let loaded = store.load_noise_keys()?.unwrap_or_default();
    let plan = rotation::plan(&loaded, now);
    let rotated_at_start = plan.new_key_version.is_some() && loaded.newest().is_some();
    let ring = if plan.is_noop() {
        loaded
    } else {
        let next = rotation::apply(
            &loaded,
            &plan,
            now,
            config.crypto.rotation_interval,
            config.crypto.rotation_grace,
        );
        store.save_noise_keys(&next)?;
        next
    };
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

fn host_for_url(addr: &SocketAddr, domain: &str) -> String {
    if addr.ip().is_unspecified() {
        domain.to_string()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    }
}

/// The public URLs and candidates, once the sockets are bound.
pub fn endpoints(config: &Config, http: SocketAddr, stun_addrs: Vec<SocketAddr>) -> Endpoints {
    let public_url = config.public_url(http);
    let connect_url = {
        let ws = if let Some(rest) = public_url.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = public_url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            public_url.clone()
        };
        format!("{ws}/api/connect")
    };
    let public_host_port = url::Url::parse(&public_url)
        .ok()
        .map(|u| {
            let host = u
                .host_str()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_string();
            (host, u.port_or_known_default().unwrap_or(0))
        })
        .unwrap_or_default();
    let advertised: Vec<SocketAddr> = match &config.ice.lite_public_address {
        Some(public) if config.ice.lite_enabled => public.clone(),
        _ => stun_addrs.clone(),
    };
    let stun_urls = advertised
        .iter()
        .map(|a| {
            format!(
                "stun:{}:{}",
                host_for_url(a, &config.server.domain),
                a.port()
            )
        })
        .collect();
    let candidate_addrs = advertised
        .into_iter()
        .filter(|a| !a.ip().is_unspecified())
        .collect();
    Endpoints {
        http,
        public_url,
        connect_url,
        public_host_port,
        stun_addrs,
        stun_urls,
        candidate_addrs,
    }
}

/// A daemon whose sockets are bound and whose state is built, not yet serving.
pub struct Daemon {
    pub state: Arc<AppState>,
    http: TcpListener,
    stun: Option<StunServer>,
    stun_metrics: StunMetrics,
}

impl Daemon {
    /// Loads keys and binds every socket; any failure is reported before serving starts.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let now = unix_now();
        let keys = load_keys(&config, now)?;
        let turn = config
            .ice
            .turn
            .iter()
            .enumerate()
            .map(|(i, t)| {
                TurnServer::from_config(t)
                    .map_err(|e| ConfigError::new(format!("ice.turn[{i}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let http = TcpListener::bind(config.server.bind)
            .await
            .map_err(|source| StartError::Bind {
                what: "HTTP listener",
                addr: config.server.bind,
                source,
            })?;
        let http_addr = http.local_addr().map_err(|source| StartError::Bind {
            what: "HTTP listener",
            addr: config.server.bind,
            source,
        })?;
        let stun = if config.ice.lite_enabled {
            Some(StunServer::bind(
                &config.ice.lite_bind,
                stun_sockets_per_addr(),
            )?)
        } else {
            None
        };
        let stun_addrs = stun.as_ref().map(|s| s.local_addrs()).unwrap_or_default();
        let mut metrics = Metrics::new();
        let stun_metrics = StunMetrics::new();
        stun_metrics.register(metrics.registry_mut());
        if keys.rotated_at_start {
            metrics.key_rotations.inc();
        }
        let state = AppState::new(
            StateParts {
                endpoints: endpoints(&config, http_addr, stun_addrs),
                config,
                static_keys: keys.static_keys,
                turn,
                metrics,
                store: keys.store,
                stun_readiness: stun.as_ref().map(StunServer::readiness),
            },
            keys.ring,
            now,
        );
        Ok(Self {
            state,
            http,
            stun,
            stun_metrics,
        })
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self {
            state,
            http,
            stun,
            stun_metrics,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(rotation::run(state.clone(), stop_rx.clone()));
        if let Some(stun) = stun {
            let ice = &state.config.ice;
            let responder = Arc::new(StunResponder::new(
                state.static_keys.ice_secret.clone(),
                ice.require_integrity,
            ));
            let limits = RateLimitConfig {
                per_second: ice.rate_limit_per_ip,
                burst: ice.rate_limit_burst,
                table_size: ice.rate_limit_table_size as usize,
            };
            tasks.spawn(stun.run(responder, limits, stun_metrics, stop_rx.clone()));
        }
        let app = crate::http::router(
            state.clone(),
            crate::signal::routes(&state.config.limits, stop_rx.clone()),
        );
        // "ready" means what /readyz means: the socket tasks are serving.
        for _ in 0..400 {
            if state.is_ready() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let endpoints = &state.endpoints;
        tracing::info!(
            http = %endpoints.http,
            stun = %endpoints.stun_addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            public_url = %endpoints.public_url,
            "commucat ready"
        );
        let server = tokio::spawn(crate::http::server::serve(
            http,
            app,
            crate::http::server::ServeLimits {
                header_read_timeout: std::time::Duration::from_secs(
                    state.config.limits.http_header_timeout_seconds,
                ),
                max_connections: state.config.limits.max_http_connections as usize,
                ..Default::default()
            },
            stop_rx.clone(),
        ));
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop_tx.send(true);
        let result = server.await.map_err(std::io::Error::other);
        while tasks.join_next().await.is_some() {}
        // Sessions were told to close (1001); give their close frames a moment to leave.
        for _ in 0..200 {
            if state.metrics.sessions_active.get() <= 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        tracing::info!("stopped");
        result
    }
}

fn stun_sockets_per_addr() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8)
}
