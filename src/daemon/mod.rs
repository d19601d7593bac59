//! Start-up and shutdown: load keys, bind sockets, build the shared state, run the HTTP
//! router, the STUN responder and the rotation task until one shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{AuthConfigError, Authorizer};
use crate::cluster::Cluster;
use crate::config::{Config, ConfigError};
use crate::discovery::{LimitsInfo, RenderError};
use crate::http::tls::{ServerTls, TlsError};
use crate::ice::stun::StunResponder;
use crate::ice::stun_server::{StunMetrics, StunServer};
use crate::ice::turn::TurnServer;
use crate::keys::KeysError;
use crate::keys::sealed::KeyringContents;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimitConfig;
use crate::signal::messages::MAX_SIGNAL_BYTES;
use crate::state::{AppState, StateParts};
use crate::time::unix_now;

mod cluster;
mod endpoints;
mod reload;
mod rotation;
mod systemd;

pub use cluster::import as cluster_import;
pub use endpoints::endpoints;
pub use reload::{ReloadStep, Reloader};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    #[error("cannot encode the OpenAPI document: {0}")]
    OpenApi(#[from] serde_json::Error),
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
    #[error("config error: {0}")]
    Tls(#[from] TlsError),
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
}

impl StartError {
    /// The configuration is at fault (exit status 2, like a validation error).
    pub fn is_config_error(&self) -> bool {
        matches!(
            self,
            Self::Config(_)
                | Self::Auth(_)
                | Self::Tls(_)
                | Self::Keys(KeysError::Configured(_) | KeysError::Config(_))
                | Self::Cluster(
                    crate::cluster::ClusterError::Keyring(_)
                        | crate::cluster::ClusterError::Config(_)
                )
        )
    }
}

/// A daemon whose sockets are bound and whose state is built, not yet serving.
pub struct Daemon {
    pub state: Arc<AppState>,
    http: TcpListener,
    tls: Option<Arc<ServerTls>>,
    stun: Option<StunServer>,
    stun_metrics: StunMetrics,
    cluster: Option<(Arc<Cluster>, KeyringContents)>,
}

impl Daemon {
    /// Loads keys and binds every socket; any failure is reported before serving starts.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let now = unix_now();
        crate::http::openapi::encode_document()?;
        // Before anything is created: a bad certificate is a configuration error.
        let tls = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(ServerTls::load(cert, key)?)),
            _ => None,
        };
        // A single node loads its keys before binding; a cluster node needs its HTTP port
        // (its default node id) first.
        let single = match config.cluster {
            None => Some(crate::keys::load(&config, now)?),
            Some(_) => None,
        };
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
        let (keys, cluster) = match single {
            Some(keys) => (keys, None),
            None => {
                let joined = cluster::join(&config, http_addr.port(), now).await?;
                (joined.keys, Some((joined.cluster, joined.keyring)))
            }
        };
        let mut metrics = Metrics::new();
        if let Some((c, _)) = &cluster {
            c.metrics.register(metrics.registry_mut());
        }
        let stun_metrics = StunMetrics::new();
        stun_metrics.register(metrics.registry_mut());
        if keys.rotated_at_start {
            metrics.key_rotations.inc();
        }
        let limits = published_limits(&config);
        let auth = Authorizer::new(&config.auth)?;
        let state = AppState::new(
            StateParts {
                endpoints: endpoints(&config, http_addr, stun_addrs),
                limits,
                auth,
                config,
                static_keys: keys.static_keys,
                turn,
                metrics,
                store: keys.store,
                stun_readiness: stun.as_ref().map(StunServer::readiness),
            },
            keys.ring,
            now,
        )?;
        Ok(Self {
            state,
            http,
            tls,
            stun,
            stun_metrics,
            cluster,
        })
    }

    /// What SIGHUP runs: re-reads what can change while serving (the TLS certificate and
    /// key, the access tokens file). Usable from another task while [`Daemon::run`] serves.
    pub fn reloader(&self) -> Reloader {
        Reloader::new(self.tls.clone(), self.state.clone())
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self {
            state,
            http,
            tls,
            stun,
            stun_metrics,
            cluster,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let cluster = match cluster {
            None => {
                tasks.spawn(rotation::run(state.clone(), stop_rx.clone()));
                None
            }
            Some((c, keyring)) => {
                tasks.spawn(c.clone().run_subscriber(stop_rx.clone()));
                // In cluster mode the keys rotate through the shared keyring.
                tasks.spawn(cluster::run(
                    state.clone(),
                    c.clone(),
                    keyring,
                    stop_rx.clone(),
                ));
                Some(c)
            }
        };
        if let Some(stun) = stun {
            let ice = &state.config.ice;
            // The state's shared secret: a cluster adopting another keyring switches the
            // running responder too.
            let responder = Arc::new(StunResponder::new(
                state.stun_secret.clone(),
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
            crate::signal::routes(&state.config.limits, stop_rx.clone(), cluster.clone()),
        );
        // "ready" means what /readyz means: the socket tasks are serving.
        // In cluster mode also subscribed to this node's channel, so that the first
        // sessions register at once (without Redis, after 2 s it serves anyway).
        for _ in 0..400 {
            if state.is_ready() && cluster.as_ref().is_none_or(|c| c.is_connected()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let endpoints = &state.endpoints;
        log_transport(tls.as_deref(), endpoints.http);
        tracing::info!(
            http = %endpoints.http,
            stun = %endpoints.stun_addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            public_url = %endpoints.public_url,
            "commucat ready"
        );
        systemd::ready();
        tasks.spawn(systemd::watchdog(state.clone(), stop_rx.clone()));
        let server = tokio::spawn(crate::http::server::serve(
            http,
            app,
            crate::http::server::ServeLimits {
                header_read_timeout: std::time::Duration::from_secs(
                    state.config.limits.http_header_timeout_seconds,
                ),
                write_stall_timeout: std::time::Duration::from_secs(
                    state.config.limits.http_write_timeout_seconds,
                ),
                max_connections: state.config.limits.max_http_connections as usize,
                max_connections_per_ip: state.config.limits.max_http_connections_per_ip as usize,
                uncapped: state.trusted_proxies.clone(),
                proxy_protocol: state.config.server.proxy_protocol,
                ..Default::default()
            },
            tls,
            stop_rx.clone(),
        ));
        shutdown.await;
        systemd::stopping();
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

/// Says once how HTTP is served; plain HTTP belongs behind a TLS proxy.
fn log_transport(tls: Option<&ServerTls>, http: SocketAddr) {
    match tls {
        Some(tls) => {
            let cert = tls.summary();
            tracing::info!(
                subject = %cert.subject,
                not_after = %cert.not_after_text(),
                sha256 = %cert.sha256,
                "serving HTTPS (HTTP/2 and HTTP/1.1); SIGHUP reloads the certificate"
            );
            reload::warn_if_expired(&cert);
        }
        None if http.ip().is_loopback() => tracing::info!(
            "serving plain HTTP; on the public internet put it behind a TLS reverse proxy \
             or set [server] tls_cert and tls_key"
        ),
        None => tracing::warn!(
            "serving plain HTTP on a non-loopback address; on the public internet put it \
             behind a TLS reverse proxy or set [server] tls_cert and tls_key"
        ),
    }
}

fn stun_sockets_per_addr() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8)
}

/// The limits server-info publishes, each from the layer that enforces it.
fn published_limits(config: &Config) -> LimitsInfo {
    let limits = &config.limits;
    LimitsInfo {
        max_request_body_bytes: crate::http::MAX_BODY_BYTES as u32,
        max_signal_body_bytes: MAX_SIGNAL_BYTES as u32,
        max_relay_data_bytes: MAX_SIGNAL_BYTES as u32,
        relay_bytes_per_second: limits.relay_bytes_per_second,
        max_sessions: limits.max_sessions,
        handshake_timeout_seconds: limits.handshake_timeout_seconds,
    }
}
