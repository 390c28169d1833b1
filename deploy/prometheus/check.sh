#!/usr/bin/env bash
# Validates the Prometheus assets in this folder with promtool:
#   1. the server configuration (which also checks the rule files it loads),
#   2. the rule files on their own,
#   3. the rule unit tests (alerts fire on broken series, stay silent on
#      healthy ones).
# promtool comes with Debian's `prometheus` package (apt-get install prometheus).
# Exit status is non-zero if any step fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if ! command -v promtool >/dev/null 2>&1; then
    echo "promtool not found: apt-get install -y prometheus" >&2
    exit 127
fi

echo "== promtool check config prometheus.yml"
promtool check config prometheus.yml

echo "== promtool check rules rules/*.rules.yml"
promtool check rules rules/*.rules.yml

echo "== promtool test rules tests/*.test.yml"
promtool test rules tests/*.test.yml

echo "prometheus: all checks passed"
