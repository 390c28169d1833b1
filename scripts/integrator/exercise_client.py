#!/usr/bin/env python3
"""Drives a live cluster the way a new integrator would: only through a client generated from
docs/openapi.json by openapi-python-client (a tool nobody here wrote), with FHIR answers
validated by fhir.resources. Every operation class is exercised: OAuth tokens, JSON and
multipart analyses, the FHIR answers (single and series), the series, export, erasure, and
errors parsed as their documented schemas. Run by scripts/check-integrator.sh.

Usage: exercise_client.py CLUSTER_DIR   (the generated package must be on PYTHONPATH)
"""

import base64
import io
import json
import struct
import sys
import uuid
import zlib
from pathlib import Path

import httpx
from fhir.resources.R4B.bundle import Bundle

from dermagate_client import AuthenticatedClient, Client
from dermagate_client.api.analyses import create_analysis, get_analysis, get_analysis_fhir, get_analysis_image
from dermagate_client.api.auth import login, me
from dermagate_client.api.catalog import body_sites, models
from dermagate_client.api.clients import create_client
from dermagate_client.api.discovery import jwks, oauth_metadata
from dermagate_client.api.oauth import introspect_token, revoke_token, token
from dermagate_client.api.organizations import create_organization, get_organization
from dermagate_client.api.subjects import erase_subject, export_subject, list_subject_analyses, list_subject_analyses_fhir
from dermagate_client.api.users import create_user
from dermagate_client.models import (
    AnalysisForm,
    AnalysisRequest,
    BodySiteCode,
    ClientRequest,
    ClientView,
    Erasure,
    FhirBundle,
    GrantType,
    ImageContentType,
    ImageInput,
    LoginRequest,
    MeView,
    NewAttestation,
    OAuthErrorBody,
    OrganizationRequest,
    OrganizationView,
    Problem,
    Report,
    Role,
    Scope,
    SeriesPage,
    SubjectExport,
    TokenForm,
    TokenReference,
    TokenResponse,
    UserRequest,
)
from dermagate_client.types import File

PASSWORD = "integrator-violet-tram-41"


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def png(width, height):
    """A sharp, well-exposed checkerboard PNG (passes the device's quality gate), stdlib only."""
    rows = []
    for y in range(height):
        row = bytearray([0])
        for x in range(width):
            v = 190 if ((x // 4) + (y // 4)) % 2 == 0 else 60
            row += bytes([v, int(v * 0.8), int(v * 0.7)])
        rows.append(bytes(row))
    raw = zlib.compress(b"".join(rows), 6)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def validate_fhir(bundle_json, what):
    bundle = Bundle.model_validate(bundle_json)
    kinds = sorted({e.resource.__resource_type__ for e in bundle.entry})
    check(bundle.type in ("collection", "searchset"), f"{what}: a FHIR Bundle ({bundle.type}) with {kinds}")
    return bundle


def main():
    cluster = Path(sys.argv[1])
    info = json.loads((cluster / "cluster.json").read_text())
    base = info.get("lb_url") or info["nodes"][0]["api_url"]
    ca = info["ca_cert"]
    admin_password = Path(info["admin"]["password_file"]).read_text().strip()
    anon = Client(base_url=base, verify_ssl=ca, raise_on_unexpected_status=True)

    meta = oauth_metadata.sync(client=anon)
    check(meta.issuer == base and meta.token_endpoint == f"{base}/oauth/token", "discovery names the load balancer")
    check(len(jwks.sync(client=anon).keys) >= 1, "JWKS has a signing key")

    def sign_in(username, password):
        answer = login.sync(client=anon, body=LoginRequest(username=username, password=password))
        check(isinstance(answer, TokenResponse), f"{username} signs in")
        return AuthenticatedClient(base_url=base, token=answer.access_token, verify_ssl=ca, raise_on_unexpected_status=True)

    platform = sign_in(info["admin"]["username"], admin_password)
    run = uuid.uuid4().hex[:8]
    org = create_organization.sync(
        client=platform,
        body=OrganizationRequest(
            name=f"Integrator clinic {run}",
            attestation=NewAttestation(contract_reference=f"MSA-{run}", attested_by="Integrator QA"),
            store_images=True,
        ),
    )
    check(isinstance(org, OrganizationView), "an organisation with its attestation")
    check(isinstance(get_organization.sync(org.id, client=platform), OrganizationView), "read back")
    admin_name = f"oa-{run}"
    created = create_user.sync(org.id, client=platform, body=UserRequest(username=admin_name, password=PASSWORD, roles=[Role.ORG_ADMIN]))
    check(created.username == admin_name, "its administrator")
    org_admin = sign_in(admin_name, PASSWORD)
    check(isinstance(me.sync(client=org_admin), MeView), "GET /v1/me")

    key = create_client.sync(org.id, client=org_admin, body=ClientRequest(name="PACS", scopes=[Scope.ANALYSESWRITE, Scope.REPORTSREAD, Scope.SUBJECTSERASE]))
    check(isinstance(key, ClientView) and key.client_secret.startswith("dgk_"), "a client key, secret shown once")
    basic = base64.b64encode(f"{key.client_id}:{key.client_secret}".encode()).decode()
    oauth = AuthenticatedClient(base_url=base, token=basic, prefix="Basic", verify_ssl=ca, raise_on_unexpected_status=True)
    issued = token.sync(client=oauth, body=TokenForm(grant_type=GrantType.CLIENT_CREDENTIALS))
    check(isinstance(issued, TokenResponse) and issued.token_type == "Bearer", "client-credentials token")
    pacs = AuthenticatedClient(base_url=base, token=issued.access_token, verify_ssl=ca, raise_on_unexpected_status=True)
    wrong = base64.b64encode(f"{key.client_id}:dgk_wrong".encode()).decode()
    stranger = AuthenticatedClient(base_url=base, token=wrong, prefix="Basic", verify_ssl=ca)
    bad = token.sync(client=stranger, body=TokenForm(grant_type=GrantType.CLIENT_CREDENTIALS))
    check(isinstance(bad, OAuthErrorBody) and bad.error == "invalid_client", "OAuth errors parse as RFC 6749 JSON")

    sites = body_sites.sync(client=pacs)
    check(any(s.code == "ARM_LEFT" for s in sites), "body sites")
    check(models.sync(client=pacs)[0].labels, "the model and its labels")

    image = png(640, 480)
    subject = f"subj-{run}"
    first = create_analysis.sync(
        client=pacs,
        body=AnalysisRequest(
            images=[ImageInput(data=base64.b64encode(image).decode(), content_type=ImageContentType.IMAGEPNG)],
            subject=subject,
            body_site=BodySiteCode.ARM_LEFT,
        ),
        idempotency_key=str(uuid.uuid4()),
    )
    check(isinstance(first, Report) and first.conclusions, "JSON analysis: a report with conclusions")
    form = AnalysisForm(
        images=[File(payload=io.BytesIO(image), file_name="lesion.png", mime_type="image/png")],
        subject=subject,
        body_site=BodySiteCode.ARM_LEFT,
        previous_report_id=str(first.id),
    )
    second = create_analysis.sync(client=pacs, body=form)
    check(isinstance(second, Report) and second.previous_report_id == first.id, "multipart analysis linked to the first")
    again = get_analysis.sync(str(first.id), client=pacs)
    check(isinstance(again, Report) and again.next_report_id == second.id, "the first report names its successor")
    stored = get_analysis_image.sync_detailed(str(first.id), 0, client=pacs)
    check(stored.status_code == 200 and stored.content[:2] == b"\xff\xd8", "the stored image (JPEG) downloads")

    single = get_analysis_fhir.sync(str(second.id), client=pacs)
    check(isinstance(single, FhirBundle), "FHIR answer parses in the generated client")
    bundle = validate_fhir(single.to_dict(), "single report")
    report = next(e.resource for e in bundle.entry if e.resource.__resource_type__ == "DiagnosticReport")
    check(report.status == "preliminary" and report.code.coding[0].system == "http://loinc.org", "DiagnosticReport: preliminary, LOINC-coded")

    page = list_subject_analyses.sync(subject, client=pacs, limit=1)
    check(isinstance(page, SeriesPage) and page.total == 2 and page.next_cursor, "series, paginated")
    series = list_subject_analyses_fhir.sync(subject, client=pacs)
    check(isinstance(series, FhirBundle), "series as FHIR parses")
    searchset = validate_fhir(series.to_dict(), "series searchset")
    patients = [e for e in searchset.entry if e.resource.__resource_type__ == "Patient"]
    check(len(patients) == 1, "one Patient per subject")
    check(any(link.relation == "self" for link in searchset.link), "searchset self link")

    export = export_subject.sync(subject, client=pacs)
    check(isinstance(export, SubjectExport) and len(export.reports) == 2 and export.images, "export: reports and images")

    problem = create_analysis.sync(client=pacs, body=AnalysisRequest(images=[], subject=subject, body_site=BodySiteCode.ARM_LEFT))
    check(isinstance(problem, Problem) and problem.status == 400 and problem.field == "images", "errors parse as problems naming the field")

    # Revocation: the client's token stops working.
    check(introspect_token.sync(client=oauth, body=TokenReference(token=issued.access_token)).active, "introspection: active")
    revoke_token.sync_detailed(client=oauth, body=TokenReference(token=issued.access_token))
    refused = me.sync_detailed(client=pacs)
    check(refused.status_code == 401, "a revoked token is refused")

    erased = erase_subject.sync(subject, client=org_admin)
    check(isinstance(erased, Erasure) and erased.erased_reports == 2, "erasure")
    gone = list_subject_analyses.sync_detailed(subject, client=org_admin)
    check(gone.status_code == 404, "the erased subject is gone")
    print("integrator walkthrough: all operation classes pass")


if __name__ == "__main__":
    try:
        main()
    except httpx.HTTPError as e:
        raise SystemExit(f"FAILED: network error {e}")
