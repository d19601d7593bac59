//! Runs the JavaScript SDK's own test suite (`sdk/js`, `npm test`) against this build's
//! daemon and CLI, so that `cargo test` covers the SDK too: its handshake matrix, close
//! codes, session messages and the interop with `commucat-cli`, the demo page in headless
//! Chromium (data channel, TURN through coturn, relay fallback), the committed demo
//! bundle and API reference against fresh builds. Needs Node ≥ 20 and npm on the PATH,
//! coturn's `turnserver` and Debian's `chromium` (`CHROMIUM_BIN` overrides
//! `/usr/bin/chromium`); the locked dependencies are installed with `npm ci` when
//! `sdk/js/node_modules` is missing or older than `package-lock.json`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{bin, cli, run_to_exit};

const NPM_CI_LIMIT: Duration = Duration::from_secs(600);
const NPM_TEST_LIMIT: Duration = Duration::from_secs(900);

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk").join("js")
}

/// Runs `cmd` to completion (bounded); its status and both outputs, labelled.
fn run(cmd: Command, limit: Duration) -> (std::process::ExitStatus, String) {
    let (status, stdout, stderr) = run_to_exit(cmd, limit);
    (
        status,
        format!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"),
    )
}

/// Whether `node_modules` was installed from the current `package-lock.json` (npm
/// records what it installed in `node_modules/.package-lock.json`).
fn installed_from_the_lock(dir: &Path) -> bool {
    let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (
        modified(dir.join("node_modules/.package-lock.json")),
        modified(dir.join("package-lock.json")),
    ) {
        (Some(installed), Some(lock)) => installed >= lock,
        _ => false,
    }
}

#[test]
fn javascript_sdk_suite_passes_against_this_build() {
    let dir = sdk_dir();
    if !installed_from_the_lock(&dir) {
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
