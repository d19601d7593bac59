//! Load run over loopback: the real `commucat` daemon against a trivial axum server that
//! returns a fixed body of the same size as `/api/server-info`, in the same run,
//! alternating. Closed-loop for peak throughput, then open-loop at 50 % of the assist
//! peak for latency percentiles.
//!
//! `cargo bench --bench http_load` (bounded: a few seconds per measurement).
//! Settings: `LOAD_SECS` (default 5), `LOAD_CONNS` (default 32), `LOAD_ROUNDS` (default 2).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BASELINE_ENV: &str = "COMMUCAT_BENCH_BASELINE_SIZE";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A raw HTTP/1.1 keep-alive request and a reader that returns when one response is in.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            stream,
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    async fn roundtrip(&mut self, request: &[u8]) -> u16 {
        self.stream.write_all(request).await.expect("write");
        self.buf.clear();
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).expect("ascii head");
                let status: u16 = head[9..12].parse().expect("status");
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .expect("content-length");
                let total = end + 4 + len;
                while self.buf.len() < total {
                    self.read_more().await;
                }
                return status;
            }
            self.read_more().await;
        }
    }

    async fn read_more(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Requests per second with `conns` connections, each sending as fast as answers come.
async fn closed_loop(addr: SocketAddr, request: Vec<u8>, conns: usize, secs: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let mut n = 0u64;
            while Instant::now() < deadline {
                assert_eq!(conn.roundtrip(&request).await, 200);
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    total as f64 / secs as f64
}

/// Latencies (µs) at a fixed total `rate`, measured from each request's scheduled time.
async fn open_loop(
    addr: SocketAddr,
    request: Vec<u8>,
    conns: usize,
    rate: f64,
    secs: u64,
) -> Vec<u64> {
    let per_conn_interval = Duration::from_secs_f64(conns as f64 / rate);
    let start = Instant::now() + Duration::from_millis(50);
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..conns {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let mut latencies = Vec::new();
            let mut next = start + per_conn_interval.mul_f64(i as f64 / conns as f64);
            while next < deadline {
                tokio::time::sleep_until(next.into()).await;
                assert_eq!(conn.roundtrip(&request).await, 200);
                latencies.push(next.elapsed().as_micros() as u64);
                next += per_conn_interval;
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort_unstable();
    all
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_addr(child: &mut Child, marker: &str) -> SocketAddr {
    use std::io::{BufRead, BufReader};
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(i) = line.find(marker) {
            let addr = line[i + marker.len()..]
                .split_whitespace()
                .next()
                .unwrap_or("");
            std::thread::spawn(move || for _ in lines {});
            return addr.parse().expect("address");
        }
    }
    panic!("server did not report its address");
}

fn start_daemon(dir: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_commucat"))
        .current_dir(dir)
        .env("COMMUCAT_SERVER_BIND", "127.0.0.1:0")
        .env("COMMUCAT_ICE_LITE_BIND", "127.0.0.1:0")
        .env("COMMUCAT_SERVER_STATE_DIR", dir.join("state"))
        .env("COMMUCAT_LOG_LEVEL", "warn,commucat::daemon=info")
        // One loopback source stands in for many clients: its limit is set out of reach,
        // while the limiter still runs on every request.
        .env("COMMUCAT_LIMITS_ASSIST_RATE_PER_IP", "1000000000")
        .env("COMMUCAT_LIMITS_ASSIST_BURST", "1000000000")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn commucat");
    let addr = read_addr(&mut child, " http=");
    Server { child, addr }
}

fn start_baseline(size: usize) -> Server {
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .env(BASELINE_ENV, size.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn baseline");
    let addr = read_addr(&mut child, "baseline listening on ");
    Server { child, addr }
}

/// The trivial handler: a fixed body, default multi-thread runtime, like the daemon.
fn serve_baseline(size: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let body = bytes::Bytes::from(vec![b'x'; size]);
        let app = axum::Router::new().route(
            "/fixed",
            axum::routing::get(move || {
                let body = body.clone();
                async move { body }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        eprintln!(
            "baseline listening on {}",
            listener.local_addr().expect("addr")
        );
        axum::serve(listener, app).await.expect("serve");
    });
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").into_bytes()
}

fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn main() {
    if let Ok(size) = std::env::var(BASELINE_ENV) {
        serve_baseline(size.parse().expect("size"));
        return;
    }
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful: skip there.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let secs = env_u64("LOAD_SECS", 5);
    let conns = env_u64("LOAD_CONNS", 32) as usize;
    let rounds = env_u64("LOAD_ROUNDS", 2);
    let dir = std::env::temp_dir().join(format!("commucat-http-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let daemon = start_daemon(&dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let size = rt.block_on(async {
        let mut c = Conn::open(daemon.addr).await;
        c.roundtrip(&get("/api/server-info")).await;
        let end = find(&c.buf, b"\r\n\r\n").expect("head");
        c.buf.len() - end - 4
    });
    let baseline = start_baseline(size);
    let assist_body = r#"{"paths":[{"address":"relay.example.org","port":443,"id":"a","priority":0},{"address":"192.0.2.1","port":443}],"fec":{"mtu":1200,"repair_overhead":0.4},"min_paths":2}"#;
    println!(
        "body size {size} bytes, {conns} connections, {secs} s per run, {rounds} rounds, loopback"
    );

    let (mut base, mut info, mut assist) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let b = rt.block_on(closed_loop(baseline.addr, get("/fixed"), conns, secs));
        let i = rt.block_on(closed_loop(
            daemon.addr,
            get("/api/server-info"),
            conns,
            secs,
        ));
        let a = rt.block_on(closed_loop(
            daemon.addr,
            post("/api/p2p/assist", assist_body),
            conns,
            secs,
        ));
        println!(
            "round {round}: baseline {b:.0} req/s, server-info {i:.0} req/s, assist POST {a:.0} req/s"
        );
        base.push(b);
        info.push(i);
        assist.push(a);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (b, i, a) = (mean(&base), mean(&info), mean(&assist));
    println!("server-info / baseline = {:.2} (target ≥ 0.80)", i / b);
    println!("assist POST / baseline = {:.2} (target ≥ 0.40)", a / b);

    let rate = a * 0.5;
    let lat = rt.block_on(open_loop(
        daemon.addr,
        post("/api/p2p/assist", assist_body),
        conns,
        rate,
        secs,
    ));
    println!(
        "assist POST at {rate:.0} req/s (50 % of peak): p50 {} µs, p99 {} µs, max {} µs, n = {} (target p99 ≤ 5000 µs)",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0),
        lat.len()
    );
    drop(daemon);
    drop(baseline);
    let _ = std::fs::remove_dir_all(&dir);
}
