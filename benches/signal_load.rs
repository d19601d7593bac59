//! Signal load on one daemon (no cluster): `LOAD_SESSIONS` sessions (default 5 000) in
//! pairs, every session signalling its partner for `LOAD_SECS` (default 60) at
//! `LOAD_RATE` signals per second in total (default 5 000, so one per session per
//! second). Every signal carries its sender's sequence number; each receiver checks
//! that its partner's signals arrive once each and in order. A lost, duplicated or
//! reordered signal is reported (and the run exits non-zero).
//!
//! `cargo bench --bench signal_load` (release build); `LOAD_SESSIONS=1000 LOAD_SECS=10`
//! for a quick run. Client and daemon share this machine's cores. Raises RLIMIT_NOFILE
//! to the hard limit.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{env_u64, open_sessions, start_daemon};
use commucat::client::connect::{ConnectionReceiver, ConnectionSender};
use commucat::client::http::{fetch_server_info, http_client};
use commucat::signal::messages::{ClientMessage, ServerMessage};
use serde_json::json;

const CONFIG: &str = "\
[limits]
connect_rate_per_ip = 1000000
connect_burst = 1000000
max_sessions_per_ip = 100000
handshake_timeout_seconds = 60

[session]
ttl_seconds = 600
keepalive_interval = 300

[log]
level = \"warn,commucat::daemon=info\"
";

/// How long a receiver waits after the senders stopped for what is still in flight.
const DRAIN: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    received: AtomicU64,
    lost: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    errors: AtomicU64,
}

/// Sends `{"s": n}` to `to` every `interval` until `stop`; returns how many it sent.
async fn send_loop(
    mut tx: ConnectionSender,
    to: String,
    interval: Duration,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> u64 {
    let mut seq = 0u64;
    let mut next = tokio::time::Instant::now() + interval.mul_f64(rand::random::<f64>());
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next).await;
        next += interval;
        let signal = ClientMessage::Signal {
            to: to.clone(),
            body: json!({ "s": seq }),
        };
        if tx.send(&signal).await.is_err() {
            break;
        }
        seq += 1;
        tally.sent.fetch_add(1, Ordering::Relaxed);
    }
    seq
}

/// Checks the partner's signals: the sequence numbers must come 0, 1, 2, …; returns
/// the next one expected once nothing arrived for [`DRAIN`] after `stop`.
async fn receive_loop(mut rx: ConnectionReceiver, stop: Arc<AtomicBool>, tally: Arc<Tally>) -> u64 {
    let mut expected = 0u64;
    loop {
        let wait = if stop.load(Ordering::Relaxed) {
            DRAIN
        } else {
            Duration::from_secs(3600)
        };
        let message = match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Ok(m)) => m,
            Ok(Err(_)) | Err(_) => return expected,
        };
        match message {
            ServerMessage::Signal { body, .. } => {
                let seq = body["s"].as_u64().unwrap_or(u64::MAX);
                tally.received.fetch_add(1, Ordering::Relaxed);
                if seq == expected {
                    expected += 1;
                } else if seq > expected {
                    tally.reordered.fetch_add(1, Ordering::Relaxed);
                    expected = seq + 1;
                } else {
                    tally.duplicated.fetch_add(1, Ordering::Relaxed);
                }
            }
            ServerMessage::Error { .. } => {
                tally.errors.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

fn main() {
    let sessions = (env_u64("LOAD_SESSIONS", 5_000) as usize) & !1;
    let secs = env_u64("LOAD_SECS", 60);
    let rate = env_u64("LOAD_RATE", 5_000).max(1);
    let nofile = commucat::sys::raise_open_file_limit().unwrap_or(0);
    assert!(
        nofile as usize > 2 * sessions + 100,
        "RLIMIT_NOFILE {nofile} is too low for {sessions} sessions"
    );
    let dir = std::env::temp_dir().join(format!("commucat-signal-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let server = start_daemon(&dir, CONFIG);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let clean = rt.block_on(async {
        let client = http_client(Duration::from_secs(30)).unwrap();
        let info = fetch_server_info(&client, &server.base(), None)
            .await
            .unwrap();
        let opened = Instant::now();
        let connections = open_sessions(&server.base(), &info, sessions, 32).await;
        println!(
            "{sessions} sessions opened in {:.1} s; daemon VmRSS {} KiB",
            opened.elapsed().as_secs_f64(),
            server.rss_kib()
        );
        // Each session sends every `interval`: `rate` signals per second in all.
        let interval = Duration::from_secs_f64(sessions as f64 / rate as f64);
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut halves: Vec<_> = connections
            .into_iter()
            .map(|c| {
                let id = c.device_id.clone();
                let (tx, rx) = c.split();
                (id, tx, rx)
            })
            .collect();
        let ids: Vec<String> = halves.iter().map(|h| h.0.clone()).collect();
        let mut senders = Vec::with_capacity(sessions);
        let mut receivers = Vec::with_capacity(sessions);
        for (i, (_, tx, rx)) in halves.drain(..).enumerate() {
            let partner = ids[i ^ 1].clone();
            senders.push(tokio::spawn(send_loop(
                tx,
                partner,
                interval,
                stop.clone(),
                tally.clone(),
            )));
            receivers.push(tokio::spawn(receive_loop(rx, stop.clone(), tally.clone())));
        }
        let started = Instant::now();
        for second in (10..=secs).step_by(10) {
            tokio::time::sleep_until(tokio::time::Instant::from_std(
                started + Duration::from_secs(second),
            ))
            .await;
            println!(
                "{second:>4} s: {} sent, {} received, daemon VmRSS {} KiB",
                tally.sent.load(Ordering::Relaxed),
                tally.received.load(Ordering::Relaxed),
                server.rss_kib()
            );
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            started + Duration::from_secs(secs),
        ))
        .await;
        stop.store(true, Ordering::Relaxed);
        let mut sent_by = Vec::with_capacity(sessions);
        for s in senders {
            sent_by.push(s.await.unwrap());
        }
        // What a partner sent but its receiver never saw is lost.
        for (i, r) in receivers.into_iter().enumerate() {
            let reached = r.await.unwrap();
            let lost = sent_by[i ^ 1].saturating_sub(reached);
            tally.lost.fetch_add(lost, Ordering::Relaxed);
        }
        let t = &*tally;
        let (sent, received) = (
            t.sent.load(Ordering::Relaxed),
            t.received.load(Ordering::Relaxed),
        );
        let (lost, duplicated, reordered, errors) = (
            t.lost.load(Ordering::Relaxed),
            t.duplicated.load(Ordering::Relaxed),
            t.reordered.load(Ordering::Relaxed),
            t.errors.load(Ordering::Relaxed),
        );
        println!(
            "\n{sessions} sessions, {secs} s, target {rate} signals/s: sent {sent} ({:.0}/s), \
             received {received}, lost {lost}, duplicated {duplicated}, reordered {reordered}, \
             error replies {errors}",
            sent as f64 / secs as f64
        );
        let clean =
            lost == 0 && duplicated == 0 && reordered == 0 && errors == 0 && sent == received;
        println!(
            "{}",
            if clean {
                "no signal lost, duplicated or reordered"
            } else {
                "FAILED"
            }
        );
        clean
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    if !clean {
        std::process::exit(1);
    }
}
