#!/usr/bin/env python3
"""Render haproxy.cfg.tmpl into a working HAProxy configuration.

This is the reference implementation of what `dermagate local up --lb` does
in Rust: a plain replace-all of each {{NAME}} placeholder, nothing more. It
lets operators without the dermagate binary render the template, and it
produces the static example haproxy.cfg (see `--example`), which check.sh
compares against the committed file so the two never drift.

Usage:
    render.py --lb-bind :8443 --lb-cert-pem /path/lb.pem --ca-cert /path/ca.pem \
              --stats-bind 127.0.0.1:8405 \
              --server node1=10.0.0.1:8443,node-1.dermagate \
              --server node2=10.0.0.2:8443,node-2.dermagate [-o out.cfg]
    render.py --example [-o haproxy.cfg]

Each --server is NAME=HOST:PORT,CERT_NAME where CERT_NAME is a name in the
node certificate's subjectAltName (checked by HAProxy's `verifyhost`);
certificates made by `dermagate certs init` carry node-<id>.dermagate.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "haproxy.cfg.tmpl"
HEADER_END = "# ---- end of header ----\n"
PLACEHOLDERS = ("LB_BIND", "LB_CERT_PEM", "CA_CERT", "STATS_BIND", "SERVERS")

# The values of the committed example: the docker compose deployment in
# deploy/compose (nodes node1..node3, certificates mounted read-only into
# the official haproxy image's configuration directory).
EXAMPLE = {
    "LB_BIND": ":8443",
    "LB_CERT_PEM": "/usr/local/etc/haproxy/certs/lb.pem",
    "CA_CERT": "/usr/local/etc/haproxy/certs/ca.pem",
    "STATS_BIND": ":8405",
    "servers": [
        ("node1", "node1:8443", "node-1.dermagate"),
        ("node2", "node2:8443", "node-2.dermagate"),
        ("node3", "node3:8443", "node-3.dermagate"),
    ],
}

EXAMPLE_HEADER = """\
# Example HAProxy configuration for a 3-node dermagate cluster.
#
# GENERATED: this is haproxy.cfg.tmpl rendered by `render.py --example` for
# the docker compose deployment in deploy/compose (nodes node1..node3 on
# their API port 8443, certificates from deploy/compose/certs mounted at
# /usr/local/etc/haproxy/certs). Do not edit by hand: change the template,
# then run `deploy/haproxy/render.py --example -o deploy/haproxy/haproxy.cfg`.
# deploy/haproxy/check.sh fails when this file and the template disagree.
#
# See the template for what each setting does and README.md for the design.
"""

SERVER_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def server_lines(servers: list[tuple[str, str, str]]) -> str:
    """Format the backend's server lines exactly as the template expects."""
    lines = []
    for name, address, cert_name in servers:
        if not SERVER_NAME.match(name):
            raise SystemExit(f"invalid server name {name!r}")
        lines.append(f"    server {name} {address} verifyhost {cert_name}")
    return "\n".join(lines)


def render(values: dict[str, str], header: str) -> str:
    """Replace every placeholder; fail if one is missing or left over."""
    text = TEMPLATE.read_text()
    if HEADER_END not in text:
        raise SystemExit(f"{TEMPLATE}: missing header end marker")
    body = text.split(HEADER_END, 1)[1]
    for name in PLACEHOLDERS:
        token = "{{" + name + "}}"
        if token not in body:
            raise SystemExit(f"{TEMPLATE}: placeholder {token} not found")
        body = body.replace(token, values[name])
    leftover = re.findall(r"\{\{[A-Z_]+\}\}", body)
    if leftover:
        raise SystemExit(f"unknown placeholders left in template: {leftover}")
    return header + body


def parse_server(spec: str) -> tuple[str, str, str]:
    try:
        name, rest = spec.split("=", 1)
        address, cert_name = rest.split(",", 1)
    except ValueError:
        raise SystemExit(f"--server {spec!r}: expected NAME=HOST:PORT,CERT_NAME")
    return name, address, cert_name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--example", action="store_true", help="render the committed example (docker compose values)")
    parser.add_argument("--lb-bind")
    parser.add_argument("--lb-cert-pem")
    parser.add_argument("--ca-cert")
    parser.add_argument("--stats-bind", default="127.0.0.1:8405")
    parser.add_argument("--server", action="append", default=[], metavar="NAME=HOST:PORT,CERT_NAME")
    parser.add_argument("-o", "--output", help="write here instead of standard output")
    args = parser.parse_args()

    if args.example:
        values = {k: v for k, v in EXAMPLE.items() if k != "servers"}
        values["SERVERS"] = server_lines(EXAMPLE["servers"])
        header = EXAMPLE_HEADER
    else:
        if not (args.lb_bind and args.lb_cert_pem and args.ca_cert and args.server):
            parser.error("--lb-bind, --lb-cert-pem, --ca-cert and at least one --server are required")
        values = {
            "LB_BIND": args.lb_bind,
            "LB_CERT_PEM": args.lb_cert_pem,
            "CA_CERT": args.ca_cert,
            "STATS_BIND": args.stats_bind,
            "SERVERS": server_lines([parse_server(s) for s in args.server]),
        }
        header = "# Rendered from deploy/haproxy/haproxy.cfg.tmpl by render.py.\n"

    output = render(values, header)
    if args.output:
        Path(args.output).write_text(output)
    else:
        sys.stdout.write(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
