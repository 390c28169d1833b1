#!/usr/bin/env bash
# Offline validation of the manifests in this folder.
#
#   1. kubernetes-validate --strict (OpenAPI schemas of Kubernetes itself,
#      unknown fields rejected) on every manifest, against the oldest
#      supported Kubernetes version (1.30: pod-index label, preStop sleep)
#      and the newest one the tool knows.
#      kubernetes-validate has no schema for CRDs or for the Kustomization
#      file and only *warns* about them, exiting 0. So those files are listed
#      in SKIP_SCHEMA and any other "Couldn't find schema" warning (a typo in
#      apiVersion or kind) is turned into a failure.
#   2. crossref.py: the objects fit together (selectors, named ports,
#      mounts, node.toml), and the ServiceMonitor and kustomization.yaml have
#      what they need.
#
# Needs: pip install kubernetes-validate pyyaml   (installed on demand)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

# Files without an upstream schema, checked by crossref.py instead.
SKIP_SCHEMA=(kustomization.yaml servicemonitor.yaml)
VERSIONS=(1.30.0 1.37.0)

if ! command -v kubernetes-validate >/dev/null 2>&1; then
    echo "installing kubernetes-validate and pyyaml from PyPI"
    python3 -m pip install --quiet kubernetes-validate pyyaml
fi

status=0
for file in *.yaml; do
    skip=no
    for s in "${SKIP_SCHEMA[@]}"; do [[ "$file" == "$s" ]] && skip=yes; done
    if [[ $skip == yes ]]; then
        echo "SKIP $file (no upstream schema; checked by crossref.py)"
        continue
    fi
    for version in "${VERSIONS[@]}"; do
        if ! out="$(kubernetes-validate --strict -k "$version" "$file" 2>&1)"; then
            echo "$out"
            status=1
            continue
        fi
        echo "$out"
        if grep -q "^WARN" <<<"$out"; then
            echo "FAIL $file: warning against $version treated as an error"
            status=1
        fi
    done
done

echo "== crossref.py"
python3 crossref.py || status=1

if [[ $status -eq 0 ]]; then
    echo "kubernetes: all checks passed"
else
    echo "kubernetes: FAILED"
fi
exit "$status"
