//! A real `redis-server` on loopback for the cluster tests: a free port, its own
//! temporary directory, no persistence; killed and reaped when the guard drops. It can
//! be stopped and started again on the same port (the fault tests).

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::temp_dir;

/// How long redis-server may take to answer its first PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Fresh ports tried when redis-server fails to start (a port taken in between).
const START_ATTEMPTS: usize = 3;

/// `redis-server` on `PATH`, else in /usr/bin or /usr/local/bin; a failure, not a skip,
/// when it is missing.
pub(crate) fn redis_server() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`redis-server` is not installed (not on PATH, nor in /usr/bin or \
                 /usr/local/bin). The cluster tests need a real Redis: install it, e.g. \
                 `apt-get update && apt-get install -y --no-install-recommends redis-server` \
                 (.ci/run does)"
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `redis-server`, killed and reaped on drop.
pub(crate) struct Redis {
    child: Option<Child>,
    pub(crate) port: u16,
    dir: PathBuf,
}

impl Redis {
    pub(crate) fn start() -> Redis {
        let dir = temp_dir("redis");
        for _ in 0..START_ATTEMPTS {
            let mut redis = Redis {
                child: None,
                port: free_port(),
                dir: dir.clone(),
            };
            if redis.spawn() {
                return redis;
            }
        }
        panic!("redis-server did not start in {START_ATTEMPTS} attempts");
    }

    /// Starts redis-server on `self.port`; whether it answered PING in time.
    fn spawn(&mut self) -> bool {
        let child = Command::new(redis_server())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if self
                .command(&["PING"])
                .is_some_and(|r| r.starts_with("+PONG"))
            {
                return true;
            }
            if let Some(child) = self.child.as_mut()
                && child.try_wait().unwrap().is_some()
            {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Kills redis-server (it loses everything: no persistence).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops redis-server (SIGSTOP): its sockets stay open and its kernel keeps
    /// acknowledging, but nothing is answered until [`Redis::thaw`], as with a hung host.
    pub(crate) fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen redis-server run again (SIGCONT).
    pub(crate) fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        let status = Command::new("kill")
            .args([which, &pid.to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill {which} {pid}");
    }

    /// Starts it again on the same port (empty).
    pub(crate) fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + READY_TIMEOUT;
        // The port may linger a moment after the kill.
        while !self.spawn() {
            assert!(Instant::now() < deadline, "redis-server did not restart");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One command in the inline protocol; the raw reply (bounded read), or `None` if
    /// Redis does not answer.
    pub(crate) fn command(&self, args: &[&str]) -> Option<String> {
        let mut stream =
            TcpStream::connect_timeout(&self.addr(), Duration::from_millis(500)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut buf = vec![0u8; 1 << 16];
        let n = stream.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// An integer reply (`:n`).
    pub(crate) fn integer(&self, args: &[&str]) -> i64 {
        let reply = self.command(args).expect("redis answers");
        reply
            .trim()
            .strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not an integer reply to {args:?}: {reply:?}"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
