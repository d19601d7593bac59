//! A real coturn `turnserver` on loopback for the tests (tests/turn.rs, tests/doctor.rs):
//! a free port, a small relay port range, its own temporary directory for log, pid file
//! and database, no configuration file; killed and reaped when the guard drops.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use commucat::client::turn::Allocation;

use super::{run_to_exit, temp_dir};

pub(crate) const REALM: &str = "commucat.test";
/// The bound on every TURN operation and every wait for relayed data.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);
/// How long coturn may take to answer its first STUN Binding.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Fresh ports tried when coturn fails to start (a port taken in between).
pub(crate) const START_ATTEMPTS: usize = 3;
/// Relay ports per coturn (`--min-port`..`--max-port`).
pub(crate) const RELAY_PORTS: u16 = 16;
pub(crate) const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// `turnserver` on `PATH`, else in /usr/bin or /usr/local/bin; a failure, not a skip,
/// when coturn is missing.
pub(crate) fn turnserver() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join("turnserver"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "coturn's `turnserver` is not installed (not on PATH, nor in /usr/bin or \
                 /usr/local/bin). These tests need a real TURN server: install coturn, e.g. \
                 `apt-get update && apt-get install -y --no-install-recommends coturn` \
                 (.ci/run does)"
            )
        })
}

/// How coturn authenticates.
#[derive(Debug, Clone)]
pub(crate) enum CoturnAuth {
    /// TURN REST: `--use-auth-secret` and one `--static-auth-secret` per secret (coturn
    /// accepts several and tries each).
    Secrets(Vec<&'static str>),
    /// Classic long-term credentials: `--lt-cred-mech --user=name:password`.
    User(&'static str, &'static str),
    /// TURN REST with the secrets in coturn's database (`turnadmin --set-secret`).
    Database,
}

/// A running `turnserver`, killed and reaped on drop.
pub(crate) struct Coturn {
    pub(crate) child: Option<Child>,
    pub(crate) addr: SocketAddr,
    pub(crate) relay_ports: (u16, u16),
    pub(crate) dir: PathBuf,
}

impl Coturn {
    /// Starts coturn on a free port of `ip`, with `extra` flags.
    pub(crate) fn start(ip: IpAddr, auth: &CoturnAuth, extra: &[&str]) -> Coturn {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::start_on(SocketAddr::new(ip, free_port(ip)), auth, extra) {
                Ok(coturn) => return coturn,
                Err(e) => failures.push(e),
            }
        }
        panic!(
            "coturn did not start in {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n-----\n")
        );
    }

    /// Starts coturn on `addr` and waits until it answers a STUN Binding there.
    pub(crate) fn start_on(
        addr: SocketAddr,
        auth: &CoturnAuth,
        extra: &[&str],
    ) -> Result<Coturn, String> {
        let dir = temp_dir("coturn");
        let ip = addr.ip().to_string();
        let relay_ports = free_port_range(addr.ip());
        let mut cmd = Command::new(turnserver());
        // -n: no configuration file, so that /etc/turnserver.conf cannot leak in.
        cmd.arg("-n")
            .args(["--listening-ip", &ip, "--relay-ip", &ip])
            .args(["--listening-port", &addr.port().to_string()])
            .args(["--min-port", &relay_ports.0.to_string()])
            .args(["--max-port", &relay_ports.1.to_string()])
            .args(["--realm", REALM])
            .args(["--no-tls", "--no-dtls", "--no-cli", "--no-rfc5780"])
            .args(["--allow-loopback-peers", "--fingerprint"])
            .arg("--log-file")
            .arg(dir.join("turn.log"))
            .args(["--simple-log", "--no-stdout-log"])
            .arg("--pidfile")
            .arg(dir.join("turn.pid"))
            .arg("--userdb")
            .arg(dir.join("turndb"));
        match auth {
            CoturnAuth::Secrets(secrets) => {
                cmd.arg("--use-auth-secret");
                for secret in secrets {
                    cmd.arg(format!("--static-auth-secret={secret}"));
                }
            }
            CoturnAuth::Database => {
                cmd.arg("--use-auth-secret");
            }
            CoturnAuth::User(name, password) => {
                cmd.arg("--lt-cred-mech")
                    .arg(format!("--user={name}:{password}"));
            }
        }
        cmd.args(extra)
            .stdin(Stdio::null())
            .stdout(File::create(dir.join("stdout.txt")).unwrap())
            .stderr(File::create(dir.join("stderr.txt")).unwrap());
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run turnserver: {e}"))?;
        let mut coturn = Coturn {
            child: Some(child),
            addr,
            relay_ports,
            dir,
        };
        // On failure `coturn` drops here, which kills and reaps the process.
        coturn.wait_ready()?;
        Ok(coturn)
    }

    /// Sends STUN Binding requests (one every 100 ms) until one is answered.
    pub(crate) fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let local = match self.addr {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
        };
        let socket = UdpSocket::bind(local).map_err(|e| e.to_string())?;
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 1500];
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.wrapping_add(1);
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!(
                    "turnserver exited ({status}) before answering on {}\n{}",
                    self.addr,
                    self.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "turnserver did not answer a STUN Binding on {} in {READY_TIMEOUT:?}\n{}",
                    self.addr,
                    self.log_tail()
                ));
            }
            let mut tid = [0x5Au8; 12];
            tid[..4].copy_from_slice(&attempt.to_be_bytes());
            let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
            request.extend_from_slice(&tid);
            // Unreachable until coturn listens: ignore send errors as well.
            let _ = socket.send_to(&request, self.addr);
            // Each read waits at most 100 ms; at most a few stray datagrams per attempt.
            for _ in 0..8 {
                match socket.recv_from(&mut buf) {
                    Ok((len, from)) => {
                        let reply = &buf[..len];
                        if from == self.addr
                            && len >= 20
                            && reply[..2] == [0x01, 0x01]
                            && reply[8..20] == tid
                        {
                            return Ok(());
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    }

    /// Stops this coturn and starts another on the same address with `auth` (what an
    /// operator does after editing `static-auth-secret` lines).
    pub(crate) fn restart(mut self, auth: &CoturnAuth) -> Coturn {
        let addr = self.addr;
        self.kill();
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::start_on(addr, auth, &[]) {
                Ok(coturn) => return coturn,
                Err(e) => failures.push(e),
            }
        }
        panic!(
            "coturn did not restart on {addr}:\n{}",
            failures.join("\n-----\n")
        );
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The end of coturn's log and output, for failure messages.
    pub(crate) fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["turn.log", "stdout.txt", "stderr.txt"] {
            let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            out.push_str(&format!("--- coturn {name} (last 40 lines)\n{tail}\n"));
        }
        out
    }

    /// Runs `turnadmin` on this coturn's database, for its realm.
    pub(crate) fn turnadmin(&self, args: &[&str]) {
        let mut cmd = Command::new(turnserver().with_file_name("turnadmin"));
        cmd.arg("--userdb")
            .arg(self.dir.join("turndb"))
            .args(["--realm", REALM])
            .args(args);
        let (status, stdout, stderr) = run_to_exit(cmd, TIMEOUT);
        assert!(status.success(), "turnadmin {args:?}: {stdout}{stderr}");
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("turn.log")).unwrap_or_default()
    }

    pub(crate) fn check(&self, allocation: &Allocation) {
        let relayed = allocation.relayed();
        assert_eq!(relayed.ip(), self.addr.ip(), "{allocation:?}");
        let (min, max) = self.relay_ports;
        assert!(
            (min..=max).contains(&relayed.port()),
            "relay port outside {min}..={max}: {allocation:?}"
        );
        assert_eq!(allocation.mapped().ip(), self.addr.ip(), "{allocation:?}");
        assert_eq!(
            allocation.mapped().port(),
            allocation.local_addr().port(),
            "{allocation:?}"
        );
        assert_eq!(allocation.realm(), Some(REALM));
        assert!(allocation.lifetime() > Duration::ZERO, "{allocation:?}");
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        self.kill();
        // Kept after a failure, for its log.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A port of `ip` free for both UDP and TCP (coturn listens on both).
pub(crate) fn free_port(ip: IpAddr) -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind((ip, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no port of {ip} is free for both UDP and TCP");
}

/// `RELAY_PORTS` consecutive free UDP ports of `ip`, below Linux's ephemeral range
/// (32768–60999) so that the sockets other tests bind to port 0 do not land in it.
pub(crate) fn free_port_range(ip: IpAddr) -> (u16, u16) {
    for _ in 0..50 {
        let base = 20_000 + rand::random::<u16>() % 12_000;
        let last = base + RELAY_PORTS - 1;
        if (base..=last).all(|port| UdpSocket::bind((ip, port)).is_ok()) {
            return (base, last);
        }
    }
    panic!("no {RELAY_PORTS} consecutive free UDP ports on {ip}");
}

/// `turn:` URL of a coturn, as an operator writes it in `[[ice.turn]] urls`.
pub(crate) fn turn_url(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("turn:{}:{}?transport=udp", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("turn:[{}]:{}?transport=udp", a.ip(), a.port()),
    }
}

/// A daemon configuration with one TURN server authenticated by `secrets`.
pub(crate) fn rest_config(url: &str, secrets: &[&str]) -> String {
    let list = secrets
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!("[[ice.turn]]\nurls = [\"{url}\"]\nsecrets = [{list}]\nrealm = \"{REALM}\"\n")
}
