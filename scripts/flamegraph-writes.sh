#!/usr/bin/env bash
# Where the time of a replicated write goes: a fresh 3-node local cluster, the 64-client write
# load of `make bench-writes` (no etcd, no failover), and `perf record` on every node for the
# duration of the load; the samples of all nodes are folded together and drawn as one flame graph
# (inferno), so the leader's and the followers' work show side by side in one picture.
#
# Usage: scripts/flamegraph-writes.sh OUT.svg [SECONDS]
#   DERMAGATE_BIN  the dermagate binary (default /var/tmp/dermagate-target/debug/dermagate)
set -euo pipefail

OUT=${1:?usage: scripts/flamegraph-writes.sh OUT.svg [SECONDS]}
SECONDS_LOAD=${2:-10}
BIN=${DERMAGATE_BIN:-/var/tmp/dermagate-target/debug/dermagate}
for tool in perf inferno-collapse-perf inferno-flamegraph jq; do
    command -v "$tool" >/dev/null || { echo "flamegraph: $tool missing (scripts/install-deps.sh)" >&2; exit 1; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/flamegraph-writes.XXXXXX")
PERF_PID=
cleanup() {
    [ -n "$PERF_PID" ] && kill -INT "$PERF_PID" 2>/dev/null || true
    "$BIN" local down --dir "$TMP/cluster" >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT

DERMAGATE_AUTH__RATE_LIMIT__PER_PRINCIPAL_PER_SECOND=0 "$BIN" local up --nodes 3 --dir "$TMP/cluster" >/dev/null
PIDS=$(jq -r '[.nodes[].pid] | map(tostring) | join(",")' "$TMP/cluster/cluster.json")
# The warm-up round of the benchmark (1 s) runs before the sampling starts.
"$BIN" bench writes --dir "$TMP/cluster" --clients 64 --seconds "$SECONDS_LOAD" --failover-trials 0 --no-etcd &
BENCH=$!
sleep 2
perf record -F 199 --call-graph dwarf,16384 -p "$PIDS" -o "$TMP/perf.data" -- sleep "$((SECONDS_LOAD - 2))" \
    >/dev/null 2>"$TMP/perf.log" &
PERF_PID=$!
wait "$BENCH"
wait "$PERF_PID" || true
PERF_PID=
# The folded stacks are kept next to the picture so that two runs can be compared
# (inferno-diff-folded before.folded after.folded | inferno-flamegraph > diff.svg).
perf script -i "$TMP/perf.data" 2>/dev/null | inferno-collapse-perf > "${OUT%.svg}.folded"
inferno-flamegraph --title "dermagate: 3 nodes, 64 clients of replicated writes" < "${OUT%.svg}.folded" > "$OUT"
echo "flame graph: $OUT ($(wc -l < "${OUT%.svg}.folded") distinct stacks; folded stacks in ${OUT%.svg}.folded)"
