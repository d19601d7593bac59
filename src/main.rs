//! `commucat`: the daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use commucat::config::{Config, LogFormat};
use commucat::daemon::Daemon;

#[derive(Parser)]
#[command(name = "commucat", version, about = "CommuCat P2P assist daemon")]
struct Cli {
    /// Configuration file (default: ./commucat.toml, then /etc/commucat/commucat.toml, then built-in defaults).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Validate the configuration and exit: 0 if valid, 2 if not.
    CheckConfig,
    /// Cluster mode ([cluster]) maintenance.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Seed the cluster's shared keyring in Redis from this node's single-node state
    /// directory (and configured keys), so clients that pinned its keys keep working.
    Import {
        /// Replace a keyring that already exists in Redis.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config, path) = match Config::load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("commucat: {e}");
            return ExitCode::from(2);
        }
    };
    let source = path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "built-in defaults".into());
    if matches!(cli.command, Some(Command::CheckConfig)) {
        // Configured key material is decoded by `keys` when the daemon starts; decode it
        // here too, so `check-config` finds a pair that does not match.
        if let (Some(public), Some(secret)) =
            (&config.crypto.pq_kem_public, &config.crypto.pq_kem_secret)
            && let Err(e) = commucat::keys::configured_kem(public, secret)
        {
            eprintln!("commucat: {e}");
            return ExitCode::from(2);
        }
        // Likewise the certificate and key, so they can be checked before a reload.
        if let (Some(cert), Some(key)) = (&config.server.tls_cert, &config.server.tls_key)
            && let Err(e) = commucat::http::tls::ServerTls::load(cert, key)
        {
            eprintln!("commucat: config error: {e}");
            return ExitCode::from(2);
        }
        println!("commucat: configuration is valid ({source})");
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Cluster {
        command: ClusterCommand::Import { force },
    }) = cli.command
    {
        return cluster_import(&config, force);
    }
    init_logging(&config);
    tracing::info!(config = %source, version = env!("CARGO_PKG_VERSION"), "starting");
    raise_open_file_limit();
    let Some(runtime) = runtime(tokio::runtime::Builder::new_multi_thread()) else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        // Handlers are installed before the daemon reports ready, so a SIGTERM sent right
        // after "ready" shuts down gracefully instead of killing the process.
        let signals = shutdown_signal().and_then(|shutdown| Ok((shutdown, hangup_signal()?)));
        let (shutdown, mut hangup) = match signals {
            Ok(s) => s,
            Err(e) => {
                eprintln!("commucat: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let daemon = match Daemon::start(config).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("commucat: {e}");
                return if e.is_config_error() {
                    ExitCode::from(2)
                } else {
                    ExitCode::FAILURE
                };
            }
        };
        // SIGHUP (`systemctl reload`) reloads what can change without a restart; each
        // step logs what it did, and one that fails keeps what was in use.
        let reloader = daemon.reloader();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                reloader.reload().await;
            }
        });
        match daemon.run(shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("commucat: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// The runtime `builder` makes, or `None` once the failure is reported.
fn runtime(mut builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    match builder.enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("commucat: cannot start the runtime: {e}");
            None
        }
    }
}

/// `commucat cluster import [--force]`: exit 0 once written, 2 for a configuration
/// problem, 1 otherwise (an existing ring without --force, Redis unreachable).
fn cluster_import(config: &Config, force: bool) -> ExitCode {
    let Some(runtime) = runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(commucat::daemon::cluster_import(config, force)) {
        Ok(generation) => {
            println!(
                "commucat: imported the keys of {} into the cluster keyring (generation {generation})",
                config.server.resolved_state_dir().display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("commucat: {e}");
            if e.is_config_error() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn init_logging(config: &Config) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// Each WebSocket session holds a socket: take the hard open-file limit as the soft one,
/// so tens of thousands of sessions do not hit the usual soft limit of 1024.
fn raise_open_file_limit() {
    match commucat::sys::raise_open_file_limit() {
        Ok(open_files) => tracing::debug!(open_files, "open-file limit"),
        Err(_) => {
            tracing::warn!("could not raise the open-file limit; sessions may be refused early")
        }
    }
}

/// SIGHUP, registered now so that it no longer terminates the process.
fn hangup_signal() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}

/// A future that completes on SIGINT or SIGTERM; the handlers are registered now.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
