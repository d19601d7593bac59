//! Reloading, on SIGHUP, what may change while the daemon serves: today the TLS
//! certificate and key. Each step is logged and reported on its own; a step that fails
//! leaves what it would have replaced in use.

use std::sync::Arc;

use crate::http::tls::{CertSummary, ServerTls};
use crate::time::unix_now;

/// Runs every reload step. Cheap to clone; obtained from [`super::Daemon::reloader`].
#[derive(Debug, Clone)]
pub struct Reloader {
    tls: Option<Arc<ServerTls>>,
}

/// The outcome of one reload step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadStep {
    /// What the step reloads (`"tls"`).
    pub what: &'static str,
    /// What is in use now, or why the previous one was kept.
    pub outcome: Result<String, String>,
}

impl Reloader {
    pub(super) fn new(tls: Option<Arc<ServerTls>>) -> Self {
        Self { tls }
    }

    /// Runs every step, logging each; returns them in order (none when there is nothing
    /// to reload).
    pub async fn reload(&self) -> Vec<ReloadStep> {
        let mut steps = Vec::new();
        if let Some(tls) = &self.tls {
            steps.push(reload_tls(tls.clone()).await);
        }
        if steps.is_empty() {
            tracing::info!("reload requested: nothing to reload (no [server] tls_cert)");
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
