#!/usr/bin/env bash
# Negative control of the chaos suite: proves the checker would see lost money.
#
# Builds raftpay with the test-only feature `unsafe-ack-before-flush` (log appends acknowledged
# before they are fsynced) into its own target dir, runs it with every data directory on lossyfs
# and cuts the power of all three nodes with `--negative-control` (repeated, at most 60 times,
# until acknowledged transfers are gone), and exits 0 only when the loss is REPORTED.
#
# (A SIGKILL cannot catch this build: the log writes each entry before acknowledging it, so the
# page cache holds it through the kill. Only a power cut drops it.)
#
# Needs root and /dev/fuse. LOSSYFS_BIN: a lossyfs binary to use instead of building one.
# Usage: scripts/negative-control.sh [--out DIR] [--seed N]
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/negative-control/chaos-report
seed=7
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        *) echo "unknown argument: $1 (usage: $0 [--out DIR] [--seed N])" >&2; exit 2 ;;
    esac
done

started=$(date +%s)
echo "== negative control: build with unsafe-ack-before-flush into target/negative-control"
# No debuginfo: this build exists only to be crashed, and it builds faster without.
CARGO_PROFILE_DEV_DEBUG=0 CARGO_TARGET_DIR=target/negative-control "${CARGO:-cargo}" build --features unsafe-ack-before-flush --bin raftpay
if [ -z "${LOSSYFS_BIN:-}" ]; then
    "${CARGO:-cargo}" build -q -p lossyfs --bin lossyfs
    LOSSYFS_BIN=target/debug/lossyfs
fi
built=$(date +%s)

echo "== negative control: power cuts of every node until acknowledged transfers are lost (seed $seed)"
status=0
RAFTPAY_LOG=${RAFTPAY_LOG:-info,openraft=warn,sled=warn} \
    target/negative-control/debug/raftpay chaos --negative-control --seconds 300 --interval-secs 2 \
    --seed "$seed" --min-acked 100 --min-faults 1 --lossyfs "$LOSSYFS_BIN" --out "$out" || status=$?
finished=$(date +%s)
echo "negative control: build $((built - started)) s, run $((finished - built)) s; report in $out"
if [ "$status" -ne 0 ]; then
    echo "NEGATIVE CONTROL FAILED: the checker did not report lost acknowledged transfers" >&2
fi
exit "$status"
