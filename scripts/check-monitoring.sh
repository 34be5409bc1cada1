#!/usr/bin/env bash
# Checks the monitoring files that docs/monitoring.md describes:
#
#   1. docs/grafana/raftpay.json is JSON (python3 -m json.tool), and the PromQL of every panel
#      parses: each expression, with the dashboard's variables filled in, becomes a recording
#      rule in a scratch file that `promtool check rules` reads.
#   2. docs/prometheus/alerts.yml passes `promtool check rules`.
#   3. docs/prometheus/alerts.test.yml passes `promtool test rules`: each alert fires on a
#      made-up history of what it watches for, and not for a healthy node beside it.
#   4. Every metric name the dashboard and the alerts use is on a running node's /metrics:
#      `cargo test --test monitoring` (starts one node; fails on a renamed metric).
#
#   scripts/check-monitoring.sh             all four
#   scripts/check-monitoring.sh --no-cargo  1-3 only (no Rust toolchain needed)
#
# Needs python3 and promtool (Debian: `apt-get install prometheus` ships it).
set -euo pipefail
cd "$(dirname "$0")/.."

dashboard=docs/grafana/raftpay.json
alerts=docs/prometheus/alerts.yml
alert_tests=docs/prometheus/alerts.test.yml

if ! command -v promtool >/dev/null; then
    echo "check-monitoring: promtool not found (Debian: apt-get install prometheus)" >&2
    exit 1
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

echo "== $dashboard: JSON"
python3 -m json.tool "$dashboard" >/dev/null

echo "== $dashboard: the PromQL of every panel"
python3 - "$dashboard" "$scratch/dashboard-rules.yml" <<'PY'
import json, sys
dashboard = json.load(open(sys.argv[1]))
rules = []
def panels(items):
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))
for panel in panels(dashboard["panels"]):
    for target in panel.get("targets", []):
        # Grafana's variables, as the dashboard's defaults fill them in.
        expr = target["expr"].replace("$job", "raftpay").replace("$node_id", ".*")
        rules.append({"record": "dashboard:panel_%d_%s" % (panel["id"], target["refId"]),
                      "expr": expr})
if len(rules) < 10:
    sys.exit("only %d panel expressions found" % len(rules))
# JSON is YAML: promtool reads it as a rule file.
json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[2], "w"), indent=1)
print("%d expressions" % len(rules))
PY
promtool check rules "$scratch/dashboard-rules.yml"

echo "== $alerts"
promtool check rules "$alerts"

echo "== $alert_tests"
promtool test rules "$alert_tests"

if [ "${1:-}" = "--no-cargo" ]; then
    echo "check-monitoring: OK (metric names against a node not checked: --no-cargo)"
    exit 0
fi
echo "== metric names against a running node"
cargo test -p raftpay --test monitoring
echo "check-monitoring: OK"
