//! What the load benchmarks share: the release daemon started on loopback (and reaped),
//! and its resident memory.
#![allow(dead_code)] // each bench uses its own part

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use commucat::client::connect::{ConnectOptions, Connection, connect_with_info};
use commucat::discovery::ServerInfo;

pub(crate) fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A daemon started by [`start_daemon`]: killed and reaped on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
}

impl Server {
    pub(crate) fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the daemon in `dir` with `config` on ephemeral loopback ports and waits for
/// its ready line. `LOAD_DAEMON` runs another build (A/B comparisons).
pub(crate) fn start_daemon(dir: &Path, config: &str) -> Server {
    std::fs::write(dir.join("commucat.toml"), config).expect("config");
    let bin =
        std::env::var("LOAD_DAEMON").unwrap_or_else(|_| env!("CARGO_BIN_EXE_commucat").into());
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(dir.join("commucat.toml"))
        .current_dir(dir)
        .env("COMMUCAT_SERVER_BIND", "127.0.0.1:0")
        .env("COMMUCAT_ICE_LITE_BIND", "127.0.0.1:0")
        .env("COMMUCAT_SERVER_STATE_DIR", dir.join("state"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn commucat");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(i) = line.find(" http=") {
            let addr = line[i + 6..].split_whitespace().next().unwrap_or("");
            let addr = addr.parse().expect("address");
            // Keep draining its log so that it never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return Server { child, addr };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("daemon did not report its address");
}

/// Resident memory of a process (KiB), from /proc.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("/proc status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The default handshake (XK, version 2, hybrid) with room for a loaded machine.
pub(crate) fn load_options() -> ConnectOptions {
    ConnectOptions {
        timeout: Duration::from_secs(60),
        ..ConnectOptions::default()
    }
}

/// Opens `n` sessions with `parallel` connecting tasks.
pub(crate) async fn open_sessions(
    base: &str,
    info: &ServerInfo,
    n: usize,
    parallel: usize,
) -> Vec<Connection> {
    let base = Arc::new(base.to_owned());
    let info = Arc::new(info.clone());
    let mut out = Vec::with_capacity(n);
    let mut tasks = tokio::task::JoinSet::new();
    let per_task = n.div_ceil(parallel);
    for t in 0..parallel {
        let count = per_task.min(n.saturating_sub(t * per_task));
        let (base, info) = (base.clone(), info.clone());
        tasks.spawn(async move {
            let mut mine = Vec::with_capacity(count);
            for _ in 0..count {
                mine.push(
                    connect_with_info(&base, &info, load_options())
                        .await
                        .expect("session"),
                );
            }
            mine
        });
    }
    while let Some(done) = tasks.join_next().await {
        out.extend(done.expect("task"));
    }
    out
}

/// p50/p90/p99/max of latencies given in microseconds, printed in milliseconds.
pub(crate) fn percentiles(mut v: Vec<u64>) -> String {
    if v.is_empty() {
        return "no samples".into();
    }
    v.sort_unstable();
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    format!(
        "n={} p50={:.3} ms p90={:.3} ms p99={:.3} ms max={:.3} ms",
        v.len(),
        p(0.5),
        p(0.9),
        p(0.99),
        p(1.0)
    )
}
