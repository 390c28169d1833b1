#!/usr/bin/env python3
"""Offline checks of deploy/compose (Docker itself cannot run here).

1. docker-compose.yml parses (PyYAML, anchors and merge keys included) and
   every local file or directory it references exists: build contexts and
   Dockerfiles, bind-mounted sources, env files. Sources under ./secrets/ are
   made by gen-secrets.sh and are not committed: unless they already exist,
   the script runs gen-secrets.sh into a temporary directory and checks them
   there, which proves the generator produces every file the compose file
   mounts.
2. Named volumes and networks are declared, depends_on names services.
3. The pieces agree with each other: every path in node.toml and in the
   per-node DERMAGATE_* overrides is mounted in the node containers; the
   HAProxy servers and Prometheus targets are compose services; HAProxy's
   certificate paths are mounted; the Grafana dashboard provider reads the
   directory the dashboards are mounted at.
4. The Dockerfile has the expected stages: rust:1-bookworm builder with
   clang and libclang-dev, debian:bookworm-slim runtime, a non-root USER and a
   HEALTHCHECK.

Prints every failure and exits 1 if there was any. Needs PyYAML.
Usage: check.py [--no-generate]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path, PurePosixPath

import yaml

HERE = Path(__file__).resolve().parent
COMPOSE = HERE / "docker-compose.yml"
SECRETS = HERE / "secrets"
NODE_SERVICES = ("node1", "node2", "node3")

failures: list[str] = []


def check(condition: bool, message: str) -> None:
    if not condition:
        failures.append(message)


def is_path(source: str) -> bool:
    """Compose treats a volume source as a host path when it looks like one."""
    return source.startswith((".", "/", "~"))


def parse_volume(entry) -> tuple[str, str, bool]:
    """(source, target, is_bind) for short and long volume syntax."""
    if isinstance(entry, dict):
        source = entry.get("source", "")
        return source, entry["target"], entry.get("type") == "bind" or is_path(source)
    parts = entry.split(":")
    if len(parts) == 1:
        return "", parts[0], False  # anonymous volume
    return parts[0], parts[1], is_path(parts[0])


class Resolver:
    """Maps a compose-relative source path to the file that proves it exists."""

    def __init__(self, generated: Path | None):
        self.generated = generated

    def host_path(self, source: str) -> Path:
        path = (HERE / source).resolve()
        if self.generated and not path.exists():
            try:
                return self.generated / path.relative_to(SECRETS)
            except ValueError:
                pass
        return path


def mounts_of(service: dict) -> dict[str, str]:
    """Container target -> host source, for bind mounts."""
    mounts = {}
    for entry in service.get("volumes", []):
        source, target, bind = parse_volume(entry)
        if bind:
            mounts[target] = source
    return mounts


def container_file(service: dict, resolver: Resolver, path: str) -> Path | None:
    """The host file that appears at `path` inside the container, if mounted."""
    target = PurePosixPath(path)
    for mount_target, source in mounts_of(service).items():
        mount = PurePosixPath(mount_target)
        if target == mount:
            return resolver.host_path(source)
        if mount in target.parents:
            return resolver.host_path(source) / target.relative_to(mount)
    return None


def check_references(compose: dict, resolver: Resolver) -> None:
    services = compose.get("services", {})
    volumes = set((compose.get("volumes") or {}).keys())
    networks = set((compose.get("networks") or {}).keys())
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = (HERE / (build if isinstance(build, str) else build.get("context", "."))).resolve()
            check(context.is_dir(), f"{name}: build context {context} missing")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            check((context / dockerfile).is_file(), f"{name}: Dockerfile {context / dockerfile} missing")
        for entry in service.get("volumes", []):
            source, target, bind = parse_volume(entry)
            if bind:
                check(resolver.host_path(source).exists(), f"{name}: bind source {source} (for {target}) missing")
            elif source:
                check(source in volumes, f"{name}: named volume {source} not declared")
        for env_file in ([service["env_file"]] if isinstance(service.get("env_file"), str) else service.get("env_file", [])):
            check((HERE / env_file).is_file(), f"{name}: env_file {env_file} missing")
        for dependency in service.get("depends_on", []):
            check(dependency in services, f"{name}: depends_on unknown service {dependency}")
        for network in service.get("networks", []):
            check(network in networks, f"{name}: network {network} not declared")


def check_nodes(compose: dict, resolver: Resolver) -> None:
    services = compose["services"]
    config = tomllib.loads((HERE / "node.toml").read_text())
    for name in NODE_SERVICES:
        service = services.get(name)
        check(service is not None, f"service {name} missing")
        if not service:
            continue
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        check(env.get("DERMAGATE_NODE_ID") == name[-1], f"{name}: DERMAGATE_NODE_ID must be {name[-1]}")
        check(container_file(service, resolver, "/etc/dermagate/node.toml") is not None,
              f"{name}: node.toml is not mounted at /etc/dermagate/node.toml")
        check(service.get("read_only") is True, f"{name}: root filesystem must be read-only")
        check(service.get("user", "0").split(":")[0] not in ("0", "root"), f"{name}: must not run as root")
        check("/var/lib/dermagate" in {parse_volume(v)[1] for v in service.get("volumes", [])},
              f"{name}: /var/lib/dermagate must be a volume")
        wanted = {
            "tls.ca_file": config["tls"]["ca_file"],
            "tls.cert_file": env.get("DERMAGATE_TLS__CERT_FILE", config["tls"]["cert_file"]),
            "tls.key_file": env.get("DERMAGATE_TLS__KEY_FILE", config["tls"]["key_file"]),
            "storage.kek_file": config["storage"]["kek_file"],
        }
        if env.get("DERMAGATE_CLUSTER__BOOTSTRAP") == "true":
            wanted["cluster.bootstrap_admin.password_file"] = config["cluster"]["bootstrap_admin"]["password_file"]
        for key, path in wanted.items():
            host = container_file(service, resolver, path)
            check(host is not None and host.is_file(), f"{name}: {key} {path} is not a mounted file")
    bootstrappers = [n for n in NODE_SERVICES
                     if str((services.get(n, {}).get("environment") or {}).get("DERMAGATE_CLUSTER__BOOTSTRAP")) == "true"]
    check(bootstrappers == ["node1"], f"exactly node1 must bootstrap, got {bootstrappers}")


def check_haproxy(compose: dict, resolver: Resolver) -> None:
    services = compose["services"]
    haproxy = services.get("haproxy", {})
    config_path = container_file(haproxy, resolver, "/usr/local/etc/haproxy/haproxy.cfg")
    check(config_path is not None and config_path.is_file(), "haproxy: haproxy.cfg not mounted")
    if not config_path or not config_path.is_file():
        return
    text = config_path.read_text()
    servers = re.findall(r"^\s*server\s+\S+\s+([^:\s]+):(\d+)", text, re.M)
    check(sorted(h for h, _ in servers) == list(NODE_SERVICES), f"haproxy servers {servers} != compose nodes")
    for host, port in servers:
        check(port == "8443", f"haproxy server {host} must use the API port 8443")
    for path in re.findall(r"(?:crt|ca-file)\s+(\S+)", text):
        host = container_file(haproxy, resolver, path)
        check(host is not None and host.is_file(), f"haproxy: {path} is not a mounted file")


def check_prometheus(compose: dict, resolver: Resolver) -> None:
    services = compose["services"]
    prometheus = services.get("prometheus", {})
    config_path = container_file(prometheus, resolver, "/etc/prometheus/prometheus.yml")
    check(config_path is not None and config_path.is_file(), "prometheus: prometheus.yml not mounted")
    if not config_path or not config_path.is_file():
        return
    config = yaml.safe_load(config_path.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    check("dermagate" in jobs, "prometheus: job dermagate missing")
    targets = [t for sc in jobs.get("dermagate", {}).get("static_configs", []) for t in sc["targets"]]
    check(sorted(targets) == [f"{n}:9100" for n in NODE_SERVICES], f"prometheus dermagate targets {targets}")
    for job in jobs.values():
        for sc in job.get("static_configs", []):
            for target in sc["targets"]:
                host = target.split(":")[0]
                check(host == "localhost" or host in services, f"prometheus target {target} is not a compose service")
    for pattern in config.get("rule_files", []):
        directory = container_file(prometheus, resolver, str(PurePosixPath("/etc/prometheus") / pattern).rsplit("/", 1)[0])
        check(directory is not None and any(directory.glob(pattern.rsplit("/", 1)[-1])),
              f"prometheus: rule_files {pattern} matches no mounted file")


def check_grafana(compose: dict, resolver: Resolver) -> None:
    grafana = compose["services"].get("grafana", {})
    provisioning = container_file(grafana, resolver, "/etc/grafana/provisioning")
    check(provisioning is not None and provisioning.is_dir(), "grafana: provisioning directory not mounted")
    if not provisioning or not provisioning.is_dir():
        return
    check(any((provisioning / "datasources").glob("*.yml")), "grafana: no datasource provisioning file")
    for provider_file in (provisioning / "dashboards").glob("*.yml"):
        for provider in yaml.safe_load(provider_file.read_text()).get("providers", []):
            path = provider.get("options", {}).get("path", "")
            directory = container_file(grafana, resolver, path)
            check(directory is not None and any(directory.glob("*.json")),
                  f"grafana: provider {provider.get('name')} reads {path}, where no dashboard is mounted")
    home = (grafana.get("environment") or {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        host = container_file(grafana, resolver, home)
        check(host is not None and host.is_file(), f"grafana: home dashboard {home} not mounted")


def check_dockerfile() -> None:
    text = (HERE / "Dockerfile").read_text()
    check(re.search(r"^FROM rust:1-bookworm AS builder$", text, re.M) is not None, "Dockerfile: builder stage")
    check("clang" in text and "libclang-dev" in text, "Dockerfile: builder must install clang and libclang-dev")
    check(re.search(r"^FROM debian:bookworm-slim$", text, re.M) is not None, "Dockerfile: runtime stage")
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    check(bool(users) and users[-1].split(":")[0] not in ("0", "root"), "Dockerfile: must end as a non-root USER")
    check(re.search(r"^HEALTHCHECK\s", text, re.M) is not None, "Dockerfile: HEALTHCHECK missing")
    check("/livez" in text, "Dockerfile: HEALTHCHECK must probe /livez")


def generate_secrets(into: Path) -> bool:
    result = subprocess.run([str(HERE / "gen-secrets.sh"), str(into)], capture_output=True, text=True)
    if result.returncode != 0:
        failures.append(f"gen-secrets.sh failed: {result.stderr.strip()}")
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-generate", action="store_true",
                        help="require ./secrets to exist instead of generating a temporary copy")
    args = parser.parse_args()

    compose = yaml.safe_load(COMPOSE.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        generated = None
        if not SECRETS.exists() and not args.no_generate:
            generated = Path(tmp) / "secrets"
            if not generate_secrets(generated):
                generated = None
            else:
                print("./secrets absent: checked against a temporary run of gen-secrets.sh")
        resolver = Resolver(generated)
        check_references(compose, resolver)
        check_nodes(compose, resolver)
        check_haproxy(compose, resolver)
        check_prometheus(compose, resolver)
        check_grafana(compose, resolver)
    check_dockerfile()

    for failure in failures:
        print(f"FAIL {failure}")
    if failures:
        return 1
    print(f"compose: {len(compose['services'])} services, all references resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main())
