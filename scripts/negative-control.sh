#!/usr/bin/env bash
# Negative control of the chaos suite: proves the checker would see lost money.
#
# Builds raftpay with the test-only feature `unsafe-ack-before-flush` (log appends acknowledged
# before they are flushed) into its own target dir, runs the kill-all scenario against it with
# `--negative-control` (kill-all repeated, at most 60 times, until acknowledged transfers are
# gone), and exits 0 only when the checker REPORTS lost acknowledged transfers.
#
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
built=$(date +%s)

echo "== negative control: kill-all until acknowledged transfers are lost (seed $seed)"
status=0
RAFTPAY_LOG=${RAFTPAY_LOG:-info,openraft=warn,sled=warn} \
    target/negative-control/debug/raftpay chaos --negative-control --seconds 300 --interval-secs 2 \
    --seed "$seed" --min-acked 100 --min-faults 1 --out "$out" || status=$?
finished=$(date +%s)
echo "negative control: build $((built - started)) s, run $((finished - built)) s; report in $out"
if [ "$status" -ne 0 ]; then
    echo "NEGATIVE CONTROL FAILED: the checker did not report lost acknowledged transfers" >&2
fi
exit "$status"
