#!/usr/bin/env python3
"""Builds and checks docs/traceability.md, the matrix from REQ_005 to controls and tests.

REQ_005's failure modes, risks and requirements (docs/traceability/catalogue.toml) must each be
shown by a test, and the committed matrix must say which. A hand-kept table drifts from the code
as tests are renamed; so the tests say what they show, in a comment directly above them (or as
the first lines of their body):

    // traces: FM-03, R-02          (Rust: chaos-tests/tests, */tests, unit tests under */src)
    # traces: FM-03                 (Python or shell test scripts)

and this script derives the matrix from those comments.

    traceability.py generate [--results FILE]   write docs/traceability.md; FILE is a saved
                                                `cargo test` output that fills "Last result"
    traceability.py check                       exit 1 if an id has no test, an annotation names
                                                an unknown id or no test, or the committed matrix
                                                is stale (the "Last result" column is ignored)

Standard library only (python3 >= 3.11 for tomllib).
"""

import argparse
import datetime
import difflib
import os
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "docs/traceability/catalogue.toml"
MATRIX = ROOT / "docs/traceability.md"
SECTIONS = [("failure_mode", "Failure modes", "Failure mode (REQ_005, verbatim)"),
            ("risk", "Related risks", "Risk (REQ_005, verbatim)"),
            ("requirement", "Requirements", "Requirement (REQ_005, verbatim)")]
SKIP_DIRS = {".git", "target", "node_modules", "chaos-report", "__pycache__"}
RESULTS_LINE = "Last results recorded: "

RUST_TRACE = re.compile(r"^\s*//(?![/!])\s*traces:\s*(.*)$")
SCRIPT_TRACE = re.compile(r"^\s*#\s*traces:\s*(.*)$")
RUST_FN = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?fn\s+(\w+)")
TEST_ATTR = re.compile(r"^\s*#\[(?:[\w:]+::)?test\b")
SCRIPT_FN = re.compile(r"^\s*(?:def\s+(\w+)\s*\(|function\s+(\w+)|(\w+)\s*\(\)\s*\{)")
STRINGS = re.compile(r'r(#*)".*?"\1|"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])\'')


class Trace:
    """One annotated test: where it is, what it is called, which ids it names."""

    def __init__(self, path, line, ids, fn=None, error=None):
        self.path, self.line, self.ids, self.fn, self.error = path, line, ids, fn, error

    @property
    def name(self):
        return f"{self.path}::{self.fn}" if self.fn else self.path


def load_catalogue():
    with open(CATALOGUE, "rb") as f:
        data = tomllib.load(f)
    items, errors = [], []
    for key, _, _ in SECTIONS:
        for item in data.get(key, []):
            missing = [f for f in ("id", "text", "control") if not item.get(f, "").strip()]
            if missing:
                errors.append(f"{CATALOGUE.relative_to(ROOT)}: {item.get('id', '?')} lacks {', '.join(missing)}")
            items.append(dict(item, kind=key))
    seen = set()
    for item in items:
        if item.get("id") in seen:
            errors.append(f"{CATALOGUE.relative_to(ROOT)}: id {item['id']} is listed twice")
        seen.add(item.get("id"))
    return data, items, errors


def source_files():
    """Rust files under */src and */tests, and Python or shell scripts, anywhere in the tree."""
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        rel = Path(dirpath).relative_to(ROOT)
        for name in sorted(filenames):
            path = rel / name
            if name.endswith(".rs") and ("src" in path.parts or "tests" in path.parts):
                yield path
            elif name.endswith((".py", ".sh")) and path != Path("scripts/traceability.py"):
                yield path


def parse_ids(text):
    return [i for i in re.split(r"[\s,]+", text.strip()) if i]


def rust_traces(path, lines):
    """Attaches each `// traces:` line to the test fn that follows it or that encloses it."""
    traces = []
    for n, line in enumerate(lines):
        m = RUST_TRACE.match(line)
        if not m:
            continue
        fn, is_test, k = None, False, n + 1
        open_attr = 0
        while k < len(lines):  # directly above: only comments, attributes, blank lines between
            s = lines[k].strip()
            if not open_attr and RUST_FN.match(lines[k]):
                fn = RUST_FN.match(lines[k]).group(1)
                break
            if s and not open_attr and not s.startswith(("//", "#[")):
                break
            is_test |= bool(TEST_ATTR.match(lines[k]))
            if open_attr or s.startswith("#["):
                code = STRINGS.sub('""', s)
                open_attr += code.count("[") - code.count("]")
            k += 1
        if fn is None:  # inside a body: the nearest fn above whose braces are still open
            fn, is_test = enclosing_fn(lines, n)
        error = None
        if fn is None:
            error = "no test function follows or encloses this annotation (was the test removed?)"
        elif not is_test:
            error = f"`fn {fn}` is not a test (no #[test] / #[tokio::test] attribute)"
        traces.append(Trace(str(path), n + 1, parse_ids(m.group(1)), fn, error))
    return traces


def enclosing_fn(lines, n):
    for start in range(n - 1, -1, -1):
        m = RUST_FN.match(lines[start])
        if not m:
            continue
        code = [STRINGS.sub('""', l).split("//")[0] for l in lines[start:n]]
        depth = sum(c.count("{") - c.count("}") for c in code)
        if depth <= 0:
            return None, False
        k, is_test = start - 1, False  # its attributes: up to a blank line or the item before
        while k >= 0 and lines[k].strip() and not lines[k].rstrip().endswith(("}", ";", "{")):
            is_test |= bool(TEST_ATTR.match(lines[k]))
            k -= 1
        return m.group(1), is_test
    return None, False


def script_traces(path, lines):
    """`# traces:` above a function names that function; elsewhere it names the script itself."""
    traces = []
    for n, line in enumerate(lines):
        m = SCRIPT_TRACE.match(line)
        if not m:
            continue
        fn = None
        for follow in lines[n + 1:]:
            if follow.strip() and not follow.strip().startswith(("#", "@")):
                f = SCRIPT_FN.match(follow)
                fn = next((g for g in f.groups() if g), None) if f else None
                break
        traces.append(Trace(str(path), n + 1, parse_ids(m.group(1)), fn))
    return traces


def collect_traces():
    traces = []
    for path in source_files():
        lines = (ROOT / path).read_text(encoding="utf-8", errors="replace").splitlines()
        traces += rust_traces(path, lines) if path.suffix == ".rs" else script_traces(path, lines)
    return traces


# ---- results of a saved `cargo test` run ----

def crate_libs():
    """Crate directory -> the name cargo gives its test binaries (package name, `-` as `_`)."""
    libs = {}
    for manifest in ROOT.glob("*/Cargo.toml"):
        with open(manifest, "rb") as f:
            name = tomllib.load(f).get("package", {}).get("name")
        if name:
            libs[manifest.parent.name] = name.replace("-", "_")
    return libs


def parse_results(text):
    """[(kind, target path, binary name, {test name: ok|FAILED|ignored})] in the order run."""
    runs, current = [], None
    for line in text.splitlines():
        m = re.search(r"Running (unittests )?(\S+) \((?:.*/)?([^/)]+?)(?:-[0-9a-f]+)?(?:\.exe)?\)", line)
        if m:
            current = ("unit" if m.group(1) else "integration", m.group(2), m.group(3), {})
            runs.append(current)
            continue
        if re.search(r"^\s*Doc-tests ", line):
            current = None
            continue
        m = re.search(r"\btest (\S+) \.\.\. (ok|FAILED|ignored)\b", line)
        if m and current:
            current[3][m.group(1)] = m.group(2)
    return runs


def result_of(trace, runs, libs):
    """ok, FAILED or None (not run) for one annotated Rust test."""
    parts = Path(trace.path).parts
    if not trace.fn or not trace.path.endswith(".rs") or len(parts) < 3:
        return None
    crate, rest = parts[0], Path(*parts[1:])
    if rest.parts[0] == "tests":
        want = lambda kind, target, binary: kind == "integration" and target == str(rest)
        module = ""
    else:
        want = lambda kind, target, binary: kind == "unit" and binary == libs.get(crate)
        mod_parts = list(rest.with_suffix("").parts[1:])
        if mod_parts and mod_parts[-1] in ("lib", "main", "mod"):
            mod_parts.pop()
        module = "::".join(mod_parts)
    status = None
    for kind, target, binary, tests in runs:
        if not want(kind, target, binary):
            continue
        for name, outcome in tests.items():
            if (name == trace.fn or name.endswith("::" + trace.fn)) and name.startswith(module):
                status = "FAILED" if "FAILED" in (status, outcome) else (outcome if outcome != "ignored" else status)
    return status


def summarise(tests, statuses):
    failed = [t.split("/")[-1] for t in tests if statuses.get(t) == "FAILED"]
    passed = sum(1 for t in tests if statuses.get(t) == "ok")
    if failed:
        return "FAIL: " + ", ".join(failed)
    if passed == len(tests) and tests:
        return "pass"
    return f"pass ({passed} of {len(tests)} run)" if passed else "not run"


# ---- the matrix ----

def cell(text):
    return " ".join(text.split()).replace("|", "\\|")


def committed_results():
    """id -> last result, and the results line, as the committed matrix has them."""
    if not MATRIX.exists():
        return {}, None
    results, line = {}, None
    for row in MATRIX.read_text(encoding="utf-8").splitlines():
        if row.startswith(RESULTS_LINE):
            line = row
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
        if len(cells) == 5 and re.match(r"^[A-Z]+-[\d.]+$", cells[0]):
            results[cells[0]] = cells[4]
    return results, line


def render(data, items, by_id, results, results_line):
    out = [f"# {data.get('title', 'Traceability')}", "", data.get("intro", "").strip(), "",
           "<!-- Generated by scripts/traceability.py from docs/traceability/catalogue.toml and the "
           "`// traces:` comments on the tests; do not edit by hand. -->", "",
           "Regenerate with `python3 scripts/traceability.py generate [--results FILE]` (FILE: a saved "
           "`cargo test --workspace --no-fail-fast` output); `make test` runs "
           "`python3 scripts/traceability.py check`.", ""]
    if results_line:
        out += [results_line, ""]
    for key, heading, column in SECTIONS:
        section = [i for i in items if i["kind"] == key]
        if not section:
            continue
        out += [f"## {heading}", "", f"| Id | {column} | Control in dermagate | Tests | Last result |",
                "| --- | --- | --- | --- | --- |"]
        for item in section:
            tests = "<br>".join(f"`{t}`" for t in by_id.get(item["id"], [])) or "**none**"
            out.append(f"| {item['id']} | {cell(item['text'])} | {cell(item['control'])} | {tests} "
                       f"| {results.get(item['id'], 'not run')} |")
        out.append("")
    return "\n".join(out)


def without_results(text):
    lines = [l for l in text.splitlines() if not l.startswith(RESULTS_LINE)]
    return [re.sub(r"\|[^|]*\|\s*$", "|", l) if re.match(r"^\| [A-Z]+-[\d.]+ \|", l) else l for l in lines]


def build(results_file=None):
    data, items, errors = load_catalogue()
    traces = collect_traces()
    known = {i["id"] for i in items}
    by_id = {}
    for t in traces:
        if t.error:
            errors.append(f"{t.path}:{t.line}: {t.error}")
            continue
        if not t.ids:
            errors.append(f"{t.path}:{t.line}: `traces:` names no id")
        for i in t.ids:
            if i not in known:
                errors.append(f"{t.path}:{t.line}: unknown id {i!r} (not in {CATALOGUE.relative_to(ROOT)})")
            elif t.name not in by_id.setdefault(i, []):
                by_id[i].append(t.name)
    missing = [i["id"] for i in items if not by_id.get(i["id"])]
    results, results_line = committed_results()
    if results_file:
        runs, libs = parse_results(Path(results_file).read_text(encoding="utf-8", errors="replace")), crate_libs()
        statuses = {t.name: result_of(t, runs, libs) for t in traces if not t.error}
        results = {i: summarise(tests, statuses) for i, tests in by_id.items()}
        when = datetime.datetime.fromtimestamp(Path(results_file).stat().st_mtime, datetime.timezone.utc)
        results_line = f"{RESULTS_LINE}{when:%Y-%m-%d %H:%M} UTC, from `{Path(results_file).name}`."
    text = render(data, items, by_id, results, results_line) + "\n"
    return text, errors, missing, traces


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    gen = sub.add_parser("generate", help="write docs/traceability.md")
    gen.add_argument("--results", metavar="FILE", help="a saved `cargo test` output for the Last result column")
    sub.add_parser("check", help="fail on untested ids, bad annotations or a stale matrix")
    args = parser.parse_args()

    text, errors, missing, traces = build(getattr(args, "results", None))
    for e in errors:
        print(f"traceability: {e}", file=sys.stderr)
    for i in missing:
        print(f"traceability: {i} has no test: add `// traces: {i}` above a test that shows its control",
              file=sys.stderr)
    if args.mode == "generate":
        MATRIX.write_text(text, encoding="utf-8")
        print(f"traceability: wrote {MATRIX.relative_to(ROOT)} ({len(traces)} annotated tests)")
        return 1 if errors else 0
    committed = MATRIX.read_text(encoding="utf-8") if MATRIX.exists() else ""
    stale = without_results(committed) != without_results(text)
    if stale:
        print(f"traceability: {MATRIX.relative_to(ROOT)} is stale; run `python3 scripts/traceability.py generate` "
              "and commit it. Difference (Last result column ignored):", file=sys.stderr)
        diff = difflib.unified_diff(without_results(committed), without_results(text), "committed", "generated",
                                    lineterm="", n=0)
        for line in list(diff)[:40]:
            print("  " + line, file=sys.stderr)
    if errors or missing or stale:
        return 1
    print(f"traceability: OK ({len(text.splitlines())} lines, {len(traces)} annotated tests, every id traced)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
