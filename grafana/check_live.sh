#!/usr/bin/env bash
# Evaluates every dashboard query against a real, throwaway Prometheus:
#   1. synthetic_metrics.py writes 3 hours of metrics of a healthy 3-node
#      cluster; promtool backfills them into a temporary TSDB;
#   2. Prometheus starts on a free loopback port with that TSDB and the rules
#      of deploy/prometheus/rules (no scraping);
#   3. check_dashboards.py --prometheus --require-data: every expr (with
#      $__rate_interval=1m, $__range=1h) must parse and return data;
#   4. every recording and alerting rule must evaluate without error, and no
#      alert may fire on the healthy data.
# Needs prometheus and promtool (apt-get install prometheus) and python3.
# Everything runs on 127.0.0.1 and is removed on exit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rules="$here/../deploy/prometheus/rules/dermagate.rules.yml"
work="$(mktemp -d)"
prom_pid=""
cleanup() {
    if [[ -n "$prom_pid" ]]; then kill "$prom_pid" 2>/dev/null || true; wait "$prom_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

for tool in prometheus promtool python3 curl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$tool not found" >&2; exit 127; }
done

echo "== synthetic metrics, backfilled"
python3 "$here/synthetic_metrics.py" > "$work/metrics.om"
promtool tsdb create-blocks-from openmetrics "$work/metrics.om" "$work/tsdb" >/dev/null

cat > "$work/prometheus.yml" <<CONFIG
global:
  evaluation_interval: 5s
rule_files:
  - $rules
scrape_configs: []
CONFIG

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"
echo "== prometheus on $url"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --storage.tsdb.retention.time=30d --web.listen-address="127.0.0.1:$port" \
    > "$work/prometheus.log" 2>&1 &
prom_pid=$!

# Wait for readiness (at most 30 s).
for _ in $(seq 60); do
    curl -fs "$url/-/ready" >/dev/null 2>&1 && break
    sleep 0.5
done
curl -fs "$url/-/ready" >/dev/null || { cat "$work/prometheus.log" >&2; echo "prometheus did not start" >&2; exit 1; }

echo "== dashboard queries"
python3 "$here/check_dashboards.py" --prometheus "$url" --require-data

echo "== rule health after two evaluation rounds"
sleep 11
curl -fs "$url/api/v1/rules" > "$work/rules.json"
curl -fs "$url/api/v1/alerts" > "$work/alerts.json"
python3 - "$work/rules.json" "$work/alerts.json" <<'PY'
import json, sys
rules = json.load(open(sys.argv[1]))["data"]["groups"]
alerts = json.load(open(sys.argv[2]))["data"]["alerts"]
bad = [(r["name"], r.get("lastError")) for g in rules for r in g["rules"] if r.get("health") != "ok"]
count = sum(len(g["rules"]) for g in rules)
for name, error in bad:
    print(f"FAIL rule {name}: {error}")
for alert in alerts:
    print(f"FAIL alert {alert['labels']['alertname']} is {alert['state']} on healthy data")
if bad or alerts or count == 0:
    sys.exit(1)
print(f"{count} rules healthy, no alert pending or firing")
PY

echo "grafana: live checks passed"
