//! Test support: start the real `commucat` binary on ephemeral loopback ports, find its
//! addresses in its log, stop it with SIGTERM, and always reap it.
#![allow(dead_code)]
// Tests may unwrap (clippy.toml); clippy counts only `#[test]` functions as tests, not
// these helpers.
#![allow(clippy::unwrap_used)]

pub(crate) mod coturn;
pub(crate) mod redis;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_commucat");
pub(crate) const CLI: &str = env!("CARGO_BIN_EXE_commucat-cli");
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The daemon binary: `TEST_COMMUCAT_BIN` when set, else [`BIN`] (not `COMMUCAT_*`:
/// the daemon refuses unknown settings of its own prefix). A target directory
/// shared by several checkouts holds whichever checkout built last at [`BIN`]; the
/// override names this checkout's build (`target/debug/deps/commucat-<hash>`).
pub(crate) fn bin() -> PathBuf {
    std::env::var_os("TEST_COMMUCAT_BIN").map_or_else(|| BIN.into(), PathBuf::from)
}

/// The CLI binary: `TEST_COMMUCAT_CLI` when set, else [`CLI`] (see [`bin`]).
pub(crate) fn cli() -> PathBuf {
    std::env::var_os("TEST_COMMUCAT_CLI").map_or_else(|| CLI.into(), PathBuf::from)
}

pub(crate) struct Daemon {
    child: Option<Child>,
    pub http: SocketAddr,
    pub stun: Vec<SocketAddr>,
    pub dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

/// How a daemon that was expected to fail ended.
#[derive(Debug)]
pub(crate) struct Failed {
    pub status: ExitStatus,
    pub stderr: String,
}

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "commucat-test-{name}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn command(dir: &Path, config: &str, env: &[(&str, &str)]) -> Command {
    let config_path = dir.join("commucat.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut cmd = Command::new(bin());
    cmd.arg("--config")
        .arg(&config_path)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("COMMUCAT_SERVER_BIND", "127.0.0.1:0")
        .env("COMMUCAT_ICE_LITE_BIND", "127.0.0.1:0")
        .env("COMMUCAT_SERVER_STATE_DIR", dir.join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &line[start..];
    Some(rest.split_whitespace().next().unwrap_or(""))
}

impl Daemon {
    pub(crate) fn start(config: &str) -> Daemon {
        Self::start_in(&temp_dir("d"), config, &[])
    }

    pub(crate) fn start_in(dir: &Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        match Self::try_start_in(dir, config, env) {
            Ok(d) => d,
            Err(f) => panic!("daemon failed to start: {f:?}"),
        }
    }

    /// Starts the daemon and waits for its ready line, or for it to exit.
    pub(crate) fn try_start_in(
        dir: &Path,
        config: &str,
        env: &[(&str, &str)],
    ) -> Result<Daemon, Failed> {
        let mut child = command(dir, config, env).spawn().expect("spawn commucat");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("commucat ready") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
                let http = field(&line, "http").unwrap().parse().unwrap();
                let stun = field(&line, "stun")
                    .unwrap_or("")
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().unwrap())
                    .collect();
                return Ok(Daemon {
                    child: Some(child),
                    http,
                    stun,
                    dir: dir.to_path_buf(),
                    log,
                });
            }
            if let Some(status) = child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                let stderr = log.lock().unwrap().join("\n");
                return Err(Failed { status, stderr });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "daemon did not become ready: {}",
                    log.lock().unwrap().join("\n")
                );
            }
        }
    }

    /// Starts the daemon expecting it to refuse; its stderr must name every `mentions`.
    pub(crate) fn refuses_to_start(
        dir: &Path,
        config: &str,
        env: &[(&str, &str)],
        mentions: &[&str],
    ) -> Failed {
        let failed = match Self::try_start_in(dir, config, env) {
            Ok(_) => panic!("the daemon started; expected it to refuse ({mentions:?})"),
            Err(f) => f,
        };
        for m in mentions {
            assert!(
                failed.stderr.contains(m),
                "stderr should name {m:?}: {}",
                failed.stderr
            );
        }
        failed
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub(crate) fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    /// `https://…` of a daemon configured with `[server] tls_cert` and `tls_key`.
    pub(crate) fn https_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.http)
    }

    /// Waits (bounded) until a log line contains `needle`; that line, or `None`.
    pub(crate) fn wait_for_log(&self, needle: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return Some(line.clone());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM, then wait (bounded) for a graceful exit.
    pub(crate) fn stop(self) -> ExitStatus {
        sigterm(self.pid());
        self.wait_exit(Duration::from_secs(15))
    }

    /// SIGKILL (`kill -9`): the daemon cleans nothing up; reaped here.
    pub(crate) fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits (bounded) for the daemon to exit by itself.
    pub(crate) fn wait_exit(mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("daemon did not exit in {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Sends SIGTERM to a child we spawned (and have not reaped, so the pid is still ours).
pub(crate) fn sigterm(pid: u32) {
    commucat::sys::signal(pid, commucat::sys::Signal::Terminate).expect("kill");
}

/// Sends SIGHUP (reload) to a child we spawned and have not reaped.
pub(crate) fn sighup(pid: u32) {
    commucat::sys::signal(pid, commucat::sys::Signal::Reload).expect("kill");
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a program to completion with a bounded wait (killed and reaped past it); its
/// stdout and stderr are drained by threads, so a chatty child never blocks on a full
/// pipe.
pub(crate) fn run_to_exit(mut cmd: Command, limit: Duration) -> (ExitStatus, String, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, stdout.join().unwrap(), stderr.join().unwrap())
}

pub(crate) fn client() -> reqwest::Client {
    commucat::client::http::http_client(Duration::from_secs(10)).unwrap()
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The daemon's `/metrics` text (no token).
pub(crate) async fn fetch_metrics(d: &Daemon) -> String {
    client()
        .get(d.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// [`fetch_metrics`] from synchronous code.
pub(crate) fn metrics_text(d: &Daemon) -> String {
    runtime().block_on(fetch_metrics(d))
}
