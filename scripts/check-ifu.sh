#!/usr/bin/env bash
# traces: R-08, R-11, R-16
# Runs the onboarding walkthrough of the instructions for use (docs/ifu.md, section 5
# "Onboarding, step by step") against a fresh local cluster, so that the IFU cannot rot: an IFU
# whose commands fail against the device it describes (a missing --cacert, a tool Debian lacks, a
# renamed field) misleads every integrator who follows it.
#
# Only the ```bash blocks whose fence is immediately preceded by the line
# `<!-- ifu-walkthrough -->` run; the others (apt-get, `make run`) are the reader's setup, which
# this script does itself (it checks for the tools and starts the cluster). The blocks run in
# order, in ONE bash process with `set -euo pipefail`, in a clean environment, from a directory
# where `.local-cluster` points at the fresh cluster, as a reader pastes them after `make run`.
# Any failing command fails the check, and so does an answer that contradicts what the IFU's text
# says about it (the test image's digest, a diagnosis from the demonstration model, the audit
# entries of step 17; these checks use the walkthrough's variable names). So do processes or
# temporary files the walkthrough leaves behind. The cluster is always stopped and the temporary
# files removed.
#
# Usage: scripts/check-ifu.sh
#   DERMAGATE_BIN  the dermagate binary (default /var/tmp/dermagate-target/debug/dermagate)
#   IFU_TIMEOUT    seconds the whole walkthrough may take (default 300)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${DERMAGATE_BIN:-/var/tmp/dermagate-target/debug/dermagate}
IFU=$ROOT/docs/ifu.md
TIMEOUT=${IFU_TIMEOUT:-300}
MARKER='<!-- ifu-walkthrough -->'

say() { printf 'check-ifu: %s\n' "$*" >&2; }

[ -x "$BIN" ] || { say "no dermagate binary at $BIN (set DERMAGATE_BIN)"; exit 1; }
[ -f "$IFU" ] || { say "no $IFU"; exit 1; }
# The IFU's prerequisites (step 1: curl and jq from Debian; the rest is in every Debian).
for tool in curl jq base64 sha256sum mktemp timeout awk; do
    command -v "$tool" >/dev/null || { say "$tool is missing (the IFU asks for: sudo apt-get install -y curl jq)"; exit 1; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/check-ifu.XXXXXX")
CLUSTER=$TMP/cluster
RUN=$TMP/run
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    # Interrupted while the walkthrough runs: stop it (its own process group) first.
    if [ -n "${RUNNER:-}" ] && kill -0 "$RUNNER" 2>/dev/null; then
        kill -- "-$RUNNER" 2>/dev/null || true
        wait "$RUNNER" 2>/dev/null || true
    fi
    if [ -d "$CLUSTER" ]; then
        "$BIN" local down --dir "$CLUSTER" >"$TMP/down.log" 2>&1 || { say "local down failed:"; cat "$TMP/down.log" >&2; }
    fi
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. The marked blocks, in order, one file each. A marker that is not followed by a ```bash fence,
#    or a block that is never closed, is an error rather than a silently skipped step.
mkdir -p "$TMP/blocks" "$RUN" "$TMP/tmp" "$TMP/home"
awk -v marker="$MARKER" -v dir="$TMP/blocks" '
    function fail(msg) { print "check-ifu: docs/ifu.md line " NR ": " msg > "/dev/stderr"; bad = 1; exit 1 }
    inblock && /^```[[:space:]]*$/ { inblock = 0; close(file); next }
    inblock { print > file; next }
    pending && /^```bash[[:space:]]*$/ { pending = 0; inblock = 1; n++; file = sprintf("%s/%02d.sh", dir, n); printf "" > file; next }
    pending { fail("the line after \"" marker "\" is not a ```bash fence") }
    $0 == marker { pending = 1; next }
    END {
        if (bad) exit 1
        if (inblock) { print "check-ifu: docs/ifu.md: an ifu-walkthrough block is never closed" > "/dev/stderr"; exit 1 }
        if (pending) { print "check-ifu: docs/ifu.md ends after a marker" > "/dev/stderr"; exit 1 }
        print n
    }' "$IFU" >"$TMP/count"
COUNT=$(cat "$TMP/count")
[ "$COUNT" -gt 0 ] || { say "no \"$MARKER\" block in docs/ifu.md"; exit 1; }
say "$COUNT walkthrough blocks in docs/ifu.md"

# What the IFU's text claims about the answers, checked after the blocks (with the walkthrough's
# own variables): the test image's digest, a diagnosis from the demonstration model, and the audit
# entries step 17 lists.
DIGEST=$(grep -o 'The digest is `[0-9a-f]\{64\}`' "$IFU" | grep -o '[0-9a-f]\{64\}' || true)
[ -n "$DIGEST" ] || { say "docs/ifu.md no longer states the test image's digest (\"The digest is \`...\`\")"; exit 1; }

# 2. One script: each block printed, then run, all in the same shell (variables carry over).
{
    printf 'set -euo pipefail\n'
    printf 'trap '\''echo "check-ifu: FAILED in IFU walkthrough block $IFU_BLOCK (exit $?): $BASH_COMMAND" >&2'\'' ERR\n'
    for f in "$TMP"/blocks/*.sh; do
        n=$(basename "$f" .sh)
        printf 'IFU_BLOCK=%d\n' "$((10#$n))"
        printf 'printf "\\n===== IFU walkthrough block %d of %d =====\\n" >&2\n' "$((10#$n))" "$COUNT"
        printf 'cat %q >&2\n' "$f"
        printf 'printf -- "----- output:\\n" >&2\n'
        cat "$f"
        printf '\n'
    done
    cat <<CHECKS
IFU_BLOCK=claims
printf '\n===== check-ifu: the answers are what the IFU says =====\n' >&2
jq -e --arg digest $DIGEST '.demonstration == true
    and .notice == "Demonstration model, not for clinical use"
    and .outcome == "diagnosis"
    and .imagingStudySeries[0].sha256 == \$digest
    and .imagingStudySeries[0].quality.isValid == true' <<<"\$REPORT" >/dev/null
curl -sS --fail-with-body --cacert "\$CA" "\$DG/v1/audit?limit=100" -H "Authorization: Bearer \$ORG_ADMIN_TOKEN" \
  | jq -e '[.items[].action] as \$seen
      | ["organization_created", "user_created_break_glass", "sign_in_succeeded", "user_created",
         "client_created", "report_read", "series_read", "client_revoked"] - \$seen == []' >/dev/null
printf '\n===== IFU walkthrough: all %d blocks passed =====\n' $COUNT >&2
CHECKS
} >"$TMP/walkthrough.sh"

# 3. A fresh cluster, reached as the IFU expects: `.local-cluster` in the working directory.
say "starting a fresh 3-node cluster behind HAProxy in $CLUSTER"
"$BIN" local up --nodes 3 --lb --dir "$CLUSTER" >"$TMP/up.log" 2>&1 || { cat "$TMP/up.log" >&2; say "local up failed"; exit 1; }
jq -e .lb_url "$CLUSTER/cluster.json" >/dev/null || say "warning: no load balancer (HAProxy missing?): the walkthrough uses node 1"
ln -s "$CLUSTER" "$RUN/.local-cluster"

# 4. Run it: a clean environment (an empty HOME: no ~/.curlrc), its own temporary directory, a
#    time limit. `timeout` leads its own process group, so what is left in that group afterwards
#    was left behind by the walkthrough.
cd "$RUN"
timeout --kill-after=10 "$TIMEOUT" \
    env -i HOME="$TMP/home" PATH="$PATH" LANG=C.UTF-8 TERM=dumb TMPDIR="$TMP/tmp" \
    bash --noprofile --norc "$TMP/walkthrough.sh" &
RUNNER=$!
status=0
wait "$RUNNER" || status=$?
cd "$ROOT"
if command -v pgrep >/dev/null && pgrep -g "$RUNNER" >/dev/null 2>&1; then
    say "the walkthrough left processes behind:"
    pgrep -a -g "$RUNNER" >&2 || true
    kill -- "-$RUNNER" 2>/dev/null || true
    [ "$status" -ne 0 ] || status=1
fi
RUNNER=
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    say "the walkthrough did not finish within ${TIMEOUT} s"
fi
if [ "$status" -ne 0 ]; then
    say "FAILED (exit $status); node logs were in $CLUSTER/logs:"
    tail -n 20 "$CLUSTER"/logs/*.log >&2 2>/dev/null || true
    exit "$status"
fi
if [ -n "$(ls -A "$TMP/tmp")" ]; then
    say "the walkthrough left temporary files behind: $(ls -A "$TMP/tmp" | tr '\n' ' ')"
    exit 1
fi
say "OK: every onboarding command of the IFU works against a fresh cluster"
