//! The OpenAPI document states exactly what the daemon accepts: schemathesis (PyPI, in
//! the virtualenv `.ci/run` makes at `.venv`) generates requests from
//! `/api/openapi.json`, valid and invalid, and runs every check it has against the real
//! daemon: no 5xx, responses as documented (status, content type, schema), valid data
//! accepted, invalid data refused.
//!
//! `/api/connect` is left out: a valid request switches protocols (101), which an HTTP
//! fuzzer cannot follow; tests/signal.rs drives every outcome of that route.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Daemon, run_to_exit};

/// `SCHEMATHESIS` when set, else the project's `.venv`; a failure, not a skip.
fn schemathesis() -> PathBuf {
    let path = std::env::var_os("SCHEMATHESIS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/schemathesis"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "schemathesis is not installed at {} (make the virtualenv as .ci/run does: \
         python3 -m venv .venv && .venv/bin/pip install -r tests/schemathesis/requirements.txt)",
        path.display()
    );
    path
}

#[test]
fn every_operation_behaves_as_its_openapi_document_says() {
    let tool = schemathesis();
    // Limits lifted so that the run is not answered 429; a TURN server with a shared
    // secret so that `/api/turn` has credentials to give.
    let d = Daemon::start(
        "[limits]\nassist_rate_per_ip = 1000000\nassist_burst = 1000000\n\
         [[ice.turn]]\nurls = [\"turn:turn.example.org:3478?transport=udp\"]\n\
         secret = \"schemathesis-shared-secret-0123456789\"\n",
    );
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    let mut cmd = Command::new(tool);
    cmd.current_dir(&hooks)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", &hooks)
        .env("NO_COLOR", "1")
        .args(["run", &d.url("/api/openapi.json")])
        .args(["--checks", "all", "--exclude-path", "/api/connect"])
        // A fixed seed: a failure here reproduces with the same command.
        .args(["--max-examples", "200", "--seed", "20261202"])
        .args(["--request-timeout", "10", "--workers", "1"]);
    let (status, stdout, stderr) = run_to_exit(cmd, Duration::from_secs(600));
    assert!(
        status.success(),
        "schemathesis: {status:?}\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("No issues found"),
        "schemathesis passed without its summary line:\n{stdout}"
    );
}
