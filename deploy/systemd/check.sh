#!/usr/bin/env bash
# Validates the systemd assets in this folder:
#   1. `systemd-analyze verify` on the unit. verify insists that ExecStart
#      exists, so it runs on a temporary copy whose ExecStart points at a stub
#      executable; nothing else in the unit is changed.
#   2. `systemd-analyze security --offline` prints the sandbox exposure score
#      and fails above 2.0 ("OK" is below 3.0 on systemd's scale).
#   3. node.example.toml is valid TOML.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

command -v systemd-analyze >/dev/null 2>&1 || { echo "systemd-analyze not found" >&2; exit 127; }

printf '#!/bin/sh\nexit 0\n' > "$work/dermagate"
chmod +x "$work/dermagate"
sed "s#^ExecStart=/usr/local/bin/dermagate #ExecStart=$work/dermagate #" \
    "$here/dermagate.service" > "$work/dermagate.service"
grep -q "^ExecStart=$work/dermagate " "$work/dermagate.service" \
    || { echo "ExecStart line not found in dermagate.service" >&2; exit 1; }

echo "== systemd-analyze verify dermagate.service"
out="$(systemd-analyze verify "$work/dermagate.service" 2>&1)" || { echo "$out" >&2; exit 1; }
if [[ -n "$out" ]]; then
    echo "$out" >&2
    exit 1
fi
echo "ok"

echo "== systemd-analyze security --offline dermagate.service"
mkdir -p "$work/root/etc/systemd/system" "$work/root/usr/local/bin"
cp "$here/dermagate.service" "$work/root/etc/systemd/system/"
cp "$work/dermagate" "$work/root/usr/local/bin/dermagate"
score_line="$(systemd-analyze security --offline=yes --root="$work/root" \
    /etc/systemd/system/dermagate.service 2>/dev/null | grep 'Overall exposure level')"
echo "$score_line"
score="$(grep -oE '[0-9]+\.[0-9]+' <<<"$score_line" | head -1)"
awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || { echo "exposure $score above 2.0" >&2; exit 1; }

echo "== node.example.toml parses"
python3 -c 'import sys, tomllib; tomllib.load(open(sys.argv[1], "rb"))' "$here/node.example.toml"
echo "ok"

echo "systemd: all checks passed"
