//! Operations: systemd readiness and watchdog over a real notify socket, and the two
//! metrics text formats.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{Daemon, client, runtime, temp_dir};

/// Datagrams received on `socket` until one contains `wanted` or `limit` passes.
fn wait_for(socket: &UnixDatagram, wanted: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = text.lines().any(|l| l == wanted);
            seen.push(text);
            if done {
                return seen;
            }
        }
    }
    panic!("no {wanted} within {limit:?}; got {seen:?}");
}

#[test]
fn systemd_hears_ready_watchdog_and_stopping() {
    let dir = temp_dir("notify");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let path = path.to_str().unwrap().to_string();
    let d = Daemon::start_in(
        &dir,
        "",
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "200000")],
    );
    let first = wait_for(&socket, "READY=1", Duration::from_secs(5));
    assert!(
        first.last().unwrap().contains("STATUS=serving"),
        "{first:?}"
    );
    // Petted at half the interval while ready: several within a second.
    for _ in 0..3 {
        wait_for(&socket, "WATCHDOG=1", Duration::from_secs(1));
    }
    let pid = d.pid();
    common::sigterm(pid);
    wait_for(&socket, "STOPPING=1", Duration::from_secs(5));
    assert!(d.wait_exit(Duration::from_secs(15)).success());
}

#[test]
fn metrics_come_as_prometheus_text_unless_openmetrics_is_asked_for() {
    let d = Daemon::start("");
    runtime().block_on(async {
        let plain = client().get(d.url("/metrics")).send().await.unwrap();
        assert_eq!(
            plain.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = plain.text().await.unwrap();
        assert!(
            text.contains("# TYPE commucat_key_rotations_total counter"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));

        let open = client()
            .get(d.url("/metrics"))
            .header(
                "accept",
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            )
            .send()
            .await
            .unwrap();
        assert!(
            open.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let text = open.text().await.unwrap();
        assert!(
            text.contains("# TYPE commucat_key_rotations counter"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    });
}
