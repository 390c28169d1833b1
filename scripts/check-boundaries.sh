#!/usr/bin/env bash
# Crate boundaries are checked, not hoped for (see ARCHITECTURE.md, "Invariants"):
# storage does no network I/O and knows no HTTP or gRPC; raft knows no HTTP framework;
# api knows no tonic/protobuf. Fails if a crate depends directly on a forbidden crate (transitive
# use, such as tonic using axum internally, is not the crate knowing it).
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
check dermagate-storage 'axum|tonic|hyper|reqwest|prost|tokio-rustls'
check dermagate-raft 'axum|axum-server|reqwest|utoipa'
check dermagate-api 'tonic|prost|tonic-prost'
check dermagate-inference 'axum|tonic|rocksdb|openraft'
[ $fail -eq 0 ] && echo "crate boundaries ok"
exit $fail
