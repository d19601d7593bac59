//! Reloading, on SIGHUP, what may change while the daemon serves: the TLS certificate
//! and key, and the `[auth] tokens_file`. Each step is logged and reported on its own; a
//! step that fails leaves what it would have replaced in use.

use std::sync::Arc;

use crate::http::tls::{CertSummary, ServerTls};
use crate::state::AppState;
use crate::time::unix_now;

/// Runs every reload step. Cheap to clone; obtained from [`super::Daemon::reloader`].
#[derive(Clone)]
pub struct Reloader {
    tls: Option<Arc<ServerTls>>,
    state: Arc<AppState>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("tls", &self.tls.is_some())
            .field("tokens_file", &self.state.config.auth.tokens_file)
            .finish()
    }
}

/// The outcome of one reload step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadStep {
    /// What the step reloads (`"tls"`, `"tokens_file"`).
    pub what: &'static str,
    /// What is in use now, or why the previous one was kept.
    pub outcome: Result<String, String>,
}

impl Reloader {
    pub(super) fn new(tls: Option<Arc<ServerTls>>, state: Arc<AppState>) -> Self {
        Self { tls, state }
    }

    /// Runs every step, logging each; returns them in order (none when there is nothing
    /// to reload).
    pub async fn reload(&self) -> Vec<ReloadStep> {
        let mut steps = Vec::new();
        if let Some(tls) = &self.tls {
            steps.push(reload_tls(tls.clone()).await);
        }
        if self.state.config.auth.tokens_file.is_some() {
            steps.push(reload_tokens(self.state.clone()).await);
        }
        if steps.is_empty() {
            tracing::info!(
                "reload requested: nothing to reload (no [server] tls_cert, no [auth] tokens_file)"
            );
        }
        steps
    }
}

async fn reload_tls(tls: Arc<ServerTls>) -> ReloadStep {
    let outcome = match tokio::task::spawn_blocking(move || tls.reload()).await {
        Ok(Ok(cert)) => {
            tracing::info!(
                subject = %cert.subject,
                not_after = %cert.not_after_text(),
                sha256 = %cert.sha256,
                "TLS certificate reloaded; new connections get it"
            );
            warn_if_expired(&cert);
            Ok(format!(
                "subject {:?}, expires {}, sha256 {}",
                cert.subject,
                cert.not_after_text(),
                cert.sha256
            ))
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "TLS certificate not reloaded; keeping the previous one");
            Err(e.to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, "TLS certificate not reloaded; keeping the previous one");
            Err(e.to_string())
        }
    };
    ReloadStep {
        what: "tls",
        outcome,
    }
}

async fn reload_tokens(state: Arc<AppState>) -> ReloadStep {
    let outcome = match tokio::task::spawn_blocking(move || state.auth.reload()).await {
        Ok(Ok(count)) => {
            tracing::info!(tokens = count, "access tokens file reloaded");
            Ok(format!("{count} tokens"))
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "access tokens file not reloaded; keeping the previous tokens");
            Err(e.to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, "access tokens file not reloaded; keeping the previous tokens");
            Err(e.to_string())
        }
    };
    ReloadStep {
        what: "tokens_file",
        outcome,
    }
}

/// rustls serves an expired certificate as readily as a valid one; clients will not.
pub(super) fn warn_if_expired(cert: &CertSummary) {
    if let Some(not_after) = cert.not_after
        && not_after < unix_now()
    {
        tracing::warn!(
            not_after = %cert.not_after_text(),
            "the TLS certificate has expired: clients will refuse it"
        );
    }
}
