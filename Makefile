# One entry point for developer tasks. CI runs `make test` (see .ci/run and README.md).
# A persistent target dir outside the clone: RocksDB's C++ build takes ~20 minutes cold.
export CARGO_TARGET_DIR ?= /var/tmp/dermagate-target
SHELL := /bin/bash
BIN := $(CARGO_TARGET_DIR)/debug/dermagate
CLUSTER_DIR ?= .local-cluster

PROFILE ?= ci
SEED ?=

.PHONY: deps deps-run build run down test verify fix chaos bench-writes flamegraph-writes bench-auth bench-analyses check-live model-ham10000

deps:
	@scripts/install-deps.sh

## deps-run: only what building and running a local cluster needs (a fresh `make run`).
deps-run:
	@scripts/install-deps.sh --run

build: deps-run
	cargo build --workspace --bins

## run: a local 3-node TLS cluster with embedded defaults; prints how to call it.
run: build
	$(BIN) local up --nodes 3 --lb --dir $(CLUSTER_DIR)

down:
	$(BIN) local down --dir $(CLUSTER_DIR)

## test: formatting, crate boundaries, clippy, every test of the workspace, then the operations
## assets checked against the real tools (promtool, haproxy, kubernetes-validate, systemd-analyze).
test: deps
	cargo fmt --all -- --check
	scripts/check-boundaries.sh
	python3 scripts/traceability.py check
	cargo build --workspace --all-targets
	cargo clippy --workspace --all-targets -- -D warnings
	set -o pipefail; cargo test --workspace --no-fail-fast 2>&1 | tee $(CARGO_TARGET_DIR)/test-output.txt
	deploy/check.sh
	DERMAGATE_BIN=$(BIN) grafana/check_cluster_live.sh
	DERMAGATE_BIN=$(BIN) scripts/check-integrator.sh
	DERMAGATE_BIN=$(BIN) scripts/check-ifu.sh
	DERMAGATE_BIN=$(BIN) scripts/check-console.sh
	DERMAGATE_BIN=$(BIN) scripts/check-tls.sh
	scripts/check-deny.sh
	$(MAKE) chaos PROFILE=ci

## verify: the same checks as `test` (the name the house style uses).
verify: test

fix:
	cargo fmt --all
	cargo clippy --workspace --all-targets --fix --allow-dirty

## chaos: the fault-injection suite against real nodes behind HAProxy (needs root: nftables, tmpfs).
## PROFILE=ci (one fault of each class, ~5 min; part of `make test`), soak (30 min, a leader kill
## every 15 s plus random faults), kills (leader kills only). SEED=N replays a schedule.
## Writes chaos-report/<UTC time>/report.{json,md} and availability.png; fails on a broken safety property.
chaos:
	$(CARGO_TARGET_DIR)/debug/dermagate-chaos --profile $(PROFILE) $(if $(SEED),--seed $(SEED)) $(if $(DURATION),--duration-s $(DURATION))

## bench-writes: replicated writes at 1/16/64 clients, the same load against a 3-member etcd 3.4
## cluster (TLS on client and peer URLs) in the same run, and the failover window; fresh cluster.
bench-writes: deps build
	rm -rf .bench-cluster
	DERMAGATE_AUTH__RATE_LIMIT__PER_PRINCIPAL_PER_SECOND=0 $(BIN) local up --nodes 3 --dir .bench-cluster
	$(BIN) bench writes --dir .bench-cluster; status=$$?; $(BIN) local down --dir .bench-cluster; exit $$status

## flamegraph-writes: where a replicated write's CPU goes (perf on every node, 64 clients).
flamegraph-writes: deps build
	scripts/flamegraph-writes.sh $(or $(OUT),docs/flamegraphs/writes-64.svg)

## bench-auth: authentication cost per request, and /v1/me vs /livez over HTTPS at 64 connections.
bench-auth: deps build
	rm -rf .bench-cluster
	DERMAGATE_AUTH__RATE_LIMIT__PER_PRINCIPAL_PER_SECOND=0 $(BIN) local up --nodes 3 --dir .bench-cluster
	$(BIN) bench auth --dir .bench-cluster; status=$$?; $(BIN) local down --dir .bench-cluster; exit $$status

## bench-analyses: one analysis by stage, throughput at 1/4/16 clients (one node, three nodes),
## served/raw ratio, and 2x overload (shed rate, latency of accepted requests).
bench-analyses: deps build
	rm -rf .bench-cluster
	DERMAGATE_AUTH__RATE_LIMIT__PER_PRINCIPAL_PER_SECOND=0 $(BIN) local up --nodes 3 --dir .bench-cluster
	$(BIN) bench analyses --dir .bench-cluster; status=$$?; $(BIN) local down --dir .bench-cluster; exit $$status

## check-live: a real 3-node cluster scraped by a real Prometheus (1 s), a little traffic, then every
## dashboard query must return data and every rule evaluate (grafana/check_cluster_live.sh, ~30 s).
## Uses the binary already built (DERMAGATE_BIN, default $(BIN)); needs prometheus, python3, curl.
check-live:
	DERMAGATE_BIN=$(BIN) grafana/check_cluster_live.sh

## model-ham10000: OPTIONAL trained model (sklesion's HAM10000 classifier, NOT FOR CLINICAL USE)
## converted to ONNX in models/ham10000 (throw-away venv, PyPI only, ~2 min; docs/model-ham10000.md).
## Use it with: DERMAGATE_INFERENCE__MODEL_DIR=$(CURDIR)/models/ham10000 make run
model-ham10000:
	DERMAGATE_BIN=$(BIN) scripts/model-ham10000.sh --out $(CURDIR)/models/ham10000
