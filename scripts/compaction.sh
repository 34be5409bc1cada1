#!/usr/bin/env bash
# Disk use with and without log compaction, and how long a brand-new node takes to catch up.
#
#   scripts/compaction.sh [--transfers N] [--snapshot-every ENTRIES] [--out FILE]
#
# For each mode (compaction on: a snapshot every ENTRIES log entries; off: never), starts a fresh
# local 3-node cluster on ports 7401-7403 in a temp directory, posts N single transfers with
# `raftpay bench` (64 clients, 20 s rounds), recording after every round node 1's log database,
# state database and snapshot sizes (du), then each node's data directory size, and the time for
# a new node 4 to be added as a learner and catch up (by snapshot when the log was purged).
# Writes Markdown tables to FILE (default docs/compaction.md).
set -euo pipefail
cd "$(dirname "$0")/.."

transfers=1000000
snapshot_every=20000
out=docs/compaction.md
while [ $# -gt 0 ]; do
    case "$1" in
        --transfers) transfers=$2; shift 2 ;;
        --snapshot-every) snapshot_every=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "usage: $0 [--transfers N] [--snapshot-every ENTRIES] [--out FILE]" >&2; exit 2 ;;
    esac
done

cargo build --release --bin raftpay
bin=$PWD/target/release/raftpay
work=$(mktemp -d /tmp/raftpay-compaction.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

config() { # id mode_dir snapshot_every [voter ids...]; writes mode_dir/node<id>.toml
    local id=$1 dir=$2 every=$3 voters=() v
    shift 3
    for v in "$@"; do voters+=(--voter "$v=127.0.0.1:740$v"); done
    "$bin" config init --node-id "$id" --http-addr "127.0.0.1:740$id" --data-dir "$dir/node$id" \
        "${voters[@]}" --set "raft.snapshot_logs_since_last=$every" --out "$dir/node$id.toml" --force
}

mib() { python3 -c "print(f'{$1/1048576:.0f}')"; }
mib_dir() { # a directory's size in MiB, 0 when absent
    if [ -d "$1" ]; then mib "$(du -sb "$1" | cut -f1)"; else echo 0; fi
}

seq_last() {
    curl -s --max-time 2 "http://127.0.0.1:740$1/v1/cluster?consistency=local" |
        python3 -c 'import json,sys; print(json.load(sys.stdin).get("seq_last", 0))' 2>/dev/null || echo 0
}

wait_leader() {
    for _ in $(seq 1 150); do
        if curl -s --max-time 1 http://127.0.0.1:7401/v1/cluster | grep -q '"leader_id":[0-9]'; then return 0; fi
        sleep 0.2
    done
    echo "no leader" >&2
    exit 1
}

rows=()
series=()
for mode in on off; do
    dir=$work/$mode
    mkdir -p "$dir"
    every=$snapshot_every
    [ "$mode" = off ] && every=1000000000000
    for id in 1 2 3; do
        config "$id" "$dir" "$every" 1 2 3
        "$bin" serve --config "$dir/node$id.toml" >>"$dir/node$id.log" 2>&1 &
        pids+=($!)
    done
    wait_leader
    started=$(date +%s)
    while [ "$(seq_last 1)" -lt "$transfers" ]; do
        # Only load here: a run with some 503s (an election under load) still counts, but money
        # must be conserved.
        "$bin" bench --node 127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403 --clients 64 --duration 20 \
            --warmup 0 --accounts 1000 >"$dir/bench-last.log" 2>&1 || true
        cat "$dir/bench-last.log" >>"$dir/bench.log"
        grep -q '^conservation: *OK' "$dir/bench-last.log" || { tail -20 "$dir/bench-last.log"; exit 1; }
        series+=("| $mode | $(seq_last 1) | $(mib_dir "$dir/node1/log") | $(mib_dir "$dir/node1/state") | $(mib_dir "$dir/node1/snapshot") |")
    done
    posted=$(seq_last 1)
    load_seconds=$(( $(date +%s) - started ))
    sizes=""
    for id in 1 2 3; do
        sizes+="$(du -sb "$dir/node$id" | cut -f1) "
    done
    # A brand-new node: added as learner, the call returns once it has caught up.
    config 4 "$dir" "$every"
    "$bin" serve --config "$dir/node4.toml" >>"$dir/node4.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 50); do curl -s --max-time 1 http://127.0.0.1:7404/health >/dev/null && break; sleep 0.2; done
    t0=$(date +%s.%N)
    curl -s --max-time 600 -H 'Content-Type: application/json' http://127.0.0.1:7401/v1/cluster/learners \
        -d '{"id":4,"http_addr":"127.0.0.1:7404"}' >/dev/null
    for _ in $(seq 1 6000); do [ "$(seq_last 4)" -ge "$posted" ] && break; sleep 0.1; done
    [ "$(seq_last 4)" -ge "$posted" ] || { echo "node 4 did not catch up" >&2; exit 1; }
    catch_up=$(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')")
    size4=$(du -sb "$dir/node4" | cut -f1)
    read -r s1 s2 s3 <<<"$sizes"
    rows+=("| $mode | $posted | $(mib "$s1") / $(mib "$s2") / $(mib "$s3") | $(mib_dir "$dir/node1/log") / $(mib_dir "$dir/node1/state") / $(mib_dir "$dir/node1/snapshot") | $(mib "$size4") | $catch_up | $load_seconds |")
    echo "mode $mode: ${rows[-1]}"
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    pids=()
    sleep 1
done

mkdir -p "$(dirname "$out")"
{
    echo "# Disk use and catch-up after $transfers transfers"
    echo
    echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; single transfers, 64 clients; compaction on = a snapshot every $snapshot_every log entries (1000 kept behind it)."
    echo "Produced by \`scripts/compaction.sh --transfers $transfers\` on $(date -u +%Y-%m-%d)."
    echo
    echo "| compaction | transfers posted | data dir MiB (node 1 / 2 / 3) | node 1: log / state / snapshot MiB | new node 4 MiB | node 4 catch-up s | load s |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "Node 1 during the load, after each 20 s round: the log database stays flat with compaction on"
    echo "and grows with the log when it is off; the state grows with the ledger (every transfer record"
    echo "and history entry is kept: idempotency and history need them)."
    echo
    echo "| compaction | transfers posted | log db MiB | state db MiB | snapshot MiB |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${series[@]}"
} >"$out"
cat "$out"
