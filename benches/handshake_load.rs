//! Load run for `/api/connect` over loopback against the real (release) daemon:
//!
//! 1. memory: RSS growth of the daemon (VmRSS from /proc) with `LOAD_SESSIONS` idle
//!    sessions open (default 10 000), divided by the number of sessions;
//! 2. throughput: sustained hybrid handshakes (XK, version 2, PQ) per second with
//!    `LOAD_CONNS` client loops (default 16) for `LOAD_SECS` (default 10), each loop
//!    connecting, handshaking, reading the welcome and closing;
//! 3. responsiveness: `/healthz` latency sampled every 20 ms before and during the load.
//!
//! `cargo bench --bench handshake_load`; `LOAD_DAEMON=/path/to/commucat` runs another
//! build of the daemon. The client runs in this process on the same
//! machine, so the handshake rate is shared CPU between client and server crypto.
//! Raises RLIMIT_NOFILE to the hard limit (10 000 sessions need about 10 000 fds on
//! each side).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::{Server, env_u64, load_options, open_sessions, percentiles, rss_kib, start_daemon};
use commucat::client::connect::connect_with_info;
use commucat::client::http::{fetch_server_info, http_client};

fn raise_nofile() -> u64 {
    commucat::sys::raise_open_file_limit().unwrap_or(0)
}

const CONFIG: &str = "\
[limits]
connect_rate_per_ip = 1000000
connect_burst = 1000000
max_sessions = 100000
handshake_timeout_seconds = 60

[session]
ttl_seconds = 600
keepalive_interval = 300

[log]
level = \"warn,commucat::daemon=info\"
";

/// `/healthz` latencies (µs) sampled every 20 ms until `stop`.
async fn sample_healthz(base: String, stop: Arc<AtomicBool>) -> Vec<u64> {
    let client = http_client(Duration::from_secs(10)).expect("client");
    let url = format!("{base}/healthz");
    let mut samples = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let ok = client
            .get(&url)
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        assert!(ok, "/healthz failed");
        samples.push(started.elapsed().as_micros() as u64);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    samples
}

async fn run(server: &Server, sessions: usize, conns: usize, secs: u64) {
    let base = format!("http://{}", server.addr);
    let pid = server.child.id();
    let client = http_client(Duration::from_secs(10)).expect("client");
    let info = fetch_server_info(&client, &base, None)
        .await
        .expect("server-info");

    // Warm-up, so allocator arenas and lazy statics are in place before the baseline.
    for c in open_sessions(&base, &info, 200, 8).await {
        let _ = c.close().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let before = rss_kib(pid);
    let started = Instant::now();
    let open = open_sessions(&base, &info, sessions, 32).await;
    let opened_in = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);
    let per_session = (after.saturating_sub(before)) as f64 * 1024.0 / sessions.max(1) as f64;
    println!(
        "idle sessions: {sessions} opened in {:.1} s; daemon VmRSS {before} KiB -> {after} KiB; {:.1} KiB per session",
        opened_in.as_secs_f64(),
        per_session / 1024.0
    );
    let closing = Instant::now();
    drop(open);
    println!(
        "(sessions dropped in {:.1} s)",
        closing.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let idle = tokio::spawn(sample_healthz(base.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let idle = idle.await.expect("sampler");
    println!("/healthz without load: {}", percentiles(idle));

    let stop = Arc::new(AtomicBool::new(false));
    let loaded = tokio::spawn(sample_healthz(base.clone(), stop.clone()));
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (base, info, done) = (base.clone(), info.clone(), done.clone());
        loops.spawn(async move {
            while Instant::now() < deadline {
                let c = connect_with_info(&base, &info, load_options())
                    .await
                    .expect("handshake");
                let _ = c.close().await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let started = Instant::now();
    while loops.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let loaded = loaded.await.expect("sampler");
    let n = done.load(Ordering::Relaxed);
    println!(
        "hybrid handshakes (XK v2 PQ, connect+handshake+welcome+close): {n} in {elapsed:.1} s = {:.0}/s with {conns} client loops",
        n as f64 / elapsed
    );
    println!("/healthz during the load: {}", percentiles(loaded));
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let nofile = raise_nofile();
    let sessions = env_u64("LOAD_SESSIONS", 10_000) as usize;
    let conns = env_u64("LOAD_CONNS", 16) as usize;
    let secs = env_u64("LOAD_SECS", 10);
    println!("RLIMIT_NOFILE {nofile}");
    let dir = std::env::temp_dir().join(format!("commucat-hsload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let server = start_daemon(&dir, CONFIG);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(&server, sessions, conns, secs));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
