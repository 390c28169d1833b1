#!/usr/bin/env python3
"""Cross-reference checks for the manifests in deploy/kubernetes.

kubernetes-validate checks each object against the Kubernetes OpenAPI schema
but not whether the objects fit together, and it has no schema for the
ServiceMonitor CRD or the Kustomization file. This script covers both:

- kustomization.yaml lists exactly the manifests of this folder;
- every Service, the PodDisruptionBudget, the NetworkPolicy and the
  ServiceMonitor select the StatefulSet's pods (or the right Service), and
  every named port they use exists;
- the StatefulSet has the properties the operations docs rely on (3
  replicas, Parallel, probes on /readyz and /livez over HTTPS, 45 s grace,
  non-root, read-only root filesystem, no capabilities, the mounts of
  node.toml, TLS and KEK);
- node.toml in the ConfigMap is valid TOML, uses the keys of
  node/src/config.rs and points at the mounted files;
- the ServiceMonitor has the fields the Prometheus Operator requires;
- the data volume size equals the capacity declared to the disk alerts.

Prints one line per failed check and exits 1 if any failed.
Needs PyYAML (pip install pyyaml) and Python 3.11+ (tomllib).
"""

from __future__ import annotations

import math
import re
import sys
import tomllib
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE.parent / "prometheus" / "rules" / "dermagate.rules.yml"

# Secrets are created by the operator, never committed (README.md).
EXTERNAL_SECRETS = {"dermagate-tls", "dermagate-kek", "dermagate-admin"}

failures: list[str] = []


def check(condition: bool, message: str) -> None:
    if not condition:
        failures.append(message)


def load_objects() -> dict[tuple[str, str], dict]:
    objects = {}
    for path in sorted(HERE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def selects(selector: dict, labels: dict) -> bool:
    """True if a matchLabels selector (the only form used here) matches."""
    match = selector.get("matchLabels", selector)
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def quantity_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    number, unit = re.fullmatch(r"(\d+)([KMGT]i)", quantity).groups()
    return int(number) * units[unit]


def check_kustomization() -> None:
    kustomization = yaml.safe_load((HERE / "kustomization.yaml").read_text())
    listed = set(kustomization.get("resources", []))
    present = {p.name for p in HERE.glob("*.yaml")} - {"kustomization.yaml"}
    check(listed == present, f"kustomization resources {sorted(listed)} != manifests {sorted(present)}")
    image_names = {i["name"] for i in kustomization.get("images", [])}
    check("dermagate" in image_names, "kustomization.yaml does not pin the dermagate image")


def check_statefulset(objects: dict) -> tuple[dict, dict]:
    sts = objects[("StatefulSet", "dermagate")]
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    container = next(c for c in pod["containers"] if c["name"] == "dermagate")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    check(spec["replicas"] == 3, "StatefulSet must have 3 replicas")
    check(spec.get("podManagementPolicy") == "Parallel", "podManagementPolicy must be Parallel")
    check(selects(spec["selector"], labels), "StatefulSet selector does not match its pod labels")
    check(pod.get("terminationGracePeriodSeconds") == 45, "terminationGracePeriodSeconds must be 45")
    check(ports == {"api": 8443, "raft": 9443, "metrics": 9100}, f"unexpected container ports {ports}")
    start = " ".join(container.get("command", []) + container.get("args", []))
    check("exec dermagate serve --config /etc/dermagate/node.toml" in start,
          "the container must exec `dermagate serve --config /etc/dermagate/node.toml` (SIGTERM reaches it)")
    check("DERMAGATE_NODE_ID" in start and "DERMAGATE_CLUSTER__BOOTSTRAP" in start,
          "the start-up command must set the node id and the bootstrap flag")

    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/livez")):
        http = container.get(probe, {}).get("httpGet", {})
        check(http.get("path") == path and http.get("scheme") == "HTTPS" and http.get("port") == "api",
              f"{probe} must be GET {path} over HTTPS on the api port")

    pod_sc = pod.get("securityContext", {})
    sc = container.get("securityContext", {})
    check(pod_sc.get("runAsNonRoot") is True and pod_sc.get("runAsUser", 0) != 0, "pod must run as non-root")
    check(sc.get("readOnlyRootFilesystem") is True, "container root filesystem must be read-only")
    check(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], "container must drop ALL capabilities")

    headless = objects.get(("Service", spec["serviceName"]))
    check(headless is not None, f"serviceName {spec['serviceName']} has no Service")
    if headless:
        check(headless["spec"].get("clusterIP") == "None", "serviceName must be a headless Service")
        check(headless["spec"].get("publishNotReadyAddresses") is True,
              "headless Service must publish not-ready addresses")

    # Volumes refer to objects that exist here, or to the external Secrets.
    volumes = {v["name"]: v for v in pod["volumes"]}
    for volume in volumes.values():
        if "configMap" in volume:
            name = volume["configMap"]["name"]
            check(("ConfigMap", name) in objects, f"volume {volume['name']}: ConfigMap {name} not defined")
        if "secret" in volume:
            name = volume["secret"]["secretName"]
            check(name in EXTERNAL_SECRETS, f"volume {volume['name']}: Secret {name} is not documented")
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path in ("/var/lib/dermagate", "/etc/dermagate/node.toml", "/etc/dermagate/tls",
                 "/etc/dermagate/kek.key", "/etc/dermagate/admin", "/tmp"):
        check(path in mounts, f"nothing is mounted at {path}")
    for mount in mounts.values():
        check(mount["name"] in volumes or mount["name"] in
              {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])},
              f"mount {mount['mountPath']} uses unknown volume {mount['name']}")
    return sts, ports


def check_services(objects: dict, pod_labels: dict, ports: dict) -> None:
    for (kind, name), obj in objects.items():
        if kind != "Service":
            continue
        check(selects(obj["spec"]["selector"], pod_labels), f"Service {name} does not select the pods")
        for port in obj["spec"]["ports"]:
            check(port["targetPort"] in ports, f"Service {name}: unknown targetPort {port['targetPort']}")


def check_pdb_and_policy(objects: dict, pod_labels: dict, ports: dict) -> None:
    pdb = objects[("PodDisruptionBudget", "dermagate")]
    check(pdb["spec"].get("maxUnavailable") == 1, "PodDisruptionBudget must have maxUnavailable 1")
    check(selects(pdb["spec"]["selector"], pod_labels), "PodDisruptionBudget does not select the pods")

    policy = objects[("NetworkPolicy", "dermagate")]["spec"]
    check(selects(policy["podSelector"], pod_labels), "NetworkPolicy does not select the pods")
    by_port = {}
    for rule in policy["ingress"]:
        for port in rule["ports"]:
            check(port["port"] in ports, f"NetworkPolicy: unknown port {port['port']}")
            by_port[port["port"]] = rule["from"]
    raft_peers = by_port.get("raft", [])
    check(len(raft_peers) == 1 and "namespaceSelector" not in raft_peers[0]
          and selects(raft_peers[0].get("podSelector", {}), pod_labels),
          "raft must be reachable only from the dermagate pods")
    metrics_from = by_port.get("metrics", [])
    check(len(metrics_from) == 1 and metrics_from[0].get("namespaceSelector", {}).get("matchLabels")
          == {"kubernetes.io/metadata.name": "monitoring"},
          "metrics must be reachable only from the monitoring namespace")


def check_servicemonitor(objects: dict) -> None:
    sm = objects.get(("ServiceMonitor", "dermagate"))
    check(sm is not None, "ServiceMonitor dermagate missing")
    if not sm:
        return
    check(sm["apiVersion"] == "monitoring.coreos.com/v1", "ServiceMonitor apiVersion must be monitoring.coreos.com/v1")
    spec = sm["spec"]
    check(isinstance(spec.get("endpoints"), list) and spec["endpoints"], "ServiceMonitor needs endpoints")
    services = [o for (k, _), o in objects.items() if k == "Service" and selects(spec["selector"], o["metadata"]["labels"])]
    check(len(services) == 1, f"ServiceMonitor selects {len(services)} Services, expected exactly 1")
    if len(services) != 1:
        return
    service = services[0]
    check(service["metadata"]["labels"].get(spec.get("jobLabel")) == "dermagate",
          'ServiceMonitor jobLabel must yield job="dermagate"')
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in spec["endpoints"]:
        check(endpoint.get("port") in port_names, f"ServiceMonitor endpoint port {endpoint.get('port')} not in Service")
        check(endpoint.get("path", "/metrics") == "/metrics", "ServiceMonitor must scrape /metrics")


def check_config(objects: dict) -> None:
    """node.toml follows node/src/config.rs and points at the mounted files."""
    text = objects[("ConfigMap", "dermagate-config")]["data"]["node.toml"]
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        check(False, f"node.toml is not valid TOML: {error}")
        return
    check(config.get("version") == 1, "node.toml version must be 1")
    check(set(config) <= {"version", "node_id", "data_dir", "api", "raft", "tls", "storage", "metrics",
                          "cluster", "auth", "log"}, f"node.toml has unknown top-level keys {sorted(config)}")
    check(config.get("data_dir") == "/var/lib/dermagate", "node.toml data_dir must be /var/lib/dermagate")
    check(config["api"]["public_url"].startswith("https://"), "api.public_url must be https://")
    for key in ("ca_file", "cert_file", "key_file"):
        check(config["tls"][key].startswith("/etc/dermagate/tls/"), f"tls.{key} must be under /etc/dermagate/tls")
    check(config["storage"]["kek_file"] == "/etc/dermagate/kek.key", "storage.kek_file must be /etc/dermagate/kek.key")
    check(config["metrics"]["listen"].endswith(":9100"), "metrics.listen must use port 9100")
    admin = config.get("cluster", {}).get("bootstrap_admin", {})
    check(admin.get("password_file", "").startswith("/etc/dermagate/admin/"),
          "cluster.bootstrap_admin.password_file must be in the admin Secret mount")
    members = config.get("cluster", {}).get("initial_members", [])
    check([m["id"] for m in members] == [1, 2, 3], "cluster.initial_members must be nodes 1, 2, 3")


def check_capacity(sts: dict) -> None:
    """The PVC size is what DermagateDiskAlmostFull compares against."""
    storage = sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    rules = yaml.safe_load(RULES.read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"] if r.get("record") == "dermagate:storage_capacity_bytes"]
    check(len(exprs) == 1, "dermagate:storage_capacity_bytes not recorded exactly once")
    if exprs:
        match = re.fullmatch(r"\s*vector\(([\d\s*]+)\)\s*", exprs[0])
        declared = math.prod(int(f) for f in match.group(1).split("*")) if match else None
        check(declared == quantity_bytes(storage),
              f"PVC size {storage} != dermagate:storage_capacity_bytes {declared}")


def main() -> int:
    objects = load_objects()
    check_kustomization()
    sts, ports = check_statefulset(objects)
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    check_services(objects, pod_labels, ports)
    check_pdb_and_policy(objects, pod_labels, ports)
    check_servicemonitor(objects)
    check_config(objects)
    check_capacity(sts)
    for failure in failures:
        print(f"FAIL {failure}")
    if failures:
        return 1
    print(f"crossref: {len(objects)} objects consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
