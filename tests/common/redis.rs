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
    /// With TLS: its port, beside the plain one the tests' own checks use.
    tls_port: Option<u16>,
}

/// A test CA, a certificate for Redis on 127.0.0.1 and a client certificate, both
/// signed by the CA; PEM files in a temporary directory.
pub(crate) struct TlsFiles {
    pub(crate) dir: PathBuf,
}

impl TlsFiles {
    pub(crate) fn generate() -> TlsFiles {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa,
            KeyPair,
        };
        // Distinct names: a leaf named like its issuer reads as self-signed to OpenSSL.
        let named = |names: Vec<String>, common_name: &str| {
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name = DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            params
        };
        let dir = temp_dir("redis-tls");
        let mut ca_params = named(Vec::new(), "CommuCat test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        for (name, names) in [
            (
                "server",
                vec!["127.0.0.1".to_string(), "localhost".to_string()],
            ),
            ("client", vec!["commucat-node".to_string()]),
        ] {
            let key = KeyPair::generate().unwrap();
            let cert = named(names, name).signed_by(&key, &ca).unwrap();
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
        TlsFiles { dir }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Redis {
    pub(crate) fn start() -> Redis {
        Self::start_with(None)
    }

    /// Also serving TLS, with `tls`'s server certificate; a client must present a
    /// certificate of `tls`'s CA (`tls-auth-clients yes`).
    pub(crate) fn start_tls(tls: &TlsFiles) -> Redis {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<&TlsFiles>) -> Redis {
        let dir = temp_dir("redis");
        if let Some(tls) = tls {
            std::fs::create_dir_all(dir.join("tls")).unwrap();
            for name in ["ca.pem", "server.pem", "server.key"] {
                std::fs::copy(tls.path(name), dir.join("tls").join(name)).unwrap();
            }
        }
        for _ in 0..START_ATTEMPTS {
            let mut redis = Redis {
                child: None,
                port: free_port(),
                dir: dir.clone(),
                tls_port: tls.map(|_| free_port()),
            };
            if redis.spawn() {
                return redis;
            }
        }
        panic!("redis-server did not start in {START_ATTEMPTS} attempts");
    }

    /// Starts redis-server on `self.port`; whether it answered PING in time.
    fn spawn(&mut self) -> bool {
        let mut command = Command::new(redis_server());
        if let Some(port) = self.tls_port {
            let tls = self.dir.join("tls");
            command
                .args(["--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(tls.join("server.pem"))
                .arg("--tls-key-file")
                .arg(tls.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(tls.join("ca.pem"))
                .args(["--tls-auth-clients", "yes"]);
        }
        let child = command
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

    /// The TLS port's URL (with [`Redis::start_tls`]).
    pub(crate) fn tls_url(&self) -> String {
        let port = self.tls_port.expect("started with start_tls");
        format!("rediss://127.0.0.1:{port}")
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
