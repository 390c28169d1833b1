#!/usr/bin/env bash
# traces: FM-01, REQ-5.3
# TLS as an attacker's scanner sees it (issue 15): sslyze, a tool nobody here wrote, scans a node
# and the load balancer of a live local cluster and checks them against Mozilla's "intermediate"
# configuration (protocol versions, cipher suites, key-exchange groups, certificate chain built
# against the cluster CA, key sizes). Any deviation fails.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${DERMAGATE_BIN:-${CARGO_TARGET_DIR:-/var/tmp/dermagate-target}/debug/dermagate}"
tmp="$(mktemp -d /tmp/dermagate-tls.XXXXXX)"
cluster="$tmp/cluster"
cleanup() {
  [ -f "$cluster/cluster.json" ] && "$bin" local down --dir "$cluster" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
"$bin" local up --nodes 3 --lb --dir "$cluster" >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log"; exit 1; }
python3 "$root/scripts/tls/mozilla_intermediate.py" "$cluster/cluster.json"
