#!/usr/bin/env bash
# Installs the Debian packages a fresh machine lacks to build and test dermagate:
# clang/libclang-dev for RocksDB's bindgen; haproxy, prometheus (promtool), systemd (systemd-analyze),
# nftables and wrk for the operations tests, the chaos suite and benchmarks; fonts-dejavu-core
# for the text of the chaos suite's availability chart; curl and jq for the IFU walkthrough;
# etcd-server and nginx-light, the peers of the write and HTTPS benchmarks; linux-perf for flame
# graphs; chromium and chromium-driver for the console's browser tests.
# Idempotent: installs nothing when everything is present.
#
# Usage: scripts/install-deps.sh          everything `make test` and the benchmarks need
#        scripts/install-deps.sh --run    only what building and running a local cluster needs
#                                         (`make run` on a fresh machine)
set -euo pipefail
only_run=false
[ "${1:-}" = "--run" ] && only_run=true
if $only_run; then
  packages=(clang libclang-dev haproxy jq curl)
else
  packages=(clang libclang-dev haproxy prometheus nftables wrk systemd fonts-dejavu-core jq curl
    etcd-server nginx-light linux-perf chromium chromium-driver)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
$only_run && exit 0
# Python tools the operations checks use (deploy/check.sh): YAML parsing and offline
# Kubernetes schema validation.
if ! python3 -c "import yaml, kubernetes_validate" >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check pyyaml kubernetes-validate
fi
# A local S3-compatible server for the tests of the S3 blob backend.
if ! command -v moto_server >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check "moto[server]"
fi
# The integrator's and the attacker's tools, nobody here wrote: OpenAPI validation, a generated
# Python client, FHIR R4 validation, property-based API testing and TLS scanning.
python_tools=(openapi-spec-validator openapi-python-client fhir.resources schemathesis sslyze selenium)
python_modules=(openapi_spec_validator openapi_python_client fhir.resources schemathesis sslyze selenium)
need_python=()
for i in "${!python_tools[@]}"; do
  python3 -c "import ${python_modules[$i]}" >/dev/null 2>&1 || need_python+=("${python_tools[$i]}")
done
if [ ${#need_python[@]} -gt 0 ]; then
  echo "installing python tools: ${need_python[*]}"
  python3 -m pip install --quiet --disable-pip-version-check "${need_python[@]}"
fi
# Cargo tools of the checks: unused dependencies (scripts/check-boundaries.sh) and licences,
# bans and sources (cargo deny).
if ! command -v cargo-machete >/dev/null 2>&1; then
  cargo install --quiet --locked cargo-machete
fi
if ! command -v cargo-deny >/dev/null 2>&1; then
  cargo install --quiet --locked cargo-deny
fi
# Flame graphs of the write benchmark (scripts/flamegraph-writes.sh): perf's samples folded and
# drawn by inferno, with nothing fetched at run time.
if ! command -v inferno-flamegraph >/dev/null 2>&1; then
  cargo install --quiet --locked inferno
fi
