//! Runs the JavaScript SDK's own test suite (`sdk/js`, `npm test`) against this build's
//! daemon and CLI, so that `cargo test` covers the SDK too: its handshake matrix, close
//! codes, session messages and the interop with `commucat-cli`, the demo page in headless
//! Chromium (data channel, TURN through coturn, relay fallback), the committed demo
//! bundle and API reference against fresh builds. Needs Node ≥ 20 and npm on the PATH,
//! coturn's `turnserver` and Debian's `chromium` (`CHROMIUM_BIN` overrides
//! `/usr/bin/chromium`); the locked dependencies are installed with `npm ci` when
//! `sdk/js/node_modules` is missing.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_commucat");
const CLI: &str = env!("CARGO_BIN_EXE_commucat-cli");
const NPM_CI_LIMIT: Duration = Duration::from_secs(600);
const NPM_TEST_LIMIT: Duration = Duration::from_secs(900);

/// The daemon: `TEST_COMMUCAT_BIN` when set, else this build's (as tests/common does).
fn bin() -> PathBuf {
    std::env::var_os("TEST_COMMUCAT_BIN").map_or_else(|| BIN.into(), PathBuf::from)
}

/// The CLI: `TEST_COMMUCAT_CLI` when set, else this build's.
fn cli() -> PathBuf {
    std::env::var_os("TEST_COMMUCAT_CLI").map_or_else(|| CLI.into(), PathBuf::from)
}

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk").join("js")
}

/// Runs `cmd` to completion with a bounded wait; stdout and stderr are drained by
/// threads so that a chatty child never blocks on a full pipe.
fn run(mut cmd: Command, limit: Duration) -> (ExitStatus, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("spawn npm (is Node.js with npm installed?)");
    let drain = |mut pipe: Box<dyn Read + Send>| {
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
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        stdout.join().unwrap(),
        stderr.join().unwrap()
    );
    (status, output)
}

#[test]
fn javascript_sdk_suite_passes_against_this_build() {
    let dir = sdk_dir();
    if !dir.join("node_modules").is_dir() {
        let mut ci = Command::new("npm");
        ci.arg("ci").current_dir(&dir);
        let (status, output) = run(ci, NPM_CI_LIMIT);
        assert!(status.success(), "npm ci failed ({status}):\n{output}");
    }
    let mut test = Command::new("npm");
    test.arg("test")
        .current_dir(&dir)
        .env("COMMUCAT_BIN", bin())
        .env("COMMUCAT_CLI_BIN", cli());
    let (status, output) = run(test, NPM_TEST_LIMIT);
    assert!(status.success(), "npm test failed ({status}):\n{output}");
    // A suite that ran nothing would also exit 0.
    assert_eq!(summary(&output, "fail"), Some(0), "{output}");
    assert!(summary(&output, "pass").unwrap_or(0) > 0, "{output}");
}

/// The `pass`/`fail` count of `node --test`'s summary, as the TAP (`# pass 53`) and the
/// spec (`ℹ pass 53`) reporters print it.
fn summary(output: &str, what: &str) -> Option<u64> {
    output.lines().rev().find_map(|line| {
        let rest = line
            .trim_start_matches(['#', 'ℹ', ' '])
            .strip_prefix(what)?
            .strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}
