//! `commucat-cli`: key generation and probes against a CommuCat daemon.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use commucat::client::connect::{ConnectOptions, connect, load_or_create_device_key};
use commucat::client::http::{fetch_assist, fetch_server_info, http_client};
use commucat::crypto::{Pattern, Version};
use commucat::keys::KemKeys;
use commucat::signal::messages::{ClientMessage, ServerMessage};

#[derive(Parser)]
#[command(
    name = "commucat-cli",
    version,
    about = "Client tool for CommuCat daemons"
)]
struct Cli {
    /// Timeout for each network operation, in seconds.
    #[arg(long, global = true, default_value_t = 10)]
    timeout: u64,
    /// Access token for a daemon with `[auth] required` (assist, connect, chat).
    #[arg(long, global = true, value_name = "TOKEN")]
    access_token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an ML-KEM-768 key pair and print the [crypto] lines for commucat.toml.
    GeneratePqKeys,
    /// Issue an access token (HS256 JWT) signed with one of the daemon's
    /// `[auth] jwt_secrets`, read from the first line of a file.
    Token {
        /// File whose first line is the JWT secret.
        #[arg(long, value_name = "PATH")]
        secret_file: std::path::PathBuf,
        /// The token's subject (`sub`): who it is for.
        #[arg(long)]
        sub: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// Bind the token to one device (64 hex digits: its static X25519 key).
        #[arg(long, value_name = "HEX")]
        device: Option<String>,
    },
    /// Fetch /api/server-info, print it and verify its key bundle signature.
    ServerInfo {
        /// Base URL of the daemon, e.g. http://127.0.0.1:8080
        url: String,
    },
    /// Fetch P2P advice from /api/p2p/assist (POST when any option is given).
    Assist {
        url: String,
        #[arg(long)]
        prefer_reality: bool,
        #[arg(long, value_name = "N")]
        min_paths: Option<u32>,
        #[arg(long, value_name = "BYTES")]
        mtu: Option<u32>,
        #[arg(long, value_name = "FRACTION")]
        overhead: Option<f64>,
        #[arg(long, value_name = "DEVICE")]
        peer_hint: Option<String>,
    },
    /// Send a STUN Binding request and print the reflexive address, RTT and checks.
    Stun {
        /// HOST:PORT of the STUN server (port 3478 if omitted).
        target: String,
        /// ICE ufrag from /api/p2p/assist, for an authenticated check.
        #[arg(long, requires = "password")]
        ufrag: Option<String>,
        /// ICE password from /api/p2p/assist.
        #[arg(long, requires = "ufrag")]
        password: Option<String>,
        /// Use MESSAGE-INTEGRITY-SHA256 instead of MESSAGE-INTEGRITY.
        #[arg(long, requires = "ufrag")]
        sha256: bool,
    },
    /// Load a STUN server on this machine with Binding requests (loopback only, bounded).
    BenchStun {
        /// Loopback IP:PORT of the STUN server.
        target: std::net::SocketAddr,
        #[arg(long, default_value_t = 8)]
        sockets: usize,
        /// Requests in flight per socket.
        #[arg(long, default_value_t = 32)]
        outstanding: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Check a deployment step by step, as a client uses it: server-info and its
    /// signature, PQ, clock skew, assist, STUN, TURN relaying and both handshakes.
    /// Exit status 0 only when every step passes.
    Doctor {
        /// Base URL of the daemon, e.g. http://127.0.0.1:8080
        url: String,
        /// Pin the server's identity: its `device_ca_public` (ML-DSA-65, hex).
        #[arg(long, value_name = "HEX")]
        server_identity: Option<String>,
        /// Print a JSON array of {step, ok, skipped, ms, detail, hint}.
        #[arg(long)]
        json: bool,
        /// Test and diagnostic aid: pretend the local clock is off by this many seconds.
        #[arg(long, hide = true, allow_hyphen_values = true, default_value_t = 0)]
        clock_offset_secs: i64,
    },
    /// Run the hybrid handshake on /api/connect and print the session.
    Connect {
        url: String,
        #[command(flatten)]
        handshake: HandshakeArgs,
    },
    /// Talk to another device through the server: each stdin line is sent as a signal,
    /// `/relay TEXT` as relay data, `/lookup` asks whether the peer is online.
    Chat {
        url: String,
        /// Device id of the peer (64 hex digits).
        #[arg(long, value_name = "DEVICE")]
        to: String,
        #[command(flatten)]
        handshake: HandshakeArgs,
    },
}

#[derive(clap::Args)]
struct HandshakeArgs {
    /// Noise pattern.
    #[arg(long, value_parser = ["xk", "ik"], default_value = "xk")]
    pattern: String,
    /// Handshake version (2 adds an ephemeral ML-KEM key; requires PQ).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2), default_value_t = 2)]
    version: u8,
    /// Classical handshake (X25519 only); needs --version 1.
    #[arg(long)]
    no_pq: bool,
    /// Server Noise key version (default: the newest listed).
    #[arg(long, value_name = "N")]
    key_version: Option<u32>,
    /// File with this device's X25519 secret (created, mode 0600, if missing);
    /// without it a fresh device key is used.
    #[arg(long, value_name = "PATH")]
    key_file: Option<std::path::PathBuf>,
    /// The server's [crypto] prologue.
    #[arg(long, default_value = "commucat")]
    prologue: String,
    /// Pin the server's identity: its `device_ca_public` (ML-DSA-65, hex), obtained out of
    /// band. Without a pin, server-info over plain http is trusted on first sight.
    #[arg(long, value_name = "HEX")]
    server_identity: Option<String>,
}

impl HandshakeArgs {
    fn options(&self, timeout: Duration, access_token: Option<String>) -> Result<ConnectOptions> {
        let device_secret = match &self.key_file {
            Some(path) => Some(load_or_create_device_key(path)?),
            None => None,
        };
        Ok(ConnectOptions {
            pattern: if self.pattern == "ik" {
                Pattern::Ik
            } else {
                Pattern::Xk
            },
            version: if self.version == 2 {
                Version::V2
            } else {
                Version::V1
            },
            pq: !self.no_pq,
            key_version: self.key_version,
            device_secret,
            timeout,
            prologue: self.prologue.as_bytes().to_vec(),
            server_identity: self.server_identity.clone(),
            access_token,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("commucat-cli: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("commucat-cli: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let timeout = Duration::from_secs(cli.timeout.max(1));
    match cli.command {
        Command::GeneratePqKeys => generate_pq_keys(),
        Command::Token {
            secret_file,
            sub,
            ttl,
            device,
        } => issue_token(&secret_file, sub, ttl, device),
        Command::Stun {
            target,
            ufrag,
            password,
            sha256,
        } => {
            let creds = ufrag.zip(password);
            let report = commucat::client::stun::probe(&target, creds, sha256, timeout).await?;
            println!("{report}");
            if report.reflexive.is_none()
                || report.integrity == Some(false)
                || report.fingerprint == Some(false)
            {
                anyhow::bail!("STUN check did not pass");
            }
            Ok(())
        }
        Command::BenchStun {
            target,
            sockets,
            outstanding,
            seconds,
            threads,
        } => {
            let report = tokio::task::spawn_blocking(move || {
                commucat::client::stun_load::run(
                    target,
                    sockets,
                    outstanding,
                    Duration::from_secs(seconds),
                    threads,
                )
            })
            .await??;
            println!("{report}");
            Ok(())
        }
        Command::ServerInfo { url } => server_info(&url, timeout).await,
        Command::Assist {
            url,
            prefer_reality,
            min_paths,
            mtu,
            overhead,
            peer_hint,
        } => {
            let mut body = serde_json::Map::new();
            if prefer_reality {
                body.insert("prefer_reality".into(), true.into());
            }
            if let Some(n) = min_paths {
                body.insert("min_paths".into(), n.into());
            }
            let mut fec = serde_json::Map::new();
            if let Some(m) = mtu {
                fec.insert("mtu".into(), m.into());
            }
            if let Some(o) = overhead {
                fec.insert("repair_overhead".into(), o.into());
            }
            if !fec.is_empty() {
                body.insert("fec".into(), fec.into());
            }
            if let Some(p) = peer_hint {
                body.insert("peer_hint".into(), p.into());
            }
            let request = (!body.is_empty()).then_some(serde_json::Value::Object(body));
            let client = http_client(timeout)?;
            let advice =
                fetch_assist(&client, &url, request.as_ref(), cli.access_token.as_deref()).await?;
            println!("{}", serde_json::to_string_pretty(&advice)?);
            Ok(())
        }
        Command::Doctor {
            url,
            server_identity,
            json,
            clock_offset_secs,
        } => {
            let options = commucat::client::doctor::DoctorOptions {
                base: url,
                server_identity,
                access_token: cli.access_token,
                timeout,
                clock_offset_secs,
            };
            let report = commucat::client::doctor::run(&options).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            anyhow::ensure!(report.passed(), "doctor: some checks failed");
            Ok(())
        }
        Command::Connect { url, handshake } => {
            let options = handshake.options(timeout, cli.access_token)?;
            connect_once(&url, options).await
        }
        Command::Chat { url, to, handshake } => {
            let options = handshake.options(timeout, cli.access_token)?;
            chat(&url, &to, options).await
        }
    }
}

async fn connect_once(url: &str, options: ConnectOptions) -> Result<()> {
    let connection = connect(url, options)
        .await
        .with_context(|| format!("connect to {url}"))?;
    println!("session_id={}", connection.session_id);
    println!("device_id={}", connection.device_id);
    println!("pattern={}", connection.pattern.as_str());
    println!("version={}", connection.version.wire());
    println!("key_version={}", connection.key_version);
    println!("pq={}", connection.pq);
    println!(
        "handshake_ms={:.3}",
        connection.handshake_time.as_secs_f64() * 1e3
    );
    println!(
        "connect_ms={:.3}",
        connection.connect_time.as_secs_f64() * 1e3
    );
    connection.close().await?;
    Ok(())
}

async fn chat(url: &str, to: &str, options: ConnectOptions) -> Result<()> {
    let mut connection = connect(url, options)
        .await
        .with_context(|| format!("connect to {url}"))?;
    println!("device_id={}", connection.device_id);
    eprintln!(
        "connected (session {}, pq {}); type lines to send to {to}",
        connection.session_id, connection.pq
    );
    let mut lines = stdin_lines();
    let keepalive = Duration::from_secs(connection.hello.keepalive_interval.max(1));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else { break };
                let message = chat_message(to, &line);
                connection.send(&message).await?;
            }
            message = connection.recv() => {
                print_incoming(&message?);
            }
            _ = ticker.tick() => connection.keepalive().await?,
        }
    }
    connection.close().await?;
    Ok(())
}

/// Stdin lines from a plain thread (the runtime has no stdin driver).
fn stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn chat_message(to: &str, line: &str) -> ClientMessage {
    use base64::Engine as _;
    if let Some(text) = line.strip_prefix("/relay ") {
        ClientMessage::Relay {
            to: to.into(),
            data: base64::engine::general_purpose::STANDARD.encode(text),
        }
    } else if line.trim() == "/lookup" {
        ClientMessage::Lookup { device: to.into() }
    } else {
        ClientMessage::Signal {
            to: to.into(),
            body: serde_json::Value::String(line.into()),
        }
    }
}

fn print_incoming(message: &ServerMessage) {
    use base64::Engine as _;
    match message {
        ServerMessage::Signal { from, body } => match body {
            serde_json::Value::String(text) => println!("{from}: {text}"),
            other => println!("{from}: {other}"),
        },
        ServerMessage::Relay { from, data } => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap_or_default();
            println!("{from} [relay]: {}", String::from_utf8_lossy(&bytes));
        }
        ServerMessage::Presence { device, online } => {
            println!("{device} is {}", if *online { "online" } else { "offline" });
        }
        ServerMessage::Error { code, detail } => println!("error {code:?}: {detail}"),
        other => println!("{}", String::from_utf8_lossy(&other.to_json())),
    }
}

fn generate_pq_keys() -> Result<()> {
    let mut seed = zeroize::Zeroizing::new([0u8; 64]);
    rand::fill(&mut seed[..]);
    let kem = KemKeys::from_seed(&seed);
    let secret_hex = zeroize::Zeroizing::new(hex::encode(*seed));
    println!(
        "# ML-KEM-768 key pair for commucat.toml; keep pq_kem_secret private (chmod 600 the file)."
    );
    println!("[crypto]");
    println!("pq_kem_public = \"{}\"", kem.public_hex);
    println!("pq_kem_secret = \"{}\"", secret_hex.as_str());
    Ok(())
}

fn issue_token(
    secret_file: &std::path::Path,
    sub: String,
    ttl: u64,
    device: Option<String>,
) -> Result<()> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(secret_file)
            .with_context(|| format!("cannot read {}", secret_file.display()))?,
    );
    let secret = text.lines().next().unwrap_or("").trim();
    anyhow::ensure!(!secret.is_empty(), "{} is empty", secret_file.display());
    let claims = commucat::auth::Claims {
        sub,
        exp: commucat::time::unix_now().saturating_add(ttl),
        device,
    };
    println!(
        "{}",
        commucat::auth::issue_token(secret.as_bytes(), &claims)?
    );
    Ok(())
}

async fn server_info(url: &str, timeout: Duration) -> Result<()> {
    let client = http_client(timeout)?;
    let info = fetch_server_info(&client, url, None)
        .await
        .with_context(|| format!("server-info of {url}"))?;
    println!("{}", serde_json::to_string_pretty(&info)?);
    eprintln!(
        "key bundle signature: verified (ML-DSA-65, {} Noise key(s), PQ {})",
        info.noise_keys.len(),
        if info.post_quantum.enabled {
            "on"
        } else {
            "off"
        }
    );
    Ok(())
}
