#!/usr/bin/env bash
# Long chaos runs (soaks) against a release build: three real nodes in a private network
# namespace, a recorded workload, faults on a seeded schedule, then heal and check everything.
#
# Usage: scripts/chaos.sh [--minutes M] [--nemesis LIST] [--seed N] [--out DIR] [-- EXTRA...]
#   --minutes  length of the fault phase (default 30)
#   --nemesis  comma list of kill-leader,kill-random,pause-leader,isolate-leader,kill-all
#              (default: all; isolate-leader needs root, ip and iptables)
#   --seed     replays a schedule (default: random, printed)
#   --out      report directory (default chaos-out/soak-<date>-seed<N>)
#   EXTRA      more `raftpay chaos` options, e.g. --interval-secs 5 --clients 8
# Exit status 0 on PASS, 1 on FAIL.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=30
nemesis=kill-leader,kill-random,pause-leader,isolate-leader,kill-all
seed=""
out=""
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes=$2; shift 2 ;;
        --nemesis) nemesis=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --) shift; extra=("$@"); break ;;
        *) echo "unknown argument: $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
if [ -z "$seed" ]; then
    seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
fi
out=${out:-chaos-out/soak-$(date +%Y%m%d-%H%M%S)-seed$seed}

echo "== build (release)"
cargo build --release --bin raftpay

echo "== chaos: $minutes min, nemesis $nemesis, seed $seed, report in $out"
status=0
target/release/raftpay chaos --minutes "$minutes" --nemesis "$nemesis" --seed "$seed" \
    --out "$out" "${extra[@]}" || status=$?

echo
echo "verdict: $out/summary.json"
echo "plot:    $out/throughput.svg"
echo "history: $out/history.json"
echo "logs:    $out/node1.log $out/node2.log $out/node3.log"
exit "$status"
