#!/usr/bin/env bash
# Builds every fuzz target on the stable toolchain and runs each for a time budget.
#
# cargo-fuzz needs nightly only for its sanitizer flags; libFuzzer's coverage
# instrumentation (SanitizerCoverage) is reachable on stable through -Cpasses and
# -Cllvm-args, as below. --target keeps the flags off build scripts and proc macros,
# which are not linked with libFuzzer. Debug assertions and overflow checks stay on, so
# an arithmetic overflow is a crash.
#
# Usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]   (default 60 s, every target)
# A crash leaves its input in fuzz/artifacts/<target>/ and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(stun_handle handshake_start session_plaintext)
fi
triple="$(rustc -vV | sed -n 's/^host: //p')"

export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cdebug-assertions -Coverflow-checks"
cargo build --locked --release --target "$triple" --bins

for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    echo "fuzzing $target for ${seconds} s"
    "target/$triple/release/$target" \
        -max_total_time="$seconds" \
        -rss_limit_mb=2048 \
        -print_final_stats=1 \
        -artifact_prefix="artifacts/$target/" \
        "corpus/$target"
done
