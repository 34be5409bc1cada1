#!/usr/bin/env bash
# Power-loss test: a three-node cluster whose data directories are lossyfs mounts (a FUSE file
# system that drops every write not yet fsynced on command), under a load of single transfers
# and large batches (up to 8190 transfers). Each cycle cuts the power of all three nodes, of the
# leader alone, or of one follower, in turn: SIGKILL, drop the unsynced writes, check offline
# that each cut node kept its vote and every entry it had acknowledged, restart. At the end the
# chaos checker verifies every acknowledged transfer on every node exactly once, decided
# rejections kept, balances conserved, replicas identical.
#
# Usage: scripts/power-loss.sh [--cycles N] [--seed S] [--negative-control] [--out DIR]
#                              [--interval-secs S] [--debug]
#   --negative-control  runs a build whose log never fsyncs (feature unsafe-skip-fsync, which
#                       refuses to compile without debug assertions): the run must report lost
#                       transfers (result=CAUGHT), or the test proves nothing.
#   --debug             uses the dev-profile binaries (faster to build, what CI uses).
# Environment: RAFTPAY_BIN / LOSSYFS_BIN use these binaries instead of building them.
# Needs root and /dev/fuse. Exit 0 on result=PASS (or CAUGHT with --negative-control).
# Last line: power-loss: cycles=N acked=A lost=L duplicated=D result=PASS|FAIL|CAUGHT
set -euo pipefail
cd "$(dirname "$0")/.."

cycles=20
seed=1
negative=0
profile=release
out=
interval=4
usage="usage: $0 [--cycles N] [--seed S] [--negative-control] [--out DIR] [--interval-secs S] [--debug]"
while [ $# -gt 0 ]; do
    case "$1" in
        --cycles) cycles=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --negative-control) negative=1; shift ;;
        --out) out=$2; shift 2 ;;
        --interval-secs) interval=$2; shift 2 ;;
        --debug) profile=dev; shift ;;
        -h|--help) echo "$usage"; exit 0 ;;
        *) echo "unknown argument: $1 ($usage)" >&2; exit 2 ;;
    esac
done
case "$cycles" in ''|*[!0-9]*|0) echo "--cycles must be a positive integer" >&2; exit 2 ;; esac

if [ "$(id -u)" != 0 ] || [ ! -e /dev/fuse ]; then
    echo "power-loss: needs root and /dev/fuse (FUSE mounts of the data directories)" >&2
    exit 2
fi

cargo=${CARGO:-cargo}
dir_of() { if [ "$1" = dev ]; then echo debug; else echo "$1"; fi; }
started=$(date +%s)
if [ -z "${LOSSYFS_BIN:-}" ]; then
    "$cargo" build -q --profile "$profile" -p lossyfs --bin lossyfs
    LOSSYFS_BIN=target/$(dir_of "$profile")/lossyfs
fi
if [ "$negative" = 1 ]; then
    # Its own target dir (shared with scripts/negative-control.sh): never mixed with real builds.
    if [ "$profile" = release ]; then nc_profile=negative-control; else nc_profile=dev; fi
    CARGO_PROFILE_DEV_DEBUG=0 CARGO_TARGET_DIR=target/negative-control \
        "$cargo" build -q --profile "$nc_profile" --features unsafe-skip-fsync --bin raftpay
    RAFTPAY_BIN=target/negative-control/$(dir_of "$nc_profile")/raftpay
elif [ -z "${RAFTPAY_BIN:-}" ]; then
    "$cargo" build -q --profile "$profile" --bin raftpay
    RAFTPAY_BIN=target/$(dir_of "$profile")/raftpay
fi
echo "power-loss: built in $(( $(date +%s) - started )) s; raftpay $RAFTPAY_BIN, lossyfs $LOSSYFS_BIN"

if [ -z "$out" ]; then
    if [ "$negative" = 1 ]; then out=target/power-loss/negative-control-seed-$seed
    else out=target/power-loss/seed-$seed; fi
fi
args=(chaos --seed "$seed" --out "$out" --lossyfs "$LOSSYFS_BIN"
      --interval-secs "$interval" --batch-fraction 0.05 --batch-max 8190
      --read-fraction 0.1 --liveness-secs 30)
if [ "$negative" = 1 ]; then
    # Power cuts of every node until acknowledged transfers are gone (at most 60).
    args+=(--negative-control --seconds 600 --min-acked 100 --min-faults 1)
else
    # Time enough for every cycle: the cycles end the fault phase, not the clock.
    args+=(--nemesis power-cut-all,power-cut-leader,power-cut-follower
           --faults "$cycles" --min-faults "$cycles"
           --seconds $(( cycles * (interval + 30) )))
fi
status=0
RAFTPAY_LOG=${RAFTPAY_LOG:-info,openraft=warn,sled=warn} "$RAFTPAY_BIN" "${args[@]}" || status=$?
last=$(grep -h '^power-loss:' "$out/power-loss.txt" 2>/dev/null | tail -1 || true)
if [ -z "$last" ]; then
    echo "power-loss: cycles=0 acked=0 lost=0 duplicated=0 result=FAIL (the run ended without a verdict, exit $status; see $out)"
    exit 1
fi
echo "$last"
case "$last" in
    *result=PASS) [ "$negative" = 0 ] && [ "$status" = 0 ] ;;
    *result=CAUGHT) [ "$negative" = 1 ] ;;
    *) false ;;
esac
