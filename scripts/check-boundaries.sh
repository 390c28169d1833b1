#!/usr/bin/env bash
# Crate boundaries are checked, not hoped for (see ARCHITECTURE.md, "Invariants"):
# domain knows neither HTTP, nor gRPC, nor RocksDB, nor Raft; storage does no network I/O and
# knows no HTTP or gRPC; raft knows no HTTP framework; api knows no tonic/protobuf, RocksDB or
# openraft; node wires the crates and knows none of tonic, prost or rocksdb itself. Fails if a
# crate depends directly on a forbidden crate (transitive use, such as tonic using axum
# internally, is not the crate knowing it), or if any crate declares a dependency it does not
# use (cargo machete).
set -euo pipefail
fail=0
check() { # crate, forbidden-regex
  local hits
  hits=$(cargo tree -q -p "$1" -e normal --depth 1 --prefix none 2>/dev/null | grep -E "^($2) v" | sort -u || true)
  if [ -n "$hits" ]; then
    echo "boundary violation: $1 depends on: $hits"
    fail=1
  fi
}
check dermagate-domain 'axum|axum-server|tonic|prost|hyper|reqwest|rocksdb|openraft|dermagate-storage|dermagate-raft|dermagate-api'
check dermagate-storage 'axum|tonic|hyper|reqwest|prost|tokio-rustls|dermagate-raft|dermagate-api'
check dermagate-raft 'axum|axum-server|reqwest|utoipa|dermagate-api'
check dermagate-api 'tonic|prost|tonic-prost|rocksdb|openraft'
check dermagate-inference 'axum|tonic|rocksdb|openraft|dermagate-domain|dermagate-storage|dermagate-raft|dermagate-api'
check dermagate 'tonic|prost|tonic-prost|rocksdb'
[ $fail -eq 0 ] && echo "crate boundaries ok"
if command -v cargo-machete >/dev/null 2>&1; then
  if ! cargo machete --with-metadata; then
    echo "unused dependencies (above): remove them"
    fail=1
  fi
else
  echo "cargo-machete is not installed (scripts/install-deps.sh installs it)"
  fail=1
fi
exit $fail
