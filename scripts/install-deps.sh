#!/usr/bin/env bash
# Installs the Debian packages a fresh machine lacks to build and test dermagate:
# clang/libclang-dev for RocksDB's bindgen; haproxy, prometheus (promtool), systemd (systemd-analyze),
# nftables and wrk for the operations tests, the chaos suite and benchmarks; fonts-dejavu-core
# for the text of the chaos suite's availability chart.
# Idempotent: installs nothing when everything is present.
set -euo pipefail
packages=(clang libclang-dev haproxy prometheus nftables wrk systemd fonts-dejavu-core)
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
# Python tools the operations checks use (deploy/check.sh): YAML parsing and offline
# Kubernetes schema validation.
if ! python3 -c "import yaml, kubernetes_validate" >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check pyyaml kubernetes-validate
fi
