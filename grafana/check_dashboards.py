#!/usr/bin/env python3
"""Checks the Grafana dashboards in grafana/dashboards and lists their queries.

Checks (default mode), for every *.json dashboard:
- it parses, has schemaVersion 39, a non-empty uid unique across dashboards
  and a unique title;
- it has a template variable "datasource" of type datasource (prometheus);
- every panel (rows included, recursively) has a unique id, a gridPos, the
  data source {"type": "prometheus", "uid": "${datasource}"} and at least one
  target; every target has a unique refId, a non-empty expr and, if it names a
  data source, the same one;
- every expr uses no template variable but $__rate_interval and $__range,
  has balanced brackets, and names only metrics the node exports (the list
  below, `up`, and the _bucket/_sum/_count series of its histograms).

Modes:
  check_dashboards.py                      run the checks; exit 1 on any failure
  check_dashboards.py --list-exprs         print one JSON line per target:
                                           {"dashboard": <file stem>, "panel": <title>, "expr": <expr>}
  check_dashboards.py --prometheus URL     also evaluate every expr with URL's
                                           /api/v1/query, after replacing
                                           $__rate_interval with 1m and $__range
                                           with 1h; any error fails
  [--require-data]                         with --prometheus: an empty result fails too

Only the standard library is needed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
DASHBOARDS = HERE / "dashboards"
EXPECTED_SCHEMA = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
ALLOWED_VARIABLES = {"$__rate_interval", "$__range"}
SUBSTITUTIONS = {"$__rate_interval": "1m", "$__range": "1h"}

# What the node exports (docs/operations.md), plus Prometheus's own `up`.
GAUGES_AND_COUNTERS = {
    "dermagate_build_info", "dermagate_node_ready",
    "dermagate_http_requests_total", "dermagate_http_requests_in_flight", "dermagate_http_rejected_total",
    "dermagate_tokens_issued_total", "dermagate_token_verifications_total", "dermagate_auth_failures_total",
    "dermagate_lockouts_total", "dermagate_revocations_total",
    "dermagate_raft_term", "dermagate_raft_is_leader", "dermagate_raft_leader_id",
    "dermagate_raft_last_log_index", "dermagate_raft_committed_index", "dermagate_raft_applied_index",
    "dermagate_raft_replication_lag_entries", "dermagate_raft_replication_last_ack_seconds",
    "dermagate_raft_leader_changes_total", "dermagate_raft_snapshot_builds_total",
    "dermagate_raft_snapshot_installs_total",
    "dermagate_storage_size_bytes", "dermagate_storage_write_stall",
    "dermagate_inference_queue_depth", "dermagate_inference_shed_total",
    "dermagate_inference_quality_rejections_total",
    "dermagate_tls_cert_not_after_seconds",
    "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_max_fds",
    "up",
}
HISTOGRAMS = {
    "dermagate_http_request_duration_seconds", "dermagate_raft_proposal_duration_seconds",
    "dermagate_storage_sync_duration_seconds", "dermagate_inference_stage_duration_seconds",
}
KNOWN_METRICS = GAUGES_AND_COUNTERS | {f"{h}{s}" for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
METRIC_TOKEN = re.compile(r"\b((?:dermagate|process)_[a-z0-9_]+)\b|(?<![\w.])(up)\s*\{")

failures: list[str] = []


def fail(where: str, message: str) -> None:
    failures.append(f"{where}: {message}")


def iter_panels(panels: list) -> list[dict]:
    """All panels, including those collapsed inside rows."""
    out = []
    for panel in panels:
        out.append(panel)
        out.extend(iter_panels(panel.get("panels", [])))
    return out


def query_panels(dashboard: dict) -> list[dict]:
    """Panels that show data (rows only group others)."""
    return [p for p in iter_panels(dashboard.get("panels", [])) if p.get("type") != "row"]


def strip_strings(expr: str) -> str:
    """The expr without quoted label values, so that their content is not taken for syntax."""
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def check_expr(where: str, expr: str) -> None:
    for variable in set(re.findall(r"\$\{?\w+\}?", expr)):
        if variable not in ALLOWED_VARIABLES:
            fail(where, f"template variable {variable} in expr (only $__rate_interval and $__range are allowed)")
    bare = strip_strings(expr)
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    for char in bare:
        if char in "([{":
            stack.append(char)
        elif char in pairs:
            if not stack or stack.pop() != pairs[char]:
                fail(where, f"unbalanced {char!r} in expr")
                return
    if stack:
        fail(where, f"unclosed {stack[-1]!r} in expr")
    for match in METRIC_TOKEN.finditer(bare):
        name = match.group(1) or match.group(2)
        if name not in KNOWN_METRICS:
            fail(where, f"unknown metric {name}")


def check_dashboard(path: Path, dashboard: dict, seen_uids: dict, seen_titles: dict) -> None:
    name = path.name
    if dashboard.get("schemaVersion") != EXPECTED_SCHEMA:
        fail(name, f"schemaVersion {dashboard.get('schemaVersion')} != {EXPECTED_SCHEMA}")
    uid = dashboard.get("uid")
    if not uid:
        fail(name, "missing uid")
    elif uid in seen_uids:
        fail(name, f"uid {uid} already used by {seen_uids[uid]}")
    else:
        seen_uids[uid] = name
    title = dashboard.get("title")
    if not title:
        fail(name, "missing title")
    elif title in seen_titles:
        fail(name, f"title {title!r} already used by {seen_titles[title]}")
    else:
        seen_titles[title] = name

    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    ds_var = variables.get("datasource")
    if not ds_var or ds_var.get("type") != "datasource" or ds_var.get("query") != "prometheus":
        fail(name, 'needs a template variable "datasource" of type datasource with query "prometheus"')

    panels = query_panels(dashboard)
    if not panels:
        fail(name, "no panels")
    ids = set()
    for panel in iter_panels(dashboard.get("panels", [])):
        where = f"{name} panel {panel.get('id')} {panel.get('title')!r}"
        if panel.get("id") in ids:
            fail(where, "duplicate panel id")
        ids.add(panel.get("id"))
        if "gridPos" not in panel:
            fail(where, "missing gridPos")
        if panel.get("type") == "row":
            continue
        if not panel.get("title"):
            fail(where, "missing title")
        if panel.get("datasource") != DATASOURCE:
            fail(where, f"datasource {panel.get('datasource')} != {DATASOURCE}")
        targets = panel.get("targets") or []
        if not targets:
            fail(where, "no targets")
        ref_ids = set()
        for target in targets:
            if target.get("refId") in ref_ids or not target.get("refId"):
                fail(where, f"missing or duplicate refId {target.get('refId')}")
            ref_ids.add(target.get("refId"))
            if "datasource" in target and target["datasource"] != DATASOURCE:
                fail(where, f"target {target.get('refId')} datasource {target['datasource']} != {DATASOURCE}")
            expr = target.get("expr", "")
            if not expr.strip():
                fail(where, f"target {target.get('refId')} has no expr")
                continue
            check_expr(f"{where} target {target.get('refId')}", expr)


def load_dashboards(directory: Path) -> list[tuple[Path, dict]]:
    loaded = []
    paths = sorted(directory.glob("*.json"))
    if not paths:
        fail(str(directory), "no dashboards")
    for path in paths:
        try:
            loaded.append((path, json.loads(path.read_text())))
        except json.JSONDecodeError as error:
            fail(path.name, f"invalid JSON: {error}")
    return loaded


def all_exprs(dashboards: list[tuple[Path, dict]]) -> list[dict]:
    rows = []
    for path, dashboard in dashboards:
        for panel in query_panels(dashboard):
            for target in panel.get("targets") or []:
                if target.get("expr"):
                    rows.append({"dashboard": path.stem, "panel": panel.get("title", ""), "expr": target["expr"]})
    return rows


def substitute(expr: str) -> str:
    for variable, value in SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    return expr


def evaluate(base_url: str, rows: list[dict], require_data: bool) -> None:
    url = base_url.rstrip("/") + "/api/v1/query"
    for row in rows:
        where = f"{row['dashboard']} panel {row['panel']!r}"
        data = urllib.parse.urlencode({"query": substitute(row["expr"])}).encode()
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
        except (urllib.error.URLError, TimeoutError) as error:
            fail(where, f"cannot query {url}: {error}")
            return
        if body.get("status") != "success":
            fail(where, f"{body.get('errorType')}: {body.get('error')} in {row['expr']}")
        elif require_data and not body["data"]["result"]:
            fail(where, f"no data for {row['expr']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=DASHBOARDS, help="dashboards directory")
    parser.add_argument("--list-exprs", action="store_true", help="print every expr as a JSON line and exit")
    parser.add_argument("--prometheus", metavar="URL", help="evaluate every expr against this Prometheus")
    parser.add_argument("--require-data", action="store_true", help="with --prometheus: empty results fail")
    args = parser.parse_args()

    dashboards = load_dashboards(args.dir)
    if args.list_exprs:
        for row in all_exprs(dashboards):
            print(json.dumps(row))
        return 1 if failures else 0

    seen_uids: dict = {}
    seen_titles: dict = {}
    for path, dashboard in dashboards:
        check_dashboard(path, dashboard, seen_uids, seen_titles)
    rows = all_exprs(dashboards)
    if args.prometheus:
        evaluate(args.prometheus, rows, args.require_data)

    for failure in failures:
        print(f"FAIL {failure}")
    if failures:
        return 1
    panels = sum(len(query_panels(d)) for _, d in dashboards)
    evaluated = f", evaluated against {args.prometheus}" if args.prometheus else ""
    print(f"dashboards: {len(dashboards)} dashboards, {panels} panels, {len(rows)} exprs OK{evaluated}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
