//! The OpenAPI 3.1 document of the API, served at `/openapi.json`: schemas are derived from the
//! Rust types the handlers use (utoipa), operations come from one table beside the router. **A
//! test reads the router's source and fails if any route is missing here.**

use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, Required, ResponseBuilder, Schema};
use utoipa::OpenApi;

use crate::analyses::catalog::{BodySite, ModelView};
use crate::analyses::input::AnalysisRequest;
use crate::analyses::report::Report;
use crate::analyses::subjects::{Erasure, SeriesPage, SubjectExport};
use crate::error::Problem;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "dermagate",
        description = "The clustered, secure REST API of an AI medical device for dermatology: image analysis with \
                       an image-quality gate, ICD-11 diagnosis support, and each subject's reports as a time series. \
                       The instructions for use are at /ifu.",
    ),
    components(schemas(AnalysisRequest, Report, SeriesPage, Erasure, SubjectExport, BodySite, ModelView, Problem))
)]
struct Components;

/// Who may call an operation.
#[derive(Clone, Copy, PartialEq)]
enum Access {
    Public,
    Authenticated,
}

/// What an operation takes and answers.
struct Op {
    method: HttpMethod,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    access: Access,
    /// Request body: (content type, schema name or None for a free-form object).
    body: &'static [(&'static str, Option<&'static str>)],
    /// Success: (status, content type, schema name or None for a free-form object).
    ok: (&'static str, &'static str, Option<&'static str>),
    /// Error statuses besides the ones every authenticated call may answer.
    errors: &'static [&'static str],
    /// Query and header parameters: (name, where, schema type, description).
    params: &'static [Param],
    /// Whether the success answer is also available as a FHIR R4 Bundle.
    fhir: bool,
}

type Param = (&'static str, ParameterIn, Type, &'static str);

const ACCEPT: Param = (
    "Accept",
    ParameterIn::Header,
    Type::String,
    "application/fhir+json for a FHIR R4 Bundle (q-values honoured); application/json otherwise",
);

const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

use Access::{Authenticated as Auth, Public};
use HttpMethod::{Delete as DELETE, Get as GET, Patch as PATCH, Post as POST};

const fn op(method: HttpMethod, path: &'static str, tag: &'static str, summary: &'static str, access: Access) -> Op {
    Op { method, path, tag, summary, access, body: &[], ok: ("200", JSON, None), errors: &[], params: &[], fhir: false }
}

fn operations() -> Vec<Op> {
    let analysis_body: &'static [(&'static str, Option<&'static str>)] =
        &[(JSON, Some("AnalysisRequest")), ("multipart/form-data", None)];
    let json_body: &'static [(&'static str, Option<&'static str>)] = &[(JSON, None)];
    vec![
        op(GET, "/livez", "health", "Liveness: the process serves HTTP", Public),
        Op {
            errors: &["503"],
            ..op(GET, "/readyz", "health", "Readiness: member of a cluster with a live leader", Public)
        },
        op(GET, "/.well-known/jwks.json", "identity", "Public keys that verify access tokens (JWKS)", Public),
        op(GET, "/.well-known/oauth-authorization-server", "identity", "OAuth 2.0 server metadata (RFC 8414)", Public),
        Op {
            body: json_body,
            errors: &["400", "401", "429"],
            ..op(POST, "/v1/auth/login", "identity", "Sign in with username and password", Public)
        },
        Op {
            body: json_body,
            ok: ("201", JSON, None),
            errors: &["400", "404", "409"],
            ..op(POST, "/v1/auth/register", "identity", "Register with an invitation", Public)
        },
        Op {
            body: &[(FORM, None)],
            errors: &["400", "401", "429"],
            ..op(POST, "/oauth/token", "identity", "Token endpoint: client_credentials or refresh_token grant", Public)
        },
        Op { body: &[(FORM, None)], ..op(POST, "/oauth/revoke", "identity", "Revoke a token (RFC 7009)", Public) },
        Op {
            body: &[(FORM, None)],
            ..op(POST, "/oauth/introspect", "identity", "Introspect a token (RFC 7662)", Public)
        },
        op(GET, "/v1/me", "identity", "The authenticated principal", Auth),
        op(GET, "/v1/cluster", "cluster", "Cluster members, leader and replication state", Auth),
        Op {
            body: json_body,
            ok: ("202", JSON, None),
            errors: &["409", "422"],
            ..op(POST, "/v1/cluster/nodes", "cluster", "Add a node (learner, then voter)", Auth)
        },
        op(DELETE, "/v1/cluster/nodes/{id}", "cluster", "Remove a node from the cluster", Auth),
        Op {
            ok: ("200", "application/octet-stream", None),
            ..op(GET, "/v1/cluster/backup", "cluster", "A consistent, sealed backup of the replicated state", Auth)
        },
        Op {
            body: &[("application/octet-stream", None)],
            ..op(POST, "/v1/cluster/restore", "cluster", "Restore a backup into an empty cluster", Auth)
        },
        Op {
            body: json_body,
            ok: ("201", JSON, None),
            errors: &["400"],
            ..op(
                POST,
                "/v1/organizations",
                "organizations",
                "Create an organisation (with its licence attestation)",
                Auth,
            )
        },
        op(GET, "/v1/organizations", "organizations", "List organisations", Auth),
        op(GET, "/v1/organizations/{org}", "organizations", "One organisation", Auth),
        Op {
            body: json_body,
            errors: &["400"],
            ..op(
                PATCH,
                "/v1/organizations/{org}",
                "organizations",
                "Suspend or reactivate; opt in to image storage",
                Auth,
            )
        },
        Op {
            body: json_body,
            ok: ("201", JSON, None),
            errors: &["400", "409"],
            ..op(POST, "/v1/organizations/{org}/users", "users", "Create a user", Auth)
        },
        op(GET, "/v1/organizations/{org}/users", "users", "List users", Auth),
        op(GET, "/v1/organizations/{org}/users/{id}", "users", "One user", Auth),
        Op {
            body: json_body,
            errors: &["400"],
            ..op(PATCH, "/v1/organizations/{org}/users/{id}", "users", "Change roles, status or password", Auth)
        },
        Op {
            ok: ("204", JSON, None),
            ..op(DELETE, "/v1/organizations/{org}/users/{id}", "users", "Delete a user", Auth)
        },
        Op {
            ok: ("204", JSON, None),
            ..op(POST, "/v1/users/{id}/sign-out-everywhere", "users", "Revoke every token of a user", Auth)
        },
        Op {
            body: json_body,
            ok: ("201", JSON, None),
            errors: &["400"],
            ..op(POST, "/v1/organizations/{org}/clients", "clients", "Create a client key (secret shown once)", Auth)
        },
        op(GET, "/v1/organizations/{org}/clients", "clients", "List client keys", Auth),
        op(GET, "/v1/organizations/{org}/clients/{id}", "clients", "One client key", Auth),
        Op {
            ok: ("204", JSON, None),
            ..op(DELETE, "/v1/organizations/{org}/clients/{id}", "clients", "Revoke a client key", Auth)
        },
        op(
            POST,
            "/v1/organizations/{org}/clients/{id}/rotate-secret",
            "clients",
            "Rotate a client secret (with overlap)",
            Auth,
        ),
        Op {
            body: json_body,
            ok: ("201", JSON, None),
            ..op(POST, "/v1/organizations/{org}/invitations", "users", "Invite a user (single use, expiring)", Auth)
        },
        op(POST, "/v1/signing-keys/rotate", "identity", "Rotate the token-signing key", Auth),
        Op {
            body: analysis_body,
            ok: ("201", JSON, Some("Report")),
            errors: &["400", "409", "413", "415", "422", "503", "504"],
            params: &[
                (
                    "Idempotency-Key",
                    ParameterIn::Header,
                    Type::String,
                    "1-255 printable ASCII characters: a retry with the same key and request returns the original report",
                ),
                ACCEPT,
            ],
            fhir: true,
            ..op(
                POST,
                "/v1/analyses",
                "analyses",
                "Analyse images of a lesion: quality gate, then ICD-11 class probabilities",
                Auth,
            )
        },
        Op {
            ok: ("200", JSON, Some("Report")),
            params: &[ACCEPT],
            fhir: true,
            ..op(
                GET,
                "/v1/analyses/{id}",
                "analyses",
                "One report (JSON, or a FHIR R4 Bundle with Accept: application/fhir+json)",
                Auth,
            )
        },
        Op {
            ok: ("200", "image/jpeg", None),
            ..op(
                GET,
                "/v1/analyses/{id}/images/{index}",
                "analyses",
                "A stored image (organisations that opted in)",
                Auth,
            )
        },
        Op {
            ok: ("200", JSON, Some("SeriesPage")),
            errors: &["400"],
            params: &[
                ("limit", ParameterIn::Query, Type::Integer, "reports per page, 1-200 (default 50)"),
                ("cursor", ParameterIn::Query, Type::String, "the nextCursor of the previous page"),
                ("offset", ParameterIn::Query, Type::Integer, "alternatively, how many reports to skip"),
                ACCEPT,
            ],
            fhir: true,
            ..op(
                GET,
                "/v1/subjects/{subject}/analyses",
                "subjects",
                "The subject's reports as a time series (paginated)",
                Auth,
            )
        },
        Op {
            ok: ("200", JSON, Some("Erasure")),
            ..op(
                DELETE,
                "/v1/subjects/{subject}",
                "subjects",
                "Erase a subject on every node (GDPR art. 17, audited)",
                Auth,
            )
        },
        Op {
            ok: ("200", JSON, Some("SubjectExport")),
            ..op(
                GET,
                "/v1/subjects/{subject}/export",
                "subjects",
                "Everything kept about a subject (GDPR art. 15, audited)",
                Auth,
            )
        },
        op(GET, "/v1/models", "catalogue", "Models with version, intended use and labels", Auth),
        op(GET, "/v1/body-sites", "catalogue", "Accepted body sites", Auth),
        op(GET, "/v2/health/live", "open inference protocol", "OIP v2 liveness", Public),
        Op { errors: &["503"], ..op(GET, "/v2/health/ready", "open inference protocol", "OIP v2 readiness", Public) },
        op(GET, "/v2/models/{name}", "open inference protocol", "OIP v2 model metadata", Auth),
        op(GET, "/v2/models/{name}/ready", "open inference protocol", "OIP v2 model readiness", Auth),
        Op { ok: ("200", JSON, None), ..op(GET, "/openapi.json", "documentation", "This document", Public) },
        Op { ok: ("200", "text/html", None), ..op(GET, "/docs", "documentation", "Interactive API reference", Public) },
        Op {
            ok: ("200", "text/html", None),
            ..op(GET, "/docs/", "documentation", "Interactive API reference", Public)
        },
        Op {
            ok: ("200", "text/plain", None),
            errors: &["404"],
            ..op(GET, "/docs/{file}", "documentation", "Assets of the API reference", Public)
        },
        Op { ok: ("200", "text/html", None), ..op(GET, "/ifu", "documentation", "Instructions for use", Public) },
        Op {
            ok: ("200", "text/markdown", None),
            ..op(GET, "/ifu.md", "documentation", "Instructions for use (Markdown)", Public)
        },
    ]
}

fn schema(name: Option<&str>) -> RefOr<Schema> {
    match name {
        Some(n) => RefOr::Ref(Ref::from_schema_name(n)),
        None => RefOr::T(Schema::Object(ObjectBuilder::new().schema_type(Type::Object).build())),
    }
}

fn oauth_error(status: &str) -> utoipa::openapi::Response {
    let body = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("error", ObjectBuilder::new().schema_type(Type::String))
        .required("error")
        .property("error_description", ObjectBuilder::new().schema_type(Type::String))
        .build();
    ResponseBuilder::new()
        .description(error_description(status))
        .content(JSON, ContentBuilder::new().schema(Some(RefOr::T(Schema::Object(body)))).build())
        .build()
}

fn header(description: &str) -> utoipa::openapi::header::Header {
    utoipa::openapi::header::HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String).build())
        .description(Some(description))
        .build()
}

fn problem(status: &str) -> utoipa::openapi::Response {
    let mut r = ResponseBuilder::new()
        .description(error_description(status))
        .content(crate::error::PROBLEM_JSON, ContentBuilder::new().schema(Some(schema(Some("Problem")))).build());
    if matches!(status, "409" | "429" | "503") {
        r = r.header("Retry-After", header("seconds to wait before retrying"));
    }
    if status == "429" {
        r = r
            .header("RateLimit", header("the remaining quota (draft-ietf-httpapi-ratelimit-headers)"))
            .header("RateLimit-Policy", header("the quota policy"));
    }
    r.build()
}

fn error_description(status: &str) -> &'static str {
    match status {
        "400" => "Invalid request (problem names the field and the rule)",
        "401" => "Missing, invalid, expired or revoked credentials",
        "403" => "Your roles or scopes do not allow this",
        "404" => "Not found (also another organisation's resources)",
        "409" => "Conflict (e.g. an Idempotency-Key still in flight)",
        "413" => "Request body too large",
        "415" => "Unsupported media type",
        "422" => "Unprocessable (e.g. an Idempotency-Key reused with another body)",
        "429" => "Rate limited (Retry-After, RateLimit, RateLimit-Policy)",
        "503" => "Unavailable: overloaded (sent at once), deadline passed or cut off from the cluster (Retry-After)",
        "504" => "Outcome unknown: retry with the same Idempotency-Key",
        _ => "Error",
    }
}

fn operation(o: &Op) -> utoipa::openapi::path::Operation {
    let mut b = OperationBuilder::new().tag(o.tag).summary(Some(o.summary)).operation_id(Some(operation_id(o)));
    for name in o.path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')) {
        let kind = if matches!(name, "index") { Type::Integer } else { Type::String };
        b = b.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(ObjectBuilder::new().schema_type(kind).build())),
        );
    }
    for (name, place, kind, description) in o.params {
        b = b.parameter(
            ParameterBuilder::new()
                .name(*name)
                .parameter_in(place.clone())
                .required(Required::False)
                .description(Some(*description))
                .schema(Some(ObjectBuilder::new().schema_type(kind.clone()).build())),
        );
    }
    if !o.body.is_empty() {
        let mut body = RequestBodyBuilder::new().required(Some(Required::True));
        for (content_type, name) in o.body {
            body = body.content(*content_type, ContentBuilder::new().schema(Some(schema(*name))).build());
        }
        b = b.request_body(Some(body.build()));
    }
    let (status, content_type, name) = o.ok;
    let ok = if status == "204" {
        ResponseBuilder::new().description("Done").build()
    } else {
        let mut ok = ResponseBuilder::new()
            .description("Success")
            .content(content_type, ContentBuilder::new().schema(Some(schema(name))).build());
        if o.fhir {
            ok = ok.content(crate::analyses::fhir::FHIR_JSON, ContentBuilder::new().schema(Some(schema(None))).build());
        }
        if status == "201" {
            ok = ok.header("Location", header("where the created resource is"));
        }
        if o.params.iter().any(|(n, ..)| *n == "Idempotency-Key") {
            ok = ok.header(
                "Idempotent-Replayed",
                header("true when this is the original answer to an earlier request with the same Idempotency-Key"),
            );
        }
        ok.build()
    };
    b = b.response(status, ok);
    let mut errors: Vec<&str> = o.errors.to_vec();
    if o.access == Access::Authenticated {
        errors.extend(["401", "403", "404", "429", "503"]);
        b = b
            .security(SecurityRequirement::new("bearerAuth", Vec::<String>::new()))
            .security(SecurityRequirement::new("apiKey", Vec::<String>::new()));
    }
    errors.sort_unstable();
    errors.dedup();
    for status in errors {
        // The OAuth endpoints answer errors as RFC 6749 §5.2 demands, not as problem details.
        let answer = if o.path.starts_with("/oauth/") { oauth_error(status) } else { problem(status) };
        b = b.response(status, answer);
    }
    b.build()
}

fn operation_id(o: &Op) -> String {
    let method = serde_json::to_value(&o.method).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    let path: String = o.path.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect::<String>();
    format!("{method}{}", path.trim_end_matches('_'))
}

/// The whole document.
pub fn document() -> Document {
    let mut doc = Components::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    for o in operations() {
        doc.paths.add_path_operation(o.path, vec![o.method.clone()], operation(&o));
    }
    if let Some(components) = doc.components.as_mut() {
        let bearer = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some("An access token from /oauth/token or /v1/auth/login (EdDSA, RFC 9068)"))
            .build();
        components.add_security_scheme("bearerAuth", SecurityScheme::Http(bearer));
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "A client key (dgk_...) used directly",
            ))),
        );
    }
    doc
}

/// `GET /openapi.json`.
pub async fn serve() -> impl axum::response::IntoResponse {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = DOC.get_or_init(|| document().to_json().unwrap_or_else(|_| "{}".into()));
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body.as_str())
}

/// Every (method, path) the router registers, read from the router's own source.
#[cfg(test)]
fn routed() -> Vec<(String, String)> {
    let source = include_str!("lib.rs");
    let mut out = Vec::new();
    for chunk in source.split(".route(").skip(1) {
        let chunk = chunk.split(".fallback(").next().unwrap_or(chunk);
        let Some(path) = chunk.split('"').nth(1) else { continue };
        for method in ["get", "post", "patch", "put", "delete"] {
            let called = chunk.match_indices(&format!("{method}(")).any(|(i, _)| {
                i == 0 || !chunk.as_bytes()[i - 1].is_ascii_alphanumeric() && chunk.as_bytes()[i - 1] != b'_'
            });
            if called {
                out.push((method.to_string(), path.to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_json() -> serde_json::Value {
        serde_json::from_str(&document().to_json().expect("serialises")).expect("valid JSON")
    }

    #[test]
    fn every_route_of_the_router_is_documented() {
        let doc = as_json();
        assert!(doc["openapi"].as_str().expect("version").starts_with("3.1"));
        let routes = routed();
        assert!(routes.len() > 40, "the router source was not parsed: {routes:?}");
        for (method, path) in routes {
            assert!(
                doc["paths"][&path][&method].is_object(),
                "{} {path} is missing from the OpenAPI document",
                method.to_uppercase()
            );
        }
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
        let list = &doc["paths"]["/v1/subjects/{subject}/analyses"]["get"]["parameters"];
        assert!(list.as_array().expect("parameters").iter().any(|p| p["name"] == "cursor"));
    }

    #[test]
    fn oauth_errors_are_rfc_6749_json() {
        let doc = as_json();
        let bad = &doc["paths"]["/oauth/token"]["post"]["responses"]["400"]["content"];
        assert!(bad["application/json"]["schema"]["properties"]["error"].is_object(), "{bad}");
        assert!(bad["application/problem+json"].is_null());
    }

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
}
