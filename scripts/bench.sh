#!/usr/bin/env bash
# The standard benchmark matrix of raftpay (issue 4), on this machine, from this checkout.
#
# Builds the release binary, then for every configuration and run starts a fresh local 3-node
# cluster with scripts/cluster.sh (a new data directory under a temporary RAFTPAY_DATA, ports
# RAFTPAY_PORT_BASE+1..3, default 7101-7103, so a development cluster on 7001-7003 is left
# alone), runs `raftpay bench` against all three nodes, and stops the cluster. At the end it
# writes docs/bench/results.md: a Markdown table of the medians over the runs with min–max, the
# failover figures and a description of the machine, next to one JSON, SVG and text report per
# run in docs/bench/. Every cluster it started is stopped on exit (trap), also on Ctrl-C.
#
# Configurations: single transfers with 1, 16, 64 and 256 clients (clients move to the leader
# once a node names it); 64 clients that stay on their node, so followers forward (the hop's
# cost); batches of 1000 with 4 clients; failover: 64 clients while the leader is SIGKILLed every
# 5 s (11 kills per run) and restarted 1 s after each kill. Then one steady run: 64 clients for
# 5 minutes without faults, counting elections (any new Raft term is a spurious one).
#
# Usage: scripts/bench.sh [--quick] [--report-only]
#   --quick        one run of each configuration, 5 s each (failover 12 s, 3 kills; steady
#                  30 s), results in target/bench-quick/ instead of docs/bench/
#   --report-only  no runs: write results.md again from the JSON reports already there
#
# Environment: RAFTPAY_PORT_BASE (default 7100), RAFTPAY_BENCH_OUT (output directory).
set -euo pipefail

readonly RUNS_FULL=3
readonly DURATION_FULL_S=20
readonly DURATION_QUICK_S=5
readonly WARMUP_S=3
readonly WARMUP_QUICK_S=1
readonly FAILOVER_EVERY_S=5
readonly FAILOVER_DURATION_FULL_S=60 # kills at 5, 10, ..., 55 s: 11 kills
readonly FAILOVER_RESTART_AFTER_S=1
readonly FAILOVER_EVERY_QUICK_S=3
readonly FAILOVER_DURATION_QUICK_S=12 # kills at 3, 6, 9 s
readonly ACCOUNTS=1000
readonly STEADY_DURATION_FULL_S=300
readonly STEADY_DURATION_QUICK_S=30

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

die() {
    echo "bench.sh: $*" >&2
    exit 1
}

quick=false
report_only=false
for arg in "$@"; do
    case $arg in
        --quick) quick=true ;;
        --report-only) report_only=true ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$repo_root"
command -v python3 >/dev/null || die "python3 is needed (as for scripts/cluster.sh)"

if $quick; then
    runs=1
    duration_s=$DURATION_QUICK_S
    warmup_s=$WARMUP_QUICK_S
    failover_every_s=$FAILOVER_EVERY_QUICK_S
    failover_duration_s=$FAILOVER_DURATION_QUICK_S
    steady_duration_s=$STEADY_DURATION_QUICK_S
    out_dir=${RAFTPAY_BENCH_OUT:-target/bench-quick}
else
    runs=$RUNS_FULL
    duration_s=$DURATION_FULL_S
    warmup_s=$WARMUP_S
    failover_every_s=$FAILOVER_EVERY_S
    failover_duration_s=$FAILOVER_DURATION_FULL_S
    steady_duration_s=$STEADY_DURATION_FULL_S
    out_dir=${RAFTPAY_BENCH_OUT:-docs/bench}
fi

# name|bench arguments (the duration is added per configuration below)
configurations=(
    "single-c1|--clients 1"
    "single-c16|--clients 16"
    "single-c64|--clients 64"
    "single-c64-forwarded|--clients 64 --no-follow-leader"
    "single-c256|--clients 256"
    "batch1000-c4|--clients 4 --batch 1000"
    "failover-c64|--clients 64 --kill-leader-every $failover_every_s --restart-after $FAILOVER_RESTART_AFTER_S"
    "steady-c64|--clients 64"
)

failed_runs=()

# Builds, then runs every configuration `runs` times, each on a fresh cluster.
matrix_run() {
    # Build, and a private copy of the binary: a rebuild in this checkout during the run cannot
    # swap it under the cluster.
    echo "bench.sh: cargo build --release --bin raftpay" >&2
    cargo build --release --bin raftpay >&2 || die "cargo build failed"

    work=$(mktemp -d "${TMPDIR:-/tmp}/raftpay-bench.XXXXXX")
    cp "${CARGO_TARGET_DIR:-target}/release/raftpay" "$work/raftpay"
    export RAFTPAY_BIN="$work/raftpay"
    export RAFTPAY_DATA="$work/data"
    export RAFTPAY_PORT_BASE=${RAFTPAY_PORT_BASE:-7100}
    nodes="127.0.0.1:$((RAFTPAY_PORT_BASE + 1)),127.0.0.1:$((RAFTPAY_PORT_BASE + 2)),127.0.0.1:$((RAFTPAY_PORT_BASE + 3))"

    cleanup() {
        local status=$?
        if [[ -d $RAFTPAY_DATA ]]; then
            scripts/cluster.sh stop >/dev/null 2>&1 || echo "bench.sh: stopping the cluster failed" >&2
        fi
        if ((status != 0)) && [[ -d $RAFTPAY_DATA ]]; then
            mkdir -p "$out_dir/logs"
            cp "$RAFTPAY_DATA"/node*.log "$out_dir/logs/" 2>/dev/null || true
            echo "bench.sh: failed; node logs copied to $out_dir/logs/" >&2
        fi
        rm -rf "$work"
        exit "$status"
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM

    mkdir -p "$out_dir"
    # The commit measured; results written here earlier do not count as changes.
    commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    git diff --quiet HEAD -- . ":(exclude)$out_dir" 2>/dev/null ||
        commit="$commit (with uncommitted changes)"
    rm -f "$out_dir"/*-run*.json "$out_dir"/*-run*.svg "$out_dir"/*-run*.txt
    printf 'run_commit=%q\nrun_started=%q\n' "$commit" "$(date -u '+%Y-%m-%d %H:%M UTC')" \
        >"$out_dir/run-info.env"

    cluster_fresh() {
        scripts/cluster.sh stop >/dev/null
        rm -rf "$RAFTPAY_DATA"
        scripts/cluster.sh start >/dev/null || die "the cluster did not start"
    }

    # The matrix.
    for configuration in "${configurations[@]}"; do
        name=${configuration%%|*}
        read -r -a bench_args <<<"${configuration#*|}"
        run_duration_s=$duration_s
        runs_this=$runs
        [[ $name == failover-* ]] && run_duration_s=$failover_duration_s
        if [[ $name == steady-* ]]; then
            run_duration_s=$steady_duration_s
            runs_this=1
        fi
        for ((run = 1; run <= runs_this; run++)); do
            echo "bench.sh: $name, run $run of $runs_this" >&2
            cluster_fresh
            base="$out_dir/$name-run$run"
            status=0
            "$RAFTPAY_BIN" --node "$nodes" bench "${bench_args[@]}" \
                --accounts "$ACCOUNTS" --duration "$run_duration_s" --warmup "$warmup_s" \
                --label "$name" --pid-dir "$RAFTPAY_DATA" \
                --json-out "$base.json" --svg "$base.svg" >"$base.txt" || status=$?
            cat "$base.txt"
            if ((status != 0)); then
                echo "bench.sh: $name run $run exited with $status" >&2
                failed_runs+=("$name-run$run (exit $status)")
            fi
        done
    done
    scripts/cluster.sh stop >/dev/null
}

$report_only || matrix_run

# ---------------------------------------------------------------------------------------------
# The report.

run_commit=unknown
run_started=unknown
# shellcheck source=/dev/null # written by matrix_run above
[[ -f $out_dir/run-info.env ]] && source "$out_dir/run-info.env"

machine_cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
machine_memory=$(free -h 2>/dev/null | awk '/^Mem:/ {print $2}')

python3 - "$out_dir" "$runs" "$quick" <<EOF
import json, os, statistics, sys

out_dir, runs, quick = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "true"
names = [c.split("|")[0] for c in """$(printf '%s\n' "${configurations[@]}")""".splitlines()]

def load(name):
    reports = []
    for run in range(1, runs + 1):
        path = os.path.join(out_dir, f"{name}-run{run}.json")
        if os.path.exists(path):
            with open(path) as f:
                reports.append(json.load(f))
    return reports

def cell(values, fmt="{:,.0f}"):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    median = statistics.median(values)
    if len(values) == 1:
        return fmt.format(median)
    return f"{fmt.format(median)} ({fmt.format(min(values))}–{fmt.format(max(values))})"

ms = "{:,.1f}"

def new_terms(reports):
    counts = [(r.get("elections") or {}).get("new_terms") for r in reports]
    if any(c is None for c in counts):
        return "?"
    return str(sum(counts))
lines = []
add = lines.append
add("# raftpay benchmark results")
add("")
add(f"Measured by \`scripts/bench.sh{' --quick' if quick else ''}\` from $run_started at commit $run_commit.")
add("")
add("**Machine:** $(nproc) CPUs ($machine_cpu), $machine_memory memory, Linux $(uname -r). "
    "The three nodes and the bench share these CPUs (127.0.0.1). *Other load* is what the rest "
    "of the machine used during the window (busy CPU time minus nodes minus bench): on a shared "
    "machine it competes with the cluster, so compare runs with similar other load.")
add("")
add(f"**Method:** each configuration ran {runs} time(s); every run on a fresh 3-node cluster "
    "(\`scripts/cluster.sh\`, new data directory), $ACCOUNTS accounts and a treasury, "
    "$warmup_s s warm-up, then $duration_s s measured ($failover_duration_s s for "
    "failover, $steady_duration_s s and one run for steady). Clients start spread over the three "
    "nodes, share one keep-alive connection pool, and move to the leader once a node names it "
    "(\`-forwarded\`: they stay on their node and followers forward every write). "
    "Cells show the median over runs and (min–max). Latency is per request; a batch request "
    "carries 1000 transfers. *New terms* counts elections started in the measured windows "
    "(summed over runs): without faults it must be 0.")
add("")
add("| configuration | transfers/s | requests/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | new terms | bench CPU (cores) | nodes CPU (cores) | other load (cores) | conservation |")
add("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for name in names:
    reports = load(name)
    if not reports:
        add(f"| {name} | no result | | | | | | | | | | | | |")
        continue
    lat = lambda key: [r["latency_request"][key] for r in reports]
    # Only when all three nodes ran through the window (no kills).
    nodes_cpu = [sum(r["cpu"]["nodes_cores"].values()) if len(r["cpu"]["nodes_cores"]) == 3 else None for r in reports]
    other = [r["cpu"]["machine_busy_cores"] - n - r["cpu"]["bench_cores"]
             if n is not None and r["cpu"]["machine_busy_cores"] is not None and r["cpu"]["bench_cores"] is not None else None
             for r, n in zip(reports, nodes_cpu)]
    verdicts = sorted({r["conservation"]["verdict"] for r in reports})
    add("| " + " | ".join([
        name,
        cell([r["transfers_per_s"] for r in reports]),
        cell([r["requests_per_s"] for r in reports]),
        cell(lat("p50_ms"), ms), cell(lat("p90_ms"), ms), cell(lat("p99_ms"), ms),
        cell(lat("p999_ms"), ms), cell(lat("max_ms"), ms),
        str(sum(r["errors"]["total"] for r in reports)),
        new_terms(reports),
        cell([r["cpu"]["bench_cores"] for r in reports], "{:.2f}"),
        cell(nodes_cpu, "{:.2f}"),
        cell(other, "{:.2f}"),
        "/".join(verdicts) + f" ({len(reports)} runs)",
    ]) + " |")
add("")

failover = [n for n in names if n.startswith("failover")]
for name in failover:
    reports = load(name)
    if not reports:
        continue
    add(f"## Failover ({name})")
    add("")
    add("Per kill: *to next ack* is the time from the kill command's return (the leader's process "
        "is gone) to the next acknowledged transfer; *longest stall* is the longest stretch "
        "without any acknowledged transfer from the kill command's start to the next kill.")
    add("")
    add("| run | kills | transfers/s | to next ack: median ms | max ms | longest stall: median ms | max ms | errors |")
    add("|---|---|---|---|---|---|---|---|")
    pooled_next, pooled_gap = [], []
    for i, r in enumerate(reports, 1):
        f = r.get("failover") or {}
        windows = [k["window"] for k in r["kills"] if k.get("window")]
        pooled_next += [w["to_next_ack_ms"] for w in windows]
        pooled_gap += [w["longest_gap_ms"] for w in windows]
        add(f"| {i} | {f.get('kills', 0)} | {r['transfers_per_s']:,.0f} | {f.get('to_next_ack_ms_median', 0):,.0f} | "
            f"{f.get('to_next_ack_ms_max', 0):,.0f} | {f.get('longest_gap_ms_median', 0):,.0f} | "
            f"{f.get('longest_gap_ms_max', 0):,.0f} | {r['errors']['total']} |")
    if pooled_next:
        add(f"| all | {len(pooled_next)} | | {statistics.median(pooled_next):,.0f} | {max(pooled_next):,.0f} | "
            f"{statistics.median(pooled_gap):,.0f} | {max(pooled_gap):,.0f} | |")
    add("")
    kills = [k for r in reports for k in r["kills"] if k.get("window") and k.get("previous_back_s") is not None]
    if kills:
        add("By how long the node killed before had been back (restart command returned) when the "
            "next kill came — a kill soon after a restart may hit a cluster whose third node is "
            "still catching up:")
        add("")
        add("| previous victim back | kills | to next ack: median ms | max ms |")
        add("|---|---|---|---|")
        for label, low, high in (("< 2 s", 0, 2), ("2–3 s", 2, 3), ("≥ 3 s", 3, 1e9)):
            group = [k["window"]["to_next_ack_ms"] for k in kills if low <= k["previous_back_s"] < high]
            if group:
                add(f"| {label} | {len(group)} | {statistics.median(group):,.0f} | {max(group):,.0f} |")
        add("")

def value(name, key, sub=None):
    reports = load(name)
    values = [r[key] if sub is None else r[key][sub] for r in reports]
    return statistics.median(values) if values else None

add("## Targets of issue 4")
add("")
add("| target | goal | measured (median) | |")
add("|---|---|---|---|")
def target(what, goal, measured, ok):
    shown = "–" if measured is None else measured
    verdict = "–" if measured is None else ("met" if ok else "not met")
    add(f"| {what} | {goal} | {shown} | {verdict} |")
v = value("single-c64", "transfers_per_s")
target("single transfers, 64 clients", "≥ 10,000 transfers/s", None if v is None else f"{v:,.0f}/s", v is not None and v >= 10000)
v = value("batch1000-c4", "transfers_per_s")
target("batch of 1000", "≥ 100,000 transfers/s", None if v is None else f"{v:,.0f}/s", v is not None and v >= 100000)
v = value("single-c16", "latency_request", "p99_ms")
target("p99 latency, 16 clients", "≤ 20 ms", None if v is None else f"{v:,.1f} ms", v is not None and v <= 20)
reports = load(failover[0]) if failover else []
next_all = [k["window"]["to_next_ack_ms"] for r in reports for k in r["kills"] if k.get("window")]
if next_all:
    med, mx = statistics.median(next_all), max(next_all)
    target(f"failover, {len(next_all)} kills", "median ≤ 500 ms, max ≤ 1 s", f"median {med:,.0f} ms, max {mx:,.0f} ms", med <= 500 and mx <= 1000)
steady = load("steady-c64")
if steady:
    terms = new_terms(steady)
    target(f"no spurious election, {steady[0]['config']['duration_s']:.0f} s of 64 clients without faults", "0 new terms", f"{terms} new terms", terms == "0")
add("")
add("## Plots")
add("")
add("Transfers/s (left axis) and p99 latency (right axis) per second of run 1; dashed lines mark leader kills.")
add("")
for name in names:
    if os.path.exists(os.path.join(out_dir, f"{name}-run1.svg")):
        add(f"![{name}]({name}-run1.svg)")
        add("")
bad = [f"{name} run {i}: {r['errors']['total']} errors, conservation {r['conservation']['verdict']}"
       for name in names for i, r in enumerate(load(name), 1)
       if r["errors"]["total"] or r["conservation"]["verdict"] != "ok"]
if bad:
    add("## Runs with errors or a failed conservation check")
    add("")
    for run in bad:
        add(f"- {run}")
    add("")
add("Reproduce: \`scripts/bench.sh\` (about 20 minutes; \`--quick\` for a two-minute smoke run). "
    "Per-run reports: \`<configuration>-run<N>.{json,svg,txt}\` in this directory.")
with open(os.path.join(out_dir, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF

echo "bench.sh: wrote $out_dir/results.md" >&2
if ((${#failed_runs[@]} > 0)); then
    die "${#failed_runs[@]} runs exited non-zero: ${failed_runs[*]}"
fi
