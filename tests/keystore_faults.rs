//! The keystore under faults: the daemon killed with SIGKILL at random moments while it
//! rotates keys every second, fifty times over, and a full disk when a rotation is due.
//! Neither may leave a keystore the next start cannot read, nor take from a client the
//! key it already holds.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Daemon, client, runtime, temp_dir};
use commucat::client::connect::{ConnectOptions, connect_with_info};
use commucat::client::http::fetch_server_info;
use commucat::discovery::ServerInfo;

fn newest_version(info: &ServerInfo) -> u32 {
    info.noise_keys.iter().map(|k| k.version).max().unwrap()
}

/// A handshake with the server's key `version`: the proof that it is still accepted.
async fn handshake_with(d: &Daemon, info: &ServerInfo, version: u32) {
    let options = ConnectOptions {
        key_version: Some(version),
        ..ConnectOptions::default()
    };
    let session = connect_with_info(&d.base(), info, options)
        .await
        .unwrap_or_else(|e| panic!("key version {version} refused: {e}"));
    session.close().await.unwrap();
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(".tmp."))
        .collect()
}

#[test]
fn sigkill_during_rotations_never_costs_a_readable_keystore_or_a_held_key() {
    let dir = temp_dir("kill9");
    // Every start finds its newest key due (interval 1 s) and rotates at once; the task
    // rotates again every second. A key stays usable 21 s, far longer than a round.
    let config = "[crypto]\nrotation_interval = 1\nrotation_grace = 20\n";
    let rt = runtime();
    let mut held: Option<u32> = None;
    for round in 0..50u64 {
        let d = Daemon::start_in(&dir, config, &[]);
        rt.block_on(async {
            let info = fetch_server_info(&client(), &d.base(), None).await.unwrap();
            if let Some(version) = held {
                handshake_with(&d, &info, version).await;
            }
            held = Some(newest_version(&info));
        });
        // Killed anywhere from at once to well after the next rotation. The spread
        // comes from the round number, so a failure reproduces.
        std::thread::sleep(Duration::from_millis(round * 37 % 1300));
        drop(d);
    }
    let d = Daemon::start_in(&dir, config, &[]);
    assert_eq!(temp_files(&dir.join("state")), Vec::<PathBuf>::new());
    rt.block_on(async {
        let info = fetch_server_info(&client(), &d.base(), None).await.unwrap();
        handshake_with(&d, &info, held.unwrap()).await;
    });
}

/// A small tmpfs at `at`, unmounted on drop (after whatever was declared later).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "this test mounts a small tmpfs to fill it up and needs to run as root: {status:?}"
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes to `dir` until the filesystem is full.
fn fill(dir: &Path) {
    let mut filler = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = [0u8; 4096];
    loop {
        if filler.write_all(&chunk).is_err() {
            return;
        }
    }
}

#[test]
fn a_full_disk_when_a_rotation_is_due_keeps_the_old_keys_and_says_why() {
    let dir = temp_dir("full-disk");
    let state = dir.join("state");
    let _disk = Tmpfs::mount(&state, "512k");
    let d = Daemon::start_in(
        &dir,
        "[crypto]\nrotation_interval = 2\nrotation_grace = 60\n",
        &[],
    );
    fill(&state);
    let rt = runtime();
    let before = rt
        .block_on(fetch_server_info(&client(), &d.base(), None))
        .unwrap();
    assert_eq!(newest_version(&before), 1);

    let said = d.wait_for_log("key rotation failed", Duration::from_secs(20));
    let said = said.expect("the failed rotation is logged");
    assert!(said.contains("No space left on device"), "{said}");

    // Still serving, with the keys it had: signed, and the old key hand-shakes.
    rt.block_on(async {
        let after = fetch_server_info(&client(), &d.base(), None).await.unwrap();
        assert_eq!(
            after
                .noise_keys
                .iter()
                .map(|k| k.version)
                .collect::<Vec<_>>(),
            vec![1]
        );
        handshake_with(&d, &after, 1).await;
        let ready = client().get(d.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200);
    });
    assert_eq!(
        temp_files(&state),
        Vec::<PathBuf>::new(),
        "a failed write cleans up"
    );
    assert!(d.stop().success());
}
