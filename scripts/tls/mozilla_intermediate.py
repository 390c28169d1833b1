#!/usr/bin/env python3
"""Scans a dermagate node and its load balancer with sslyze and checks each against Mozilla's
"intermediate" TLS configuration, trusting the cluster's own CA for the certificate chain.
The server is addressed by the name its certificate carries, so name checks apply as well.

Usage: mozilla_intermediate.py CLUSTER_JSON    (exit 1 if any endpoint is not compliant)
"""

import json
import sys
from pathlib import Path
from urllib.parse import urlparse

from sslyze import (
    Scanner,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanStatusEnum,
)
from sslyze.mozilla_tls_profile.tls_config_checker import (
    MozillaTlsConfiguration,
    ServerNotCompliantWithTlsConfiguration,
    TlsConfigurationEnum,
    check_server_against_tls_configuration,
)
from sslyze import CertificateInfoExtraArgument, ScanCommandsExtraArguments
from sslyze.server_setting import ServerNetworkConfiguration


def main() -> int:
    info = json.loads(Path(sys.argv[1]).read_text())
    ca = Path(info["ca_cert"])
    targets = [("node 1", info["nodes"][0]["api_url"], "node-1.dermagate")]
    if info.get("lb_url"):
        targets.append(("load balancer", info["lb_url"], "lb.dermagate"))
    requests = []
    for label, url, name in targets:
        u = urlparse(url)
        location = ServerNetworkLocation(hostname=name, port=u.port, ip_address=u.hostname)
        requests.append(
            ServerScanRequest(
                server_location=location,
                network_configuration=ServerNetworkConfiguration(tls_server_name_indication=name),
                scan_commands_extra_arguments=ScanCommandsExtraArguments(
                    certificate_info=CertificateInfoExtraArgument(custom_ca_file=ca)
                ),
            )
        )
    scanner = Scanner()
    scanner.queue_scans(requests)
    config = MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE)
    failures = 0
    for result, (label, url, _) in zip(scanner.get_results(), targets):
        if result.scan_status != ServerScanStatusEnum.COMPLETED:
            print(f"{label} {url}: scan failed: {result.connectivity_error_trace}")
            failures += 1
            continue
        try:
            check_server_against_tls_configuration(result, config)
            print(f"{label} {url}: compliant with Mozilla's intermediate configuration")
        except ServerNotCompliantWithTlsConfiguration as e:
            failures += 1
            print(f"{label} {url}: NOT compliant")
            for key, issue in e.issues.items():
                print(f"  * {key}: {issue}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
