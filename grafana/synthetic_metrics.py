#!/usr/bin/env python3
"""Synthetic metrics of a healthy 3-node dermagate cluster, in OpenMetrics text.

Three hours of samples every 15 s, ending now, for every metric the node
exports (same names and label sets), to be backfilled into a throwaway
Prometheus with `promtool tsdb create-blocks-from openmetrics`. check_live.sh
uses it to prove that every dashboard query returns data. Deterministic
(fixed seed) apart from the timestamps.

Usage: synthetic_metrics.py > metrics.om
"""
import random
import sys
import time

random.seed(7)
STEP = 15  # seconds between samples
now = int(time.time())
start = now - 3 * 3600
ts = list(range(start, now + 1, STEP))
INSTANCES = ["node1:9100", "node2:9100", "node3:9100"]
# The histogram buckets of node/src/telemetry.rs (LATENCY_BUCKETS).
BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
out = []


def label_text(labels):
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def series(name, labels, values):
    """One series with the scrape labels job and instance, one value per timestamp."""
    text = label_text({"job": "dermagate", **labels})
    for t, v in zip(ts, values):
        out.append(f"{name}{text} {v} {t}")


def gauge(name, labels, value_at):
    series(name, labels, [value_at(i) for i in range(len(ts))])


def counter(name, labels, rate):
    """A monotonic counter growing by about `rate` per second."""
    v, vals = 0.0, []
    for i in range(len(ts)):
        v += max(0.0, rate * STEP * random.uniform(0.5, 1.5))
        vals.append(round(v, 3))
    series(name, labels, vals)


def histogram(name, labels, rate, mean):
    """Cumulative _bucket/_sum/_count series of about `rate` observations per
    second, exponentially distributed around `mean` seconds."""
    counts = [0.0] * (len(BUCKETS) + 1)
    total_sum = 0.0
    per_bucket = {b: [] for b in BUCKETS + ["+Inf"]}
    sums, cnts = [], []
    for i in range(len(ts)):
        n = max(1, int(rate * STEP))
        for _ in range(n):
            x = random.expovariate(1 / mean)
            total_sum += x
            for j, b in enumerate(BUCKETS):
                if x <= b:
                    counts[j] += 1
            counts[-1] += 1
        for j, b in enumerate(BUCKETS):
            per_bucket[b].append(counts[j])
        per_bucket["+Inf"].append(counts[-1])
        sums.append(round(total_sum, 4))
        cnts.append(counts[-1])
    for b, vals in per_bucket.items():
        series(f"{name}_bucket", {**labels, "le": str(b)}, vals)
    series(f"{name}_sum", labels, sums)
    series(f"{name}_count", labels, cnts)


# node1 leads; every node is ready and sees node 1 as leader.
for idx, inst in enumerate(INSTANCES):
    I = {"instance": inst}
    leader = idx == 0
    gauge("up", I, lambda i: 1)
    gauge("dermagate_build_info", {**I, "version": "0.1.0", "git_sha": "abc123"}, lambda i: 1)
    gauge("dermagate_node_ready", I, lambda i: 1)
    gauge("dermagate_raft_term", I, lambda i: 3 + i // 300)
    gauge("dermagate_raft_is_leader", I, lambda i, l=leader: 1 if l else 0)
    gauge("dermagate_raft_leader_id", I, lambda i: 1)
    gauge("dermagate_raft_last_log_index", I, lambda i: 1000 + 10 * i + 2)
    gauge("dermagate_raft_committed_index", I, lambda i: 1000 + 10 * i)
    gauge("dermagate_raft_applied_index", I, lambda i: 1000 + 10 * i - 1)
    counter("dermagate_raft_leader_changes_total", I, 0.0005)
    counter("dermagate_raft_snapshot_builds_total", I, 0.001)
    counter("dermagate_raft_snapshot_installs_total", I, 0.0002)
    if leader:
        for peer in ("2", "3"):
            gauge("dermagate_raft_replication_lag_entries", {**I, "peer": peer}, lambda i: random.randint(0, 5))
            gauge("dermagate_raft_replication_last_ack_seconds", {**I, "peer": peer}, lambda i: random.uniform(0, 0.1))
    histogram("dermagate_raft_proposal_duration_seconds", I, 2, 0.004)
    gauge("dermagate_http_requests_in_flight", I, lambda i: random.randint(0, 8))
    for route, method in (("/v1/auth/login", "POST"), ("/v1/organizations/{org}/users", "GET"),
                          ("/v1/analyses", "POST"), ("/readyz", "GET")):
        for sc, r in (("2xx", 3), ("4xx", 0.2), ("5xx", 0.01)):
            counter("dermagate_http_requests_total", {**I, "route": route, "method": method, "status_class": sc}, r)
        histogram("dermagate_http_request_duration_seconds", {**I, "route": route, "method": method}, 3,
                  0.8 if "analys" in route else 0.02)
    for reason in ("auth", "rate_limit", "shed", "validation"):
        counter("dermagate_http_rejected_total", {**I, "reason": reason}, 0.05)
    for grant in ("password", "client_credentials"):
        counter("dermagate_tokens_issued_total", {**I, "grant": grant}, 0.2)
    for outcome in ("ok", "expired", "invalid", "revoked"):
        counter("dermagate_token_verifications_total", {**I, "outcome": outcome}, 2 if outcome == "ok" else 0.02)
    for reason in ("bad_password", "unknown_user"):
        counter("dermagate_auth_failures_total", {**I, "reason": reason}, 0.05)
    counter("dermagate_lockouts_total", I, 0.002)
    for kind in ("token", "client", "user"):
        counter("dermagate_revocations_total", {**I, "kind": kind}, 0.005)
    gauge("dermagate_storage_size_bytes", I, lambda i: 1_000_000_000 + 50_000 * i)
    gauge("dermagate_storage_write_stall", I, lambda i: 0)
    histogram("dermagate_storage_sync_duration_seconds", I, 2, 0.003)
    gauge("dermagate_inference_queue_depth", I, lambda i: random.randint(0, 4))
    counter("dermagate_inference_shed_total", I, 0.01)
    for stage, mean in (("decode", 0.05), ("quality", 0.1), ("model", 0.6), ("total", 0.8)):
        histogram("dermagate_inference_stage_duration_seconds", {**I, "stage": stage}, 1, mean)
    for check in ("blur", "exposure"):
        counter("dermagate_inference_quality_rejections_total", {**I, "check": check}, 0.01)
    gauge("dermagate_tls_cert_not_after_seconds", {**I, "cert": "node"}, lambda i: now + 40 * 86400)
    counter("process_cpu_seconds_total", I, 0.3)
    gauge("process_resident_memory_bytes", I, lambda i: 300_000_000 + random.randint(0, 10_000_000))
    gauge("process_open_fds", I, lambda i: 100 + random.randint(0, 20))
    gauge("process_max_fds", I, lambda i: 65536)


def family(line):
    """A histogram's _bucket, _sum and _count series belong to one family."""
    name = line.split("{", 1)[0]
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] + "_bucket" in names:
            return name[: -len(suffix)]
    return name


# OpenMetrics wants each metric family contiguous; the sort is stable, so each
# series keeps its samples together and in time order.
names = {line.split("{", 1)[0] for line in out}
out.sort(key=family)
sys.stdout.write("\n".join(out) + "\n# EOF\n")
