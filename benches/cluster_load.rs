//! Load run of cluster mode (docs/cluster.md) over loopback: a real `redis-server` and
//! two daemons in cluster mode, started and reaped here.
//!
//! 1. memory: Redis `used_memory` growth with `LOAD_SESSIONS` sessions registered
//!    (default 10 000, half on each node), divided by the number of sessions; and
//!    `MEMORY USAGE commucat:devices`;
//! 2. loss: for `LOAD_SECS` (default 60) every session signals its partner at
//!    `LOAD_RATE` signals per second in total (default 2 000), half of the pairs across
//!    nodes; every signal carries (sender, sequence number); the receivers count lost
//!    and duplicated ones;
//! 3. peak: cross-node signals per second with `LOAD_PAIRS` (default 16) pairs sending
//!    as fast as they can for 5 s; then cross-node latency (p50/p99) at half that rate
//!    (or at `LOAD_LATENCY_RATE` signals per second, to compare builds at one rate);
//! 4. relay: 16 KiB relays per second and MB/s, same-node against cross-node, 5 s each,
//!    with `LOAD_PAIRS` pairs.
//!
//! `cargo bench --bench cluster_load` (release build); `LOAD_SESSIONS=2000 LOAD_SECS=10`
//! for a quick run. Client, both daemons and Redis share this machine's cores, so the
//! figures are a floor. Raises RLIMIT_NOFILE to the hard limit.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashSet;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use commucat::client::connect::Connection;
use commucat::client::http::{fetch_server_info, http_client};
use commucat::signal::messages::{ClientMessage, ServerMessage};
use serde_json::json;

mod common;

use common::{Server, env_u64, open_sessions, percentiles, start_daemon};

const SECRET: &str = "6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b";

/// A child process killed and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Redis {
    _child: Reaped,
    addr: SocketAddr,
}

impl Redis {
    fn start(dir: &Path) -> Redis {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let redis = Redis {
            _child: Reaped(child),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis.command(&["PING"]).starts_with("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn command(&self, args: &[&str]) -> String {
        let Ok(mut s) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500)) else {
            return String::new();
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn used_memory(&self) -> u64 {
        self.command(&["INFO", "memory"])
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory")
    }

    fn integer(&self, args: &[&str]) -> i64 {
        self.command(args)
            .trim()
            .trim_start_matches(':')
            .parse()
            .unwrap_or(-1)
    }
}

fn start_node(dir: &Path, redis: &Redis) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    let config = format!(
        "[limits]\nconnect_rate_per_ip = 1000000\nconnect_burst = 1000000\n\
         max_sessions = 100000\nmax_sessions_per_ip = 100000\nhandshake_timeout_seconds = 60\n\
         relay_bytes_per_second = 67108864\n\
         [session]\nttl_seconds = 600\nkeepalive_interval = 300\n\
         [log]\nlevel = \"warn,commucat::daemon=info\"\n\
         [cluster]\nredis_url = \"redis://{}\"\nkeys_secret = \"{SECRET}\"\n",
        redis.addr
    );
    start_daemon(dir, &config)
}

/// What the receivers saw.
#[derive(Default)]
struct Tally {
    received: AtomicU64,
    /// Received while the senders were still sending: the steady-state rate.
    in_window: AtomicU64,
    bytes_in_window: AtomicU64,
    duplicates: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

/// Runs pairs `(sender, receiver)`: each sender sends `per_sender` messages (or until
/// `stop`), paced at `interval` (zero: as fast as it can). Returns messages sent.
async fn run_pairs(
    pairs: Vec<(Connection, Connection)>,
    make: Arc<dyn Fn(u64, u64) -> ClientMessage + Send + Sync>,
    interval: Duration,
    duration: Duration,
    tally: Arc<Tally>,
    origin: Instant,
    record_latency: bool,
) -> u64 {
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = tokio::task::JoinSet::new();
    let mut receivers = tokio::task::JoinSet::new();
    for (from, to) in pairs {
        let (mut tx, mut from_rx) = from.split();
        let (_to_tx, mut rx) = to.split();
        let receiver_stop = stop.clone();
        let (make, sent, stop, tally2) = (make.clone(), sent.clone(), stop.clone(), tally.clone());
        senders.spawn(async move {
            // Errors (rate_limited…) come back on the sender's own receiver.
            let errors = tokio::spawn(async move {
                while let Ok(m) = from_rx.recv().await {
                    if matches!(m, ServerMessage::Error { .. }) {
                        tally2.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            let mut seq = 0u64;
            let mut next = tokio::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let now_us = origin.elapsed().as_micros() as u64;
                if tx.send(&make(seq, now_us)).await.is_err() {
                    break;
                }
                seq += 1;
                sent.fetch_add(1, Ordering::Relaxed);
                if !interval.is_zero() {
                    next += interval;
                    tokio::time::sleep_until(next).await;
                } else if seq.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            (tx, errors)
        });
        let (tally, stop) = (tally.clone(), receiver_stop);
        receivers.spawn(async move {
            let mut seen = HashSet::new();
            while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await {
                let (seq, t, len) = match &m {
                    ServerMessage::Signal { body, .. } => (
                        body["s"].as_u64().unwrap_or(u64::MAX),
                        body["t"].as_u64().unwrap_or(0),
                        0,
                    ),
                    ServerMessage::Relay { data, .. } => {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(data)
                            .unwrap_or_default();
                        let seq = u64::from_be_bytes(bytes[..8].try_into().unwrap());
                        let t = u64::from_be_bytes(bytes[8..16].try_into().unwrap());
                        (seq, t, bytes.len() as u64)
                    }
                    _ => continue,
                };
                if !seen.insert(seq) {
                    tally.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                tally.received.fetch_add(1, Ordering::Relaxed);
                tally.bytes.fetch_add(len, Ordering::Relaxed);
                if !stop.load(Ordering::Relaxed) {
                    tally.in_window.fetch_add(1, Ordering::Relaxed);
                    tally.bytes_in_window.fetch_add(len, Ordering::Relaxed);
                }
                if record_latency {
                    let now = origin.elapsed().as_micros() as u64;
                    tally
                        .latencies_us
                        .lock()
                        .unwrap()
                        .push(now.saturating_sub(t));
                }
            }
        });
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut keep = Vec::new();
    while let Some(done) = senders.join_next().await {
        keep.push(done.unwrap());
    }
    // Receivers end 3 s after their last message: everything in flight has arrived.
    while receivers.join_next().await.is_some() {}
    for (_tx, errors) in keep {
        errors.abort();
    }
    sent.load(Ordering::Relaxed)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let sessions = env_u64("LOAD_SESSIONS", 10_000) as usize;
    let secs = env_u64("LOAD_SECS", 60);
    let rate = env_u64("LOAD_RATE", 2_000);
    let pairs = env_u64("LOAD_PAIRS", 16) as usize;
    let nofile = commucat::sys::raise_open_file_limit().unwrap_or(0);
    println!(
        "cluster_load: {sessions} sessions, {secs} s, {rate} signals/s, {pairs} pairs, nofile {nofile}"
    );
    let dir: PathBuf =
        std::env::temp_dir().join(format!("commucat-cluster-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let redis = Redis::start(&dir);
    let nodes = [
        start_node(&dir.join("n1"), &redis),
        start_node(&dir.join("n2"), &redis),
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = http_client(Duration::from_secs(10)).unwrap();
        let info = fetch_server_info(&client, &nodes[0].base(), None).await.unwrap();
        let origin = Instant::now();

        // 1. Memory per registered session.
        let before = redis.used_memory();
        let started = Instant::now();
        let half = sessions / 2;
        let mut on1 = open_sessions(&nodes[0].base(), &info, half, 32).await;
        let mut on2 = open_sessions(&nodes[1].base(), &info, sessions - half, 32).await;
        let opened = started.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = redis.used_memory();
        let registered = redis.integer(&["HLEN", "commucat:devices"]);
        let hash = redis.integer(&["MEMORY", "USAGE", "commucat:devices", "SAMPLES", "0"]);
        println!(
            "memory: {registered} registered in {:.1} s; used_memory +{} bytes = {:.1} bytes/session; \
             MEMORY USAGE commucat:devices = {hash} bytes = {:.1} bytes/session",
            opened.as_secs_f64(),
            after.saturating_sub(before),
            after.saturating_sub(before) as f64 / sessions as f64,
            hash as f64 / registered.max(1) as f64,
        );

        // 2. Loss and duplicates: pairs (a on node 1, b on node 1) and (a on 1, b on 2).
        let mut pairs_all = Vec::new();
        while on1.len() >= 2 && !on2.is_empty() {
            let a = on1.pop().unwrap();
            if pairs_all.len() % 2 == 0 {
                let b = on2.pop().unwrap();
                pairs_all.push((a, b));
            } else {
                let b = on1.pop().unwrap();
                pairs_all.push((a, b));
            }
        }
        let n_pairs = pairs_all.len().max(1) as u64;
        let per_sender = Duration::from_micros(1_000_000 * n_pairs / rate.max(1));
        let tally = Arc::new(Tally::default());
        let mut sent_total = 0;
        let mut tasks = tokio::task::JoinSet::new();
        // One maker per pair: the receiver's device id is fixed.
        for (a, b) in pairs_all {
            let to = b.device_id.clone();
            let make: Arc<dyn Fn(u64, u64) -> ClientMessage + Send + Sync> =
                Arc::new(move |s, t| ClientMessage::Signal {
                    to: to.clone(),
                    body: json!({"s": s, "t": t}),
                });
            let tally = tally.clone();
            tasks.spawn(run_pairs(
                vec![(a, b)],
                make,
                per_sender,
                Duration::from_secs(secs),
                tally,
                origin,
                false,
            ));
        }
        while let Some(done) = tasks.join_next().await {
            sent_total += done.unwrap();
        }
        let received = tally.received.load(Ordering::Relaxed);
        let errors = tally.errors.load(Ordering::Relaxed);
        println!(
            "loss: {n_pairs} pairs (half across nodes), sent {sent_total}, received {received}, \
             refused with an error {errors}, lost {}, duplicated {}",
            sent_total.saturating_sub(errors).saturating_sub(received),
            tally.duplicates.load(Ordering::Relaxed)
        );

        // 3. Cross-node peak and latency at half of it; 4. relay same-node vs cross-node.
        let fresh_pairs = |cross: bool| {
            let (n1, n2, info) = (nodes[0].base(), nodes[1].base(), info.clone());
            async move {
                let senders = open_sessions(&n1, &info, pairs, 8).await;
                let receivers = open_sessions(if cross { &n2 } else { &n1 }, &info, pairs, 8).await;
                senders.into_iter().zip(receivers).collect::<Vec<_>>()
            }
        };
        let signal_to = |p: &Vec<(Connection, Connection)>| {
            p.iter().map(|(_, b)| b.device_id.clone()).collect::<Vec<_>>()
        };
        let run_signals = |p: Vec<(Connection, Connection)>, interval: Duration, latency: bool| {
            let targets = signal_to(&p);
            let tally = Arc::new(Tally::default());
            let mut set = tokio::task::JoinSet::new();
            for ((a, b), to) in p.into_iter().zip(targets) {
                let make: Arc<dyn Fn(u64, u64) -> ClientMessage + Send + Sync> =
                    Arc::new(move |s, t| ClientMessage::Signal {
                        to: to.clone(),
                        body: json!({"s": s, "t": t}),
                    });
                set.spawn(run_pairs(
                    vec![(a, b)],
                    make,
                    interval,
                    Duration::from_secs(5),
                    tally.clone(),
                    origin,
                    latency,
                ));
            }
            async move {
                let mut sent = 0;
                while let Some(done) = set.join_next().await {
                    sent += done.unwrap();
                }
                (sent, tally)
            }
        };
        let (sent, tally) = run_signals(fresh_pairs(true).await, Duration::ZERO, false).await;
        let peak = tally.in_window.load(Ordering::Relaxed) as f64 / 5.0;
        println!("peak: cross-node signals {peak:.0}/s ({pairs} pairs, sent {sent})");
        // LOAD_LATENCY_RATE (signals/s) compares builds at one rate; default half of peak.
        let latency_rate = match env_u64("LOAD_LATENCY_RATE", 0) {
            0 => (peak / 2.0).max(1.0),
            fixed => fixed as f64,
        };
        let interval = Duration::from_secs_f64(pairs as f64 / latency_rate);
        let (sent, tally) = run_signals(fresh_pairs(true).await, interval, true).await;
        let latencies = std::mem::take(&mut *tally.latencies_us.lock().unwrap());
        println!(
            "latency: cross-node signal at {latency_rate:.0}/s, sent {sent}: {}",
            percentiles(latencies)
        );
        let (sent, tally) = run_signals(fresh_pairs(false).await, interval, true).await;
        let latencies = std::mem::take(&mut *tally.latencies_us.lock().unwrap());
        println!(
            "latency: same-node signal at the same rate, sent {sent}: {}",
            percentiles(latencies)
        );

        for cross in [false, true] {
            let p = fresh_pairs(cross).await;
            let targets = signal_to(&p);
            let tally = Arc::new(Tally::default());
            let mut set = tokio::task::JoinSet::new();
            for ((a, b), to) in p.into_iter().zip(targets) {
                let make: Arc<dyn Fn(u64, u64) -> ClientMessage + Send + Sync> =
                    Arc::new(move |s, t| {
                        let mut bytes = vec![0u8; 16 * 1024];
                        bytes[..8].copy_from_slice(&s.to_be_bytes());
                        bytes[8..16].copy_from_slice(&t.to_be_bytes());
                        ClientMessage::Relay {
                            to: to.clone(),
                            data: base64::engine::general_purpose::STANDARD.encode(bytes),
                        }
                    });
                set.spawn(run_pairs(
                    vec![(a, b)],
                    make,
                    Duration::ZERO,
                    Duration::from_secs(5),
                    tally.clone(),
                    origin,
                    false,
                ));
            }
            while set.join_next().await.is_some() {}
            let bytes = tally.bytes_in_window.load(Ordering::Relaxed) as f64;
            println!(
                "relay {}: {:.0} relays/s, {:.1} MB/s (received while sending); duplicated {}",
                if cross { "cross-node" } else { "same-node" },
                tally.in_window.load(Ordering::Relaxed) as f64 / 5.0,
                bytes / 5.0 / 1e6,
                tally.duplicates.load(Ordering::Relaxed)
            );
        }
    });
    drop(nodes);
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}
