#!/usr/bin/env bash
# Run a local raftpay cluster on 127.0.0.1: node N serves HTTP on port 7000+N (7001, 7002, ...),
# or RAFTPAY_PORT_BASE+N.
#
# Every node is a background process with a pid file and a log file in the data directory.
# Processes are only ever signalled by the pid in their pid file (checked with `kill -0` and,
# where /proc exists, against the command line it was started with), never by process name.
#
# Run `scripts/cluster.sh help` for the subcommands and environment variables.
set -euo pipefail

readonly NODE_ID_MAX=99           # port 7000+N must stay in 7001..7099
readonly BASE_NODES=(1 2 3)       # the voters in cluster-configs/local-3
readonly LEADER_WAIT_S=30         # `start`: deadline for a leader to be elected
readonly HEALTH_WAIT_S=30         # `restart`/`add`: deadline for a node to serve /health
readonly STOP_WAIT_S=10           # SIGTERM grace period before SIGKILL
readonly POLL_S=0.2
readonly CURL_TIME_S=2            # every status/leader query
readonly CHANGE_TIME_S=60         # membership changes: deadline for a committed answer, retries included
readonly CHANGE_TRY_S=20          # one membership request (answered once the change is committed)
readonly CATCHUP_WAIT_S=600       # `add`: deadline for the new learner to catch up with the leader
readonly PROGRESS_EVERY_S=1       # `add`: a progress line this often while it catches up

usage() {
    cat <<'EOF'
Usage: scripts/cluster.sh <command> [args]

Commands:
  start           build the release binary (cargo build --release), start nodes 1-3 (and any
                  node added earlier with `add`) and wait until a leader is elected
  stop            stop every node: SIGTERM, then SIGKILL after 10 s
  status          per node: process alive?, role, term, last_applied
  kill-leader     SIGKILL the process of the current leader
  restart N       stop node N (if running) and start it again
  logs N          show node N's log (tail -f on a terminal; `--no-follow` or a pipe: last 200 lines)
  add N           start node N (port 7000+N), add it to the cluster as a learner and wait until
                  it has caught up with the leader (a progress line a second)
  promote N       make member N a voter (voters := current voters + N)
  remove N        remove node N from the membership (a voter is demoted first), then stop it
  help            this text

Environment:
  RAFTPAY_DATA       data directory: logs, pid files, node data (default: data/ in the repo)
  RAFTPAY_BIN        raftpay binary to run; when set, `start` does not build
                     (default: target/release/raftpay, built by `start`)
  RAFTPAY_API_TOKEN  sent as `Authorization: Bearer <token>` if the nodes require one
  RAFTPAY_PORT_BASE  node N serves on port RAFTPAY_PORT_BASE+N (default 7000); use another base
                     (with its own RAFTPAY_DATA) to run a second cluster beside the first
EOF
}

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

die_usage() {
    echo "cluster.sh: $*" >&2
    echo >&2
    usage >&2
    exit 2
}

# ---------------------------------------------------------------------------------------------
# Paths. Environment paths are relative to the caller's directory; defaults to the repo root.

caller_dir=$(pwd)
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$repo_root"

absolute_path() { # $1: path, relative to the caller's directory
    case $1 in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$caller_dir/$1" ;;
    esac
}

if [[ -n ${RAFTPAY_BIN:-} ]]; then
    bin=$(absolute_path "$RAFTPAY_BIN")
    bin_build=false
else
    bin="$repo_root/target/release/raftpay"
    bin_build=true
fi

if [[ -n ${RAFTPAY_DATA:-} ]]; then
    data_dir=$(absolute_path "$RAFTPAY_DATA")
else
    data_dir="$repo_root/data"
fi
# Canonical when it exists (so that `data`, `./data` and /abs/repo/data are the same directory);
# commands that need it create it with data_dir_create.
if [[ -d $data_dir ]]; then
    data_dir=$(cd "$data_dir" && pwd -P)
fi
# The path goes into generated TOML strings and sed replacements: keep it plain.
case $data_dir in
    *[\"\\\|\&]* | *$'\n'*) die "data directory path must not contain \" \\ | & or newlines: $data_dir" ;;
esac
port_base=${RAFTPAY_PORT_BASE:-7000}
if ! [[ $port_base =~ ^[1-9][0-9]{3,4}$ ]] || ((port_base > 65000)); then
    die "RAFTPAY_PORT_BASE must be a port number in 1000..65000, got '$port_base'"
fi
# The checked-in configs put data in data/nodeN on ports 7001-7003; any other directory or port
# base gets generated configs.
data_is_default=false
[[ $data_dir == "$repo_root/data" && $port_base == 7000 ]] && data_is_default=true
configs_dir="$data_dir/configs"

data_dir_create() {
    mkdir -p "$data_dir" || die "cannot create data directory $data_dir"
}

curl_auth=()
if [[ -n ${RAFTPAY_API_TOKEN:-} ]]; then
    curl_auth=(-H "Authorization: Bearer $RAFTPAY_API_TOKEN")
fi

# ---------------------------------------------------------------------------------------------
# Nodes: numbers, files, configs.

node_number_check() { # $1: argument that must be a node number
    if ! [[ $1 =~ ^[1-9][0-9]{0,2}$ ]] || ((10#$1 > NODE_ID_MAX)); then
        die_usage "node number must be an integer in 1..$NODE_ID_MAX, got '$1'"
    fi
}

node_port() { echo $((port_base + $1)); }
node_url() { echo "http://127.0.0.1:$(node_port "$1")"; }
node_pid_file() { echo "$data_dir/node$1.pid"; }
node_log_file() { echo "$data_dir/node$1.log"; }
node_removed_file() { echo "$data_dir/node$1.removed"; }

is_base_node() { (($1 >= 1 && $1 <= ${#BASE_NODES[@]})); }

# The config node N runs with (it may not exist yet for an added node).
node_config() {
    if is_base_node "$1" && $data_is_default; then
        echo "cluster-configs/local-3/node$1.toml"
    else
        echo "$configs_dir/node$1.toml"
    fi
}

# Writes node N's config with `raftpay config init` (the one writer of node configs): the
# settings of the checked-in config $2, this node's address and data directory, and the voters
# given after it (none: a node that joins the running cluster as a learner and never founds a
# cluster of its own).
config_write() { # $1: node number, $2: template config, $3...: voter node numbers
    local n=$1 template=$2 config voters=() m
    shift 2
    [[ -f $template ]] || die "missing $template"
    for m in "$@"; do voters+=(--voter "$m=127.0.0.1:$(node_port "$m")"); done
    config=$(node_config "$n")
    mkdir -p "$configs_dir"
    "$bin" config init --node-id "$n" --http-addr "127.0.0.1:$(node_port "$n")" \
        --data-dir "$data_dir/node$n" --from "$template" "${voters[@]}" --out "$config" --force ||
        die "could not write $config"
}

# Nodes 1-3 in a non-default data directory: the checked-in config with this data directory and
# these ports.
config_base_generate() { # $1: node number
    config_write "$1" "cluster-configs/local-3/node$1.toml" "${BASE_NODES[@]}"
}

# Nodes added later: node 1's settings, this node's id, address and data dir, no initial voters.
config_joiner_generate() { # $1: node number
    config_write "$1" "cluster-configs/local-3/node1.toml"
}

# Makes sure node N has a config; fails for an unknown node N >= 4 unless $2 is "generate".
node_config_prepare() { # $1: node number, $2: "generate" to create a joiner config
    if is_base_node "$1"; then
        $data_is_default || config_base_generate "$1"
    elif [[ ${2:-} == generate ]]; then
        config_joiner_generate "$1"
    elif [[ ! -f $(node_config "$1") ]]; then
        die "node $1 is not part of this local cluster (no $(node_config "$1")); use: add $1"
    fi
}

# All nodes this data directory knows about: 1-3, nodes with a generated config or a pid file.
nodes_known() {
    local file n
    {
        printf '%s\n' "${BASE_NODES[@]}"
        for file in "$configs_dir"/node*.toml "$data_dir"/node*.pid; do
            [[ -e $file ]] || continue
            n=${file##*/node}
            n=${n%%.*}
            [[ $n =~ ^[1-9][0-9]*$ ]] && echo "$n"
        done
    } | sort -n -u
}

# ---------------------------------------------------------------------------------------------
# Processes.

# Prints the pid of node N's process if it is alive and is the process the pid file was written
# for; prints nothing otherwise (no pid file, dead process, zombie, or a recycled pid).
node_pid() { # $1: node number
    local pid_file pid state config
    pid_file=$(node_pid_file "$1")
    [[ -f $pid_file ]] || return 0
    pid=$(<"$pid_file")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    if [[ -r /proc/$pid/stat ]]; then
        state=$(sed -e 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || true
        [[ $state == Z ]] && return 0
    fi
    if [[ -r /proc/$pid/cmdline ]]; then
        config=$(node_config "$1")
        tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$config" || return 0
    fi
    echo "$pid"
}

# Starts node N in the background, detached from this script (nohup, own session if possible).
node_launch() { # $1: node number
    local config log pid launcher=(nohup)
    config=$(node_config "$1")
    log=$(node_log_file "$1")
    command -v setsid >/dev/null && launcher=(nohup setsid)
    echo "=== $(date '+%Y-%m-%dT%H:%M:%S%z') cluster.sh: starting node $1: $bin serve --config $config" >>"$log"
    # Not a process group leader (no job control here), so setsid execs in place and $! is the
    # node's own pid.
    "${launcher[@]}" "$bin" serve --config "$config" >>"$log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$(node_pid_file "$1")"
    echo "started node $1 (pid $pid, $(node_url "$1"), log $log)"
}

# Refuses to start over a live node, or onto a port some other process serves.
node_launch_check() { # $1: node number
    local pid
    pid=$(node_pid "$1")
    [[ -z $pid ]] || die "node $1 already running (pid $pid)"
    if curl -s -o /dev/null --max-time 1 "$(node_url "$1")/health"; then
        die "port $(node_port "$1") is already served by a process this data directory does not" \
            "know ($data_dir); is a cluster with another RAFTPAY_DATA running?"
    fi
    return 0
}

# SIGTERM, wait up to STOP_WAIT_S, then SIGKILL. Removes the pid file.
nodes_stop() { # $@: node numbers
    local n pid deadline stopped=()
    declare -A pids=()
    for n in "$@"; do
        pid=$(node_pid "$n")
        if [[ -n $pid ]]; then
            kill -TERM "$pid" 2>/dev/null || true
            pids[$n]=$pid
        else
            rm -f "$(node_pid_file "$n")"
        fi
    done
    deadline=$(($(now_ms) + STOP_WAIT_S * 1000))
    for n in "${!pids[@]}"; do
        while [[ -n $(node_pid "$n") ]] && (($(now_ms) < deadline)); do sleep "$POLL_S"; done
        if [[ -n $(node_pid "$n") ]]; then
            echo "node $n (pid ${pids[$n]}) still running after ${STOP_WAIT_S}s: SIGKILL" >&2
            kill -KILL "${pids[$n]}" 2>/dev/null || true
            node_exit_wait "$n"
        fi
        rm -f "$(node_pid_file "$n")"
        stopped+=("$n")
    done
    for n in $(printf '%s\n' "${stopped[@]}" | sort -n); do
        echo "stopped node $n (pid ${pids[$n]})"
    done
}

# Waits (bounded) for node N's process to be gone after SIGKILL.
node_exit_wait() { # $1: node number
    local deadline=$(($(now_ms) + STOP_WAIT_S * 1000))
    while [[ -n $(node_pid "$1") ]]; do
        (($(now_ms) < deadline)) || die "node $1 still alive ${STOP_WAIT_S}s after SIGKILL"
        sleep 0.05
    done
}

now_ms() {
    if [[ -n ${EPOCHREALTIME:-} ]]; then
        local us=${EPOCHREALTIME//[!0-9]/}
        echo $((10#$us / 1000))
    else
        python3 -c 'import time; print(int(time.time() * 1000))'
    fi
}

log_tails_print() { # $@: node numbers; to stderr
    local n log
    for n in "$@"; do
        log=$(node_log_file "$n")
        echo "--- node $n: last 20 lines of $log" >&2
        if [[ -f $log ]]; then tail -n 20 "$log" >&2; else echo "(no log)" >&2; fi
    done
}

# ---------------------------------------------------------------------------------------------
# HTTP.

# GET /v1/cluster from node N, this node's own view. Prints the JSON body or fails.
cluster_get() { # $1: node number
    curl -s --fail --max-time "$CURL_TIME_S" "${curl_auth[@]}" \
        "$(node_url "$1")/v1/cluster?consistency=local"
}

# Prints a top-level field of the JSON on stdin ("" for null or missing); fails on bad JSON.
json_field() { # $1: field name
    python3 -c '
import json, sys
try:
    value = json.load(sys.stdin).get(sys.argv[1])
except (ValueError, AttributeError):
    sys.exit(1)
print("" if value is None else value)' "$1"
}

# The leader id as reported by the first node (in $@) that answers and knows a leader.
leader_find() { # $@: node numbers to ask
    local n body leader
    for n in "$@"; do
        body=$(cluster_get "$n" 2>/dev/null) || continue
        leader=$(json_field leader_id <<<"$body" 2>/dev/null) || continue
        if [[ -n $leader ]]; then
            echo "$leader"
            return 0
        fi
    done
    return 1
}

# Waits until node N answers GET /health.
node_health_wait() { # $1: node number
    local deadline=$(($(now_ms) + HEALTH_WAIT_S * 1000))
    until curl -s -o /dev/null --fail --max-time "$CURL_TIME_S" "$(node_url "$1")/health"; do
        if [[ -z $(node_pid "$1") ]]; then
            log_tails_print "$1"
            die "node $1 exited"
        fi
        if (($(now_ms) >= deadline)); then
            log_tails_print "$1"
            die "node $1 does not answer $(node_url "$1")/health after ${HEALTH_WAIT_S}s"
        fi
        sleep "$POLL_S"
    done
}

# A running node other than $1 that answers HTTP; prints its number.
node_other_running() { # $1: node number to avoid
    local n
    for n in $(nodes_known); do
        ((n == $1)) && continue
        [[ -n $(node_pid "$n") ]] || continue
        cluster_get "$n" >/dev/null 2>&1 && echo "$n" && return 0
    done
    return 1
}

# Sends a membership change and prints the answer; the answer's body is left in
# $membership_answer. Every change here is safe to send again (adding a member at its own address
# and setting the same voters change nothing; removing a node that is gone is a 404, taken as
# done after an attempt without a definite answer), so a 503 or no answer is retried until
# CHANGE_TIME_S. Fails on any other HTTP error.
membership_answer=""
membership_request() { # $1: method, $2: url, $3: JSON body or ""
    local body_file status deadline unsure=false
    body_file=$(mktemp)
    local args=(-s --max-time "$CHANGE_TRY_S" -o "$body_file" -w '%{http_code}' -X "$1" "${curl_auth[@]}")
    [[ -z $3 ]] || args+=(-H 'Content-Type: application/json' -d "$3")
    deadline=$(($(now_ms) + CHANGE_TIME_S * 1000))
    while :; do
        : >"$body_file"
        status=$(curl "${args[@]}" "$2") || status=000
        # Definite answers end the loop; a 503 or no answer leaves the outcome open.
        [[ $status == 503 || $status == 000 ]] || break
        unsure=true
        if (($(now_ms) >= deadline)); then
            break
        fi
        echo "$1 $2 -> $([[ $status == 000 ]] && echo "no answer" || echo "HTTP $status"); retrying" >&2
        sleep 1
    done
    membership_answer=$(cat "$body_file")
    rm -f "$body_file"
    if [[ $status == 000 ]]; then
        die "$1 $2 failed (no answer within ${CHANGE_TIME_S}s)"
    fi
    echo "$1 $2 -> HTTP $status"
    [[ -z $membership_answer ]] || printf '%s\n' "$membership_answer"
    if [[ $status == 404 && $1 == DELETE ]] && $unsure; then
        echo "(an earlier attempt had no definite answer: the node is already removed)"
        return 0
    fi
    [[ $status == 2?? ]] || die "$1 $2 answered HTTP $status"
}

# The leader's own /v1/cluster, asked of the leader that the running nodes name (so its
# replication progress is there). Prints the JSON body or fails.
leader_status() {
    local n nodes=() leader body
    for n in $(nodes_known); do [[ -z $(node_pid "$n") ]] || nodes+=("$n"); done
    ((${#nodes[@]} > 0)) || return 1
    leader=$(leader_find "${nodes[@]}") || return 1
    [[ $leader =~ ^[0-9]+$ ]] || return 1
    body=$(cluster_get "$leader") || return 1
    [[ $(json_field node_id <<<"$body") == "$(json_field leader_id <<<"$body")" ]] || return 1
    printf '%s\n' "$body"
}

# Reads a leader's /v1/cluster on stdin; prints "<role> <matched_index> <lag_entries>
# <last_log_index>" for member $1 ("-" for unknown values; "absent" when not a member).
member_progress() { # $1: node id
    python3 -c '
import json, sys
c = json.load(sys.stdin)
want = int(sys.argv[1])
members = {m.get("id"): m for m in c.get("members") or []}
m = members.get(want)
show = lambda v: "-" if v is None else v
if m is None:
    print("absent")
else:
    print(m.get("role"), show(m.get("matched_index")), show(m.get("lag_entries")), show(c.get("last_log_index")))
' "$1"
}

# Waits until node N holds the log up to index $2 (the leader's log when N was added), as the
# leader reports it; prints a progress line every PROGRESS_EVERY_S.
catchup_wait() { # $1: node number, $2: log index to reach
    local n=$1 target=$2 body progress role matched lag last deadline next_line_ms=0
    deadline=$(($(now_ms) + CATCHUP_WAIT_S * 1000))
    while :; do
        progress=""
        if body=$(leader_status 2>/dev/null); then
            progress=$(member_progress "$n" <<<"$body" 2>/dev/null) || progress=""
        fi
        read -r role matched lag last <<<"${progress:-unknown - - -}"
        [[ $role != absent ]] || die "node $n is no longer a member"
        if [[ $matched =~ ^[0-9]+$ ]] && ((matched >= target)); then
            echo "node $n caught up: it holds the log up to index $matched (needed $target; leader at $last)"
            return 0
        fi
        if (($(now_ms) >= deadline)); then
            log_tails_print "$n"
            die "node $n did not catch up within ${CATCHUP_WAIT_S}s (holds $matched of $target)"
        fi
        if (($(now_ms) >= next_line_ms)); then
            if [[ $role == unknown ]]; then
                echo "node $n catching up: no leader answers right now"
            else
                echo "node $n catching up: holds index $matched of $target needed (leader at $last, $lag entries behind)"
            fi
            next_line_ms=$(($(now_ms) + PROGRESS_EVERY_S * 1000))
        fi
        sleep "$POLL_S"
    done
}

# ---------------------------------------------------------------------------------------------
# Commands.

binary_prepare() { # $1: "build" to always run cargo (no-op when up to date)
    if $bin_build && { [[ ${1:-} == build ]] || [[ ! -x $bin ]]; }; then
        echo "building: cargo build --release --bin raftpay"
        cargo build --release --bin raftpay >&2 || die "cargo build failed"
    fi
    [[ -x $bin ]] || die "binary not found or not executable: $bin"
}

cmd_start() {
    local n started_ms leader elapsed_ms
    local nodes=() launched=()
    binary_prepare build
    data_dir_create
    echo "data directory: $data_dir"
    # Nodes 1-3, and nodes added earlier that were not removed since.
    for n in $(nodes_known); do
        [[ -e $(node_removed_file "$n") ]] && continue
        if ! is_base_node "$n"; then
            [[ -f $(node_config "$n") && -d $data_dir/node$n ]] || continue
        fi
        nodes+=("$n")
    done
    started_ms=$(now_ms)
    for n in "${nodes[@]}"; do
        if [[ -n $(node_pid "$n") ]]; then
            echo "node $n already running (pid $(node_pid "$n"))" >&2
            continue
        fi
        node_config_prepare "$n"
        node_launch_check "$n"
        node_launch "$n"
        launched+=("$n")
    done
    # Wait for a leader. Only ask nodes whose process is ours and alive, so that a stray process
    # on the same port cannot answer for a node that failed to start.
    local deadline=$((started_ms + LEADER_WAIT_S * 1000)) alive
    while :; do
        alive=()
        for n in "${nodes[@]}"; do [[ -z $(node_pid "$n") ]] || alive+=("$n"); done
        if ((${#alive[@]} > 0)) && leader=$(leader_find "${alive[@]}"); then
            break
        fi
        if ((${#alive[@]} == 0)); then
            log_tails_print "${nodes[@]}"
            die "every node exited; no leader"
        fi
        if (($(now_ms) >= deadline)); then
            log_tails_print "${nodes[@]}"
            die "no leader elected within ${LEADER_WAIT_S}s"
        fi
        sleep "$POLL_S"
    done
    elapsed_ms=$(($(now_ms) - started_ms))
    if ((${#launched[@]} == 0)); then
        echo "leader: node $leader (every node was already running)"
        return 0
    fi
    printf 'leader: node %s (elected in %d.%ds)\n' "$leader" $((elapsed_ms / 1000)) $((elapsed_ms % 1000 / 100))
}

cmd_stop() {
    local n nodes=()
    for n in $(nodes_known); do
        [[ -e $(node_pid_file "$n") ]] && nodes+=("$n")
    done
    if ((${#nodes[@]} == 0)); then
        echo "no nodes running (data directory $data_dir)"
        return 0
    fi
    nodes_stop "${nodes[@]}"
}

# One line per node: process, and the node's own view of the cluster.
cmd_status() {
    local n pid body process summary
    echo "data directory: $data_dir"
    for n in $(nodes_known); do
        pid=$(node_pid "$n")
        if [[ -n $pid ]]; then
            process="pid $pid"
        elif [[ -e $(node_removed_file "$n") ]]; then
            process="removed"
        elif [[ -e $(node_pid_file "$n") ]]; then
            process="dead (stale pid file)"
        else
            process="not running"
        fi
        summary="-"
        if [[ -n $pid ]]; then
            if body=$(cluster_get "$n" 2>/dev/null); then
                summary=$(python3 -c '
import json, sys
try:
    c = json.load(sys.stdin)
except ValueError:
    print("bad answer from /v1/cluster"); sys.exit(0)
me, leader = c.get("node_id"), c.get("leader_id")
members = {m.get("id"): m.get("role") for m in c.get("members") or []}
if leader is not None and leader == me:
    role = "leader"
elif members.get(me) == "learner":
    role = "learner"
elif me not in members:
    role = "not a member"
elif leader is None:
    role = "no leader"
else:
    role = "follower"
term, applied = c.get("term"), c.get("last_applied")
leader_shown = "none" if leader is None else leader
print(f"{role:<12} term {term}  last_applied {applied}  leader {leader_shown}")' <<<"$body")
            else
                summary="no answer from $(node_url "$n")"
            fi
        fi
        printf 'node %-3s %-22s %s\n' "$n" "$process" "$summary"
    done
}

cmd_kill_leader() {
    local leader pid nodes=() n
    for n in $(nodes_known); do [[ -z $(node_pid "$n") ]] || nodes+=("$n"); done
    ((${#nodes[@]} > 0)) || die "no node running (data directory $data_dir)"
    leader=$(leader_find "${nodes[@]}") || die "no leader known to any running node"
    [[ $leader =~ ^[0-9]+$ ]] || die "unexpected leader_id: $leader"
    pid=$(node_pid "$leader")
    [[ -n $pid ]] || die "leader is node $leader, but it has no live process in $data_dir"
    kill -KILL "$pid"
    node_exit_wait "$leader"
    rm -f "$(node_pid_file "$leader")"
    echo "killed leader node $leader (pid $pid)"
}

cmd_restart() { # $1: node number
    local n=$1
    data_dir_create
    binary_prepare
    node_config_prepare "$n"
    [[ -z $(node_pid "$n") ]] || nodes_stop "$n"
    rm -f "$(node_pid_file "$n")"
    node_launch_check "$n"
    node_launch "$n"
    node_health_wait "$n"
    echo "node $n is serving"
}

cmd_logs() { # $1: node number, $2: follow (true/false)
    local log
    log=$(node_log_file "$1")
    [[ -f $log ]] || die "no log for node $1: $log"
    if $2 && [[ -t 1 ]]; then
        exec tail -n 100 -f "$log"
    fi
    exec tail -n 200 "$log"
}

cmd_add() { # $1: node number
    local n=$1 other pid target
    data_dir_create
    binary_prepare
    if is_base_node "$n"; then
        node_config_prepare "$n"
    else
        node_config_prepare "$n" generate
    fi
    echo "data directory: $data_dir"
    other=$(node_other_running "$n") || die "no other running node answers; start the cluster first"
    pid=$(node_pid "$n")
    if [[ -n $pid ]]; then
        echo "node $n already running (pid $pid); joining it"
    else
        rm -f "$(node_pid_file "$n")"
        node_launch_check "$n"
        node_launch "$n"
    fi
    node_health_wait "$n"
    # Answered once the membership change is committed (the leader's view then), not after the
    # learner caught up: that is waited for below, from the leader's replication progress.
    membership_request POST "$(node_url "$other")/v1/cluster/learners" \
        "{\"id\":$n,\"http_addr\":\"127.0.0.1:$(node_port "$n")\"}"
    rm -f "$(node_removed_file "$n")"
    target=$(json_field last_log_index <<<"$membership_answer" 2>/dev/null) || target=""
    [[ $target =~ ^[0-9]+$ ]] || die "the answer names no last_log_index"
    echo "node $n added as a learner; waiting until it holds the leader's log up to index $target"
    catchup_wait "$n" "$target"
    echo "node $n is a learner and has caught up (make it a voter with: $0 promote $n)"
}

cmd_promote() { # $1: node number
    local n=$1 other body voters role
    other=$(node_other_running "$n") || die "no running node other than node $n answers"
    body=$(leader_status) || die "no leader answers right now; try again"
    read -r role _ <<<"$(member_progress "$n" <<<"$body")"
    case $role in
        absent) die "node $n is not a member; add it first: $0 add $n" ;;
        voter)
            echo "node $n is already a voter"
            return 0
            ;;
    esac
    # The leader's voters plus N (a follower's view could lag a change and demote someone).
    voters=$(python3 -c '
import json, sys
c = json.load(sys.stdin)
ids = sorted({m["id"] for m in c.get("members") or [] if m.get("role") == "voter"} | {int(sys.argv[1])})
print(",".join(str(i) for i in ids))' "$n" <<<"$body")
    membership_request POST "$(node_url "$other")/v1/cluster/voters" "{\"ids\":[$voters]}"
    echo "node $n is a voter (voters: $voters)"
}

cmd_remove() { # $1: node number
    local n=$1 other
    other=$(node_other_running "$n") || die "no running node other than node $n answers"
    membership_request DELETE "$(node_url "$other")/v1/cluster/nodes/$n" ""
    # `start` must not bring a removed node back; `add N` clears this.
    touch "$(node_removed_file "$n")"
    nodes_stop "$n"
    echo "node $n removed from the cluster and stopped (its data stays in $data_dir/node$n)"
}

# ---------------------------------------------------------------------------------------------

main() {
    (($# > 0)) || die_usage "missing command"
    local command=$1
    shift
    case $command in
        start | stop | status | kill-leader)
            (($# == 0)) || die_usage "$command takes no arguments"
            case $command in
                start) cmd_start ;;
                stop) cmd_stop ;;
                status) cmd_status ;;
                kill-leader) cmd_kill_leader ;;
            esac
            ;;
        restart | add | promote | remove)
            (($# == 1)) || die_usage "usage: $command N"
            node_number_check "$1"
            "cmd_$command" $((10#$1))
            ;;
        logs)
            local node="" follow=true arg
            for arg in "$@"; do
                case $arg in
                    --no-follow) follow=false ;;
                    -*) die_usage "logs: unknown option $arg" ;;
                    *)
                        [[ -z $node ]] || die_usage "usage: logs N [--no-follow]"
                        node=$arg
                        ;;
                esac
            done
            [[ -n $node ]] || die_usage "usage: logs N [--no-follow]"
            node_number_check "$node"
            cmd_logs $((10#$node)) "$follow"
            ;;
        help | -h | --help) usage ;;
        *) die_usage "unknown command: $command" ;;
    esac
}

main "$@"
