#!/usr/bin/env bash
# traces: REQ-5.5, R-09
# Supply chain (issue 15): cargo deny checks licences, bans (one crypto backend, one TLS stack)
# and sources of every dependency against deny.toml. Advisories need the RustSec database, which
# this network cannot fetch: run `cargo deny check advisories` where it can.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "cargo-deny is not installed (scripts/install-deps.sh installs it)"
  exit 1
fi
cargo deny check licenses bans sources
