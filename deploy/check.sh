#!/usr/bin/env bash
# Runs every offline validator of the operations assets (deploy/ and grafana/)
# and fails if any fails. Needs: promtool and prometheus (apt prometheus),
# haproxy, openssl, systemd-analyze, python3 with PyYAML, and
# kubernetes-validate (pip; installed on demand by kubernetes/validate.sh).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
passed=0
failed=0
run() {
    echo "################ $*"
    if "$@"; then
        echo "################ ok: $*"
        passed=$((passed + 1))
    else
        echo "################ FAILED: $*"
        failed=$((failed + 1))
    fi
}

run "$here/prometheus/check.sh"
run "$here/haproxy/check.sh"
run "$here/kubernetes/validate.sh"
run "$here/systemd/check.sh"
run python3 "$here/compose/check.py"
run python3 "$root/grafana/check_dashboards.py"
run "$root/grafana/check_live.sh"

echo "deploy: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
