//! The OpenAPI 3.1 document. **The router and the document come from one list**: every route is
//! registered with its `#[utoipa::path]` annotation (`routes::api`), so a route cannot exist
//! undocumented. This file adds what every operation shares, once: the security schemes and the
//! error answers each kind of operation can give (problem+json, or RFC 6749 JSON on `/oauth/`).
//! The document is committed as `docs/openapi.json` (`dermagate openapi`); `make test` fails
//! when the two differ.

use std::sync::OnceLock;

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa::OpenApi as _;

use crate::error::{Problem, PROBLEM_JSON};
use crate::routes::oauth::OAuthErrorBody;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "dermagate",
        description = "The clustered, secure REST API of an AI medical device for dermatology: image analysis with \
                       an image-quality gate, ICD-11 diagnosis support, and each subject's reports as a time series. \
                       JSON fields are camelCase, except the OAuth endpoints and token responses, whose names \
                       RFC 6749/7009/7662 fix. The instructions for use are at /ifu.",
        license(name = "Proprietary")
    ),
    components(schemas(Problem, OAuthErrorBody)),
    tags(
        (name = "analyses", description = "The device's output"),
        (name = "subjects", description = "A subject's time series, export and erasure"),
        (name = "auth", description = "Signing in, the caller, second factor"),
        (name = "oauth", description = "OAuth 2.0 (RFC 6749, 7009, 7662)"),
    )
)]
struct Base;

/// A body of raw bytes (an image, an encrypted backup): `type: string, format: binary`, which
/// generators map to a file.
pub struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::schema::SchemaFormat::KnownFormat(
                utoipa::openapi::schema::KnownFormat::Binary,
            )))
            .into()
    }
}

impl utoipa::ToSchema for Binary {}

/// The document as the router declares it, completed.
pub fn document() -> OpenApi {
    let (_, doc) = crate::routes::api().split_for_parts();
    complete(doc)
}

/// The document as served, serialised once.
pub fn json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| document().to_pretty_json().unwrap_or_else(|_| "{}".into()))
}

pub(crate) fn base() -> OpenApi {
    let mut doc = Base::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

fn complete(mut doc: OpenApi) -> OpenApi {
    let components = doc.components.get_or_insert_with(Default::default);
    let bearer = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .bearer_format("JWT")
        .description(Some(
            "An access token from /oauth/token or /v1/auth/login (EdDSA, RFC 9068), or a client key dgk_...",
        ))
        .build();
    components.add_security_scheme("bearerAuth", SecurityScheme::Http(bearer));
    components.add_security_scheme(
        "apiKey",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-API-Key",
            "A client key (dgk_...) used directly",
        ))),
    );
    let basic = HttpBuilder::new()
        .scheme(HttpAuthScheme::Basic)
        .description(Some("client_id:client_secret (RFC 6749 §2.3.1)"))
        .build();
    components.add_security_scheme("clientBasic", SecurityScheme::Http(basic));
    for (path, item) in doc.paths.paths.iter_mut() {
        for operation in operations(item) {
            add_shared_answers(path, operation);
        }
    }
    doc
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch]
        .into_iter()
        .filter_map(|o| o.as_mut())
}

/// The errors an operation can answer besides its own: decided by what it is (authenticated,
/// takes a body, has path parameters, writes), documented once here.
fn add_shared_answers(path: &str, op: &mut Operation) {
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_body = op.request_body.is_some();
    let has_params = path.contains('{') || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let is_docs = path.starts_with("/docs") || path.starts_with("/ifu") || path == "/openapi.json";
    let is_probe = ["/livez", "/readyz", "/v2/health/live", "/v2/health/ready", "/.well-known/"]
        .iter()
        .any(|p| path.starts_with(p));
    let mut statuses: Vec<&str> = Vec::new();
    if secured {
        statuses.extend(["401", "403", "429", "503"]);
    }
    if has_body {
        statuses.extend(["400", "413", "415"]);
    }
    if has_params {
        statuses.extend(["400", "404"]);
    }
    if secured && !is_read(op) {
        // A write the state refuses: it exists already, or the organisation is suspended.
        statuses.extend(["409", "422", "504", "507"]);
    }
    if path.starts_with("/v1/auth/") || path == "/compat/legit/login" {
        // Sign-in and registration: per-address budget, throttled guessing, refused credentials,
        // a taken username.
        statuses.extend(["401", "409", "422", "429", "504", "507"]);
    }
    if !is_docs && !is_probe {
        statuses.push("503");
    }
    if path.starts_with("/oauth/") {
        statuses.extend(["400", "401", "415", "429", "503"]);
    }
    statuses.sort_unstable();
    statuses.dedup();
    for status in statuses {
        if op.responses.responses.contains_key(status) {
            continue;
        }
        let answer = if path.starts_with("/oauth/") { oauth_error(status) } else { problem(status) };
        op.responses.responses.insert(status.to_string(), RefOr::T(answer));
    }
}

/// Whether an operation only reads. A GET that audits the read still writes the audit record,
/// so its 507 and 504 are possible too: only the probes and catalogues are pure reads.
fn is_read(op: &Operation) -> bool {
    let id = op.operation_id.as_deref().unwrap_or("");
    [
        "getCluster",
        "listOrganizations",
        "getOrganization",
        "listUsers",
        "getUser",
        "listClients",
        "getClient",
        "me",
        "models",
        "bodySites",
        "oipModel",
        "oipModelReady",
        "auditTrail",
        "getPlatformSettings",
    ]
    .contains(&id)
}

fn header(description: &str) -> utoipa::openapi::header::Header {
    utoipa::openapi::header::HeaderBuilder::new()
        .schema(
            utoipa::openapi::schema::ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::String).build(),
        )
        .description(Some(description))
        .build()
}

fn problem(status: &str) -> utoipa::openapi::Response {
    let mut r = ResponseBuilder::new().description(error_description(status)).content(
        PROBLEM_JSON,
        ContentBuilder::new().schema(Some(RefOr::Ref(Ref::from_schema_name("Problem")))).build(),
    );
    if matches!(status, "409" | "429" | "503" | "507") {
        r = r.header("Retry-After", header("seconds to wait before retrying"));
    }
    if status == "401" {
        r = r.header("WWW-Authenticate", header("Bearer realm=\"dermagate\" with the RFC 6750 error"));
    }
    if status == "429" {
        r = r
            .header("RateLimit", header("the remaining quota (draft-ietf-httpapi-ratelimit-headers)"))
            .header("RateLimit-Policy", header("the quota policy"));
    }
    r.build()
}

fn oauth_error(status: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(error_description(status))
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(RefOr::Ref(Ref::from_schema_name("OAuthErrorBody")))).build(),
        )
        .build()
}

fn error_description(status: &str) -> &'static str {
    match status {
        "400" => "Invalid request (the problem names the field and the rule)",
        "401" => "Missing, invalid, expired or revoked credentials",
        "403" => "Your roles or scopes do not allow this",
        "404" => "Not found (also another organisation's resources)",
        "408" => "The request body did not arrive in time",
        "409" => "Conflict with the current state",
        "413" => "Request body too large",
        "415" => "Unsupported media type",
        "422" => "Understood but refused",
        "429" => "Rate limited or sign-in throttled (Retry-After)",
        "503" => "Unavailable: overloaded (sent at once), deadline passed, or cut off from the cluster (Retry-After)",
        "504" => "Outcome unknown: the write may or may not have been applied",
        "507" => "The node's disk is (almost) full: it takes no new data",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_json() -> serde_json::Value {
        serde_json::from_str(json()).expect("valid JSON")
    }

    // traces: R-01, REQ-5.3
    #[test]
    fn operation_ids_are_unique_and_present() {
        let doc = as_json();
        let mut ids = std::collections::HashSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("item") {
                let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
                assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
            }
        }
        assert!(ids.len() > 45, "{}", ids.len());
    }

    fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, val) in m {
                    match (k.as_str(), val.as_str()) {
                        ("$ref", Some(r)) => out.push(r.to_string()),
                        _ => refs(val, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    // traces
    #[test]
    fn every_ref_resolves() {
        let doc = as_json();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.iter().any(|r| r == "#/components/schemas/Report"));
        for r in all {
            let pointer = r.strip_prefix('#').expect("local reference");
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }

    // traces
    #[test]
    fn the_analysis_contract_is_described() {
        let doc = as_json();
        let post = &doc["paths"]["/v1/analyses"]["post"];
        let names: Vec<&str> =
            post["parameters"].as_array().expect("parameters").iter().filter_map(|p| p["name"].as_str()).collect();
        assert!(names.contains(&"Idempotency-Key"), "{names:?}");
        assert!(post["requestBody"]["content"]["multipart/form-data"].is_object());
        assert!(post["responses"]["201"]["content"]["application/fhir+json"].is_object());
        assert!(post["responses"]["201"]["headers"]["Location"].is_object());
        assert!(post["responses"]["503"]["headers"]["Retry-After"].is_object());
        let request = &doc["components"]["schemas"]["AnalysisRequest"];
        let required: Vec<&str> =
            request["required"].as_array().expect("required").iter().filter_map(|v| v.as_str()).collect();
        for field in ["images", "subject", "bodySite"] {
            assert!(required.contains(&field), "{field} is not required: {required:?}");
        }
        assert!(doc["components"]["schemas"]["BodySiteCode"]["enum"].as_array().is_some_and(|e| e.len() > 30));
    }

    // traces: R-01, REQ-5.3
    #[test]
    fn request_bodies_are_named_schemas_not_free_objects() {
        let doc = as_json();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("item") {
                let Some(content) = op["requestBody"]["content"].as_object() else { continue };
                for (media, body) in content {
                    let schema = &body["schema"];
                    let named = schema["$ref"].is_string() || schema["format"] == "binary" || schema["type"] == "array";
                    assert!(named, "{method} {path} {media} has an anonymous body schema: {schema}");
                }
            }
        }
    }

    // traces: R-01
    #[test]
    fn oauth_errors_are_rfc_6749_json() {
        let doc = as_json();
        let bad = &doc["paths"]["/oauth/token"]["post"]["responses"]["400"]["content"];
        assert!(
            bad["application/json"]["schema"]["$ref"].as_str().is_some_and(|r| r.ends_with("OAuthErrorBody")),
            "{bad}"
        );
        assert!(bad["application/problem+json"].is_null());
    }

    // traces: R-01
    #[test]
    fn json_field_names_are_camel_case_outside_oauth() {
        let doc = as_json();
        let rfc_named = [
            "OAuthErrorBody",
            "TokenResponse",
            "TokenForm",
            "TokenReference",
            "Introspection",
            "ServerMetadata",
            "Jwk",
            "LoginRequest",
            "Problem",
            "LegitToken",
        ];
        for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
            if rfc_named.contains(&name.as_str()) {
                continue;
            }
            for field in schema["properties"].as_object().into_iter().flat_map(|p| p.keys()) {
                assert!(!field.contains('_'), "{name}.{field} is not camelCase");
            }
        }
    }
}
