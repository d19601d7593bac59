//! STUN load comparison: our responder vs coturn `--stun-only` vs a bare tokio UDP
//! echo server, measured by the same load tool (`commucat::client::stun_load`) with the
//! same settings, in alternating rounds. Every server runs as its own child process.
//!
//! Run: `cargo bench --bench stun_load`
//! Environment (all optional):
//!   STUN_LOAD_ROUNDS (3), STUN_LOAD_SECS (5), STUN_LOAD_SOCKETS (8),
//!   STUN_LOAD_OUTSTANDING (32), STUN_LOAD_THREADS (1),
//!   STUN_LOAD_SERVER_SOCKETS (our sockets per address; default: cores),
//!   STUN_LOAD_COTURN_THREADS (coturn -m; default: cores), STUN_LOAD_SERVERS
//!   (comma list of ours,coturn,echo), TURNSERVER (/usr/bin/turnserver).
//!   STUN_LOAD_SOAK_SECS: instead of the comparison, our responder alone at peak load
//!   for that long, its VmRSS sampled every 10 s ("flat memory").
//! Child modes (used by the harness itself): `serve-ours PORT`, `serve-echo PORT`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::rss_kib;
use commucat::client::stun_load::{self, LoadReport};
use commucat::ice::credentials::IceSecret;
use commucat::ice::stun::{RequestBuilder, StunResponder};
use commucat::ice::stun_server::{StunMetrics, StunServer};
use commucat::ratelimit::RateLimitConfig;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match (
        args.get(1).map(String::as_str),
        args.get(2).and_then(|p| p.parse::<u16>().ok()),
    ) {
        (Some("serve-ours"), Some(port)) => serve_ours(port),
        (Some("serve-echo"), Some(port)) => serve_echo(port),
        _ => match std::env::var("STUN_LOAD_SOAK_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            Some(secs) => soak(secs),
            None => compare(),
        },
    }
}

/// Our responder at peak load for `secs`, in back-to-back 10 s runs, with its resident
/// memory after each.
fn soak(secs: u64) {
    let sockets = env_or("STUN_LOAD_SOCKETS", 8usize);
    let outstanding = env_or("STUN_LOAD_OUTSTANDING", 32usize);
    let threads = env_or("STUN_LOAD_THREADS", 1usize);
    let (server, port) = start(Kind::Ours);
    let pid = server.0.id();
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let start_rss = rss_kib(pid);
    println!(
        "soak: {secs} s at peak, {sockets} sockets x {outstanding} outstanding; VmRSS at start {start_rss} KiB"
    );
    let mut elapsed = 0;
    while elapsed < secs {
        let chunk = (secs - elapsed).min(10);
        let r = stun_load::run(
            target,
            sockets,
            outstanding,
            Duration::from_secs(chunk),
            threads,
        )
        .expect("load run");
        elapsed += chunk;
        println!(
            "{elapsed:>4} s: {:>9.0} responses/s  loss {:.3} %  VmRSS {} KiB",
            r.responses_per_sec,
            r.loss_ratio() * 100.0,
            rss_kib(pid)
        );
    }
    let end_rss = rss_kib(pid);
    println!(
        "VmRSS {start_rss} -> {end_rss} KiB ({:+.1} %)",
        (end_rss as f64 / start_rss as f64 - 1.0) * 100.0
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn serve_ours(port: u16) {
    let sockets = env_or("STUN_LOAD_SERVER_SOCKETS", cores());
    let rt = runtime();
    rt.block_on(async move {
        let server =
            StunServer::bind(&[SocketAddr::from(([127, 0, 0, 1], port))], sockets).expect("bind");
        let mut secret = [0u8; 32];
        secret[0] = 1;
        let responder = Arc::new(StunResponder::new(IceSecret::from_bytes(secret), false));
        // All load comes from 127.0.0.1: the limiter runs on every reply but must not
        // cap the measurement.
        let limits = RateLimitConfig {
            per_second: u32::MAX,
            burst: u32::MAX,
            table_size: 16_384,
        };
        let (_keep, shutdown) = tokio::sync::watch::channel(false);
        server
            .run(responder, limits, StunMetrics::new(), shutdown)
            .await;
    });
}

/// The baseline: one task, one `recv_from` and one `send_to` per datagram.
fn serve_echo(port: u16) {
    let rt = runtime();
    rt.block_on(async move {
        let socket = tokio::net::UdpSocket::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        let mut buf = [0u8; 2048];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ours,
    Coturn,
    Echo,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::Coturn => "coturn",
            Kind::Echo => "echo",
        }
    }
}

struct ChildServer(Child);

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    // Two consecutive free ports, UDP and TCP: coturn listens on both, and on PORT+1
    // for RFC 5780 unless told otherwise.
    loop {
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = a.local_addr().expect("addr").port();
        let free = |p: u16| {
            UdpSocket::bind(("127.0.0.1", p)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
        };
        drop(a);
        if port < u16::MAX && free(port) && free(port + 1) {
            return port;
        }
    }
}

/// Starts a server on a free port, trying again on another port if it never answers.
fn start(kind: Kind) -> (ChildServer, u16) {
    for _ in 0..3 {
        let port = free_port();
        let child = spawn(kind, port);
        if wait_until_answering(port) {
            return (child, port);
        }
    }
    panic!("{} never answered on three ports", kind.name());
}

fn spawn(kind: Kind, port: u16) -> ChildServer {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = match kind {
        Kind::Ours => {
            let mut c = Command::new(exe);
            c.args(["serve-ours", &port.to_string()]);
            c
        }
        Kind::Echo => {
            let mut c = Command::new(exe);
            c.args(["serve-echo", &port.to_string()]);
            c
        }
        Kind::Coturn => {
            let mut c = Command::new(
                std::env::var("TURNSERVER").unwrap_or_else(|_| "/usr/bin/turnserver".into()),
            );
            let threads = env_or("STUN_LOAD_COTURN_THREADS", cores()).to_string();
            c.args([
                "-n",
                "--no-cli",
                "--stun-only",
                "--no-tls",
                "--no-dtls",
                "--no-rfc5780",
                "--no-stdout-log",
                "--log-file",
                "/dev/null",
                "-L",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-m",
                &threads,
            ]);
            c
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = ChildServer(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", kind.name())),
    );
    wait_until_answering(port);
    child
}

fn wait_until_answering(port: u16) -> bool {
    let probe = UdpSocket::bind("127.0.0.1:0").expect("bind");
    probe
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let request = RequestBuilder::minimal_binding([9; 12]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        let _ = probe.send_to(&request, ("127.0.0.1", port));
        if probe.recv(&mut buf).is_ok() {
            return true;
        }
    }
    false
}

/// One measured run against a fresh server: the load report, and the server's own CPU
/// time (user + system, all its threads) during the run.
fn measure(
    kind: Kind,
    sockets: usize,
    outstanding: usize,
    secs: f64,
    threads: usize,
) -> (LoadReport, f64) {
    let (server, port) = start(kind);
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    // Warm-up, discarded.
    stun_load::run(
        target,
        sockets,
        outstanding,
        Duration::from_millis(500),
        threads,
    )
    .expect("warm-up");
    let cpu_before = cpu_seconds(server.0.id());
    let report = stun_load::run(
        target,
        sockets,
        outstanding,
        Duration::from_secs_f64(secs),
        threads,
    )
    .expect("load run");
    (report, cpu_seconds(server.0.id()) - cpu_before)
}

/// User + system CPU time of a process so far (fields 14 and 15 of /proc/PID/stat, in
/// clock ticks).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn compare() {
    let rounds = env_or("STUN_LOAD_ROUNDS", 3usize);
    let secs = env_or("STUN_LOAD_SECS", 5.0f64);
    let sockets = env_or("STUN_LOAD_SOCKETS", 8usize);
    let outstanding = env_or("STUN_LOAD_OUTSTANDING", 32usize);
    let threads = env_or("STUN_LOAD_THREADS", 1usize);
    let kinds: Vec<Kind> = std::env::var("STUN_LOAD_SERVERS")
        .unwrap_or_else(|_| "ours,coturn,echo".into())
        .split(',')
        .filter_map(|k| match k.trim() {
            "ours" => Some(Kind::Ours),
            "coturn" => Some(Kind::Coturn),
            "echo" => Some(Kind::Echo),
            _ => None,
        })
        .collect();
    println!(
        "throughput: {rounds} rounds x {secs} s, {sockets} sockets x {outstanding} outstanding, {threads} load thread(s), {} cores",
        cores()
    );
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    // Responses per second of server CPU: what a server costs, whatever the load
    // generator beside it on the same cores can offer.
    let mut per_cpu: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    let mut light: Vec<Vec<(f64, f64)>> = vec![Vec::new(); kinds.len()];
    for round in 0..rounds {
        // Rotate the order every round so that no server always runs first.
        for k in 0..kinds.len() {
            let i = (k + round) % kinds.len();
            let (r, cpu) = measure(kinds[i], sockets, outstanding, secs, threads);
            let responses = r.responses_per_sec * secs;
            println!(
                "round {round} {:>6}: {:>9.0} responses/s  loss {:.3} %  p50 {:>7.1} µs  p99 {:>7.1} µs  ({} Binding successes); server CPU {cpu:.2} s, {:.0} responses per CPU-second",
                kinds[i].name(),
                r.responses_per_sec,
                r.loss_ratio() * 100.0,
                r.p50.as_secs_f64() * 1e6,
                r.p99.as_secs_f64() * 1e6,
                r.binding_successes,
                responses / cpu.max(1e-3)
            );
            rates[i].push(r.responses_per_sec);
            per_cpu[i].push(responses / cpu.max(1e-3));
        }
        for k in 0..kinds.len() {
            let i = (k + round) % kinds.len();
            let (r, _) = measure(kinds[i], 8, 1, secs.min(3.0), threads);
            println!(
                "round {round} {:>6} light (8 x 1): {:>8.0} responses/s  p50 {:>6.1} µs  p99 {:>6.1} µs",
                kinds[i].name(),
                r.responses_per_sec,
                r.p50.as_secs_f64() * 1e6,
                r.p99.as_secs_f64() * 1e6
            );
            light[i].push((r.p50.as_secs_f64() * 1e6, r.p99.as_secs_f64() * 1e6));
        }
    }
    println!("\nmedians:");
    let medians: Vec<f64> = rates.iter().map(|r| median(r.clone())).collect();
    for (i, kind) in kinds.iter().enumerate() {
        let p50 = median(light[i].iter().map(|l| l.0).collect());
        let p99 = median(light[i].iter().map(|l| l.1).collect());
        println!(
            "{:>6}: {:>9.0} responses/s; light load p50 {:>6.1} µs, p99 {:>6.1} µs",
            kind.name(),
            medians[i],
            p50,
            p99
        );
    }
    let find = |k: Kind| kinds.iter().position(|&x| x == k).map(|i| medians[i]);
    if let (Some(ours), Some(coturn)) = (find(Kind::Ours), find(Kind::Coturn)) {
        println!("ours / coturn = {:.2}", ours / coturn);
    }
    let efficiency: Vec<f64> = per_cpu.iter().map(|r| median(r.clone())).collect();
    for (i, kind) in kinds.iter().enumerate() {
        println!(
            "{:>6}: {:>9.0} responses per server CPU-second",
            kind.name(),
            efficiency[i]
        );
    }
    let find = |k: Kind| kinds.iter().position(|&x| x == k).map(|i| efficiency[i]);
    if let (Some(ours), Some(coturn)) = (find(Kind::Ours), find(Kind::Coturn)) {
        println!(
            "per server CPU-second: ours / coturn = {:.2}",
            ours / coturn
        );
    }
    if let (Some(ours), Some(echo)) = (find(Kind::Ours), find(Kind::Echo)) {
        println!("ours / echo   = {:.2}", ours / echo);
    }
}
