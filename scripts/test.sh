#!/usr/bin/env bash
# The test suite, as CI runs it: unit and property tests, storage tests, and the integration
# tests that start real `raftpay serve` processes (tests/). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
cargo test --workspace --all-targets "$@"
echo "test suite wall time: $(( $(date +%s) - started )) s"
