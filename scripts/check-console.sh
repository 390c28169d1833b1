#!/usr/bin/env bash
# traces: FM-06, FM-10, R-13
# The administration console in a real browser (issue 16): a fresh 3-node cluster behind HAProxy,
# headless Chromium driven by Selenium (scripts/console/browser_test.py) through every role's
# pages, the API used with the client key the console created, sessions checked on every node,
# and the browser's console log checked for errors and CSP violations on every page. Screenshots
# go to $CONSOLE_ARTEFACTS. The cluster and chromedriver are always stopped.
#
# Usage: scripts/check-console.sh
#   DERMAGATE_BIN      the dermagate binary (default /var/tmp/dermagate-target/debug/dermagate)
#   CONSOLE_ARTEFACTS  where screenshots go (default $TMP/artefacts, kept and printed)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${DERMAGATE_BIN:-/var/tmp/dermagate-target/debug/dermagate}"
[ -x "$bin" ] || { echo "check-console: no dermagate binary at $bin (set DERMAGATE_BIN)" >&2; exit 1; }
for tool in /usr/bin/chromium /usr/bin/chromedriver haproxy; do
  command -v "$tool" >/dev/null || { echo "check-console: $tool is missing (scripts/install-deps.sh)" >&2; exit 1; }
done
python3 -c 'import selenium, requests' || { echo "check-console: python selenium/requests missing" >&2; exit 1; }

tmp="$(mktemp -d /tmp/dermagate-console.XXXXXX)"
cluster="$tmp/cluster"
artefacts="${CONSOLE_ARTEFACTS:-$tmp/artefacts}"
mkdir -p "$artefacts"
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  [ -f "$cluster/cluster.json" ] && "$bin" local down --dir "$cluster" >/dev/null 2>&1 || true
  # Screenshots outlive the run when they were asked for elsewhere; the rest goes.
  case "$artefacts" in "$tmp"/*) mkdir -p /tmp/dermagate-console-artefacts && cp -r "$artefacts"/. /tmp/dermagate-console-artefacts/ 2>/dev/null || true ;; esac
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$bin" local up --nodes 3 --lb --dir "$cluster" >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log"; exit 1; }
# No download at run time: Selenium must not fetch a driver (selenium-manager stays off).
SE_OFFLINE=true SE_MANAGER_PATH=/bin/false CONSOLE_ARTEFACTS="$artefacts" \
  python3 "$root/scripts/console/browser_test.py" "$cluster" "$root/docs/ifu.md"
case "$artefacts" in
  "$tmp"/*) echo "check-console: screenshots copied to /tmp/dermagate-console-artefacts" ;;
  *) echo "check-console: screenshots in $artefacts" ;;
esac
