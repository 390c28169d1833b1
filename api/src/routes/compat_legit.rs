//! A Legit.Health-compatible profile under `/compat/legit`: care providers integrated with
//! Legit.Health's Medical Device API switch by changing a base URL. **One implementation, two
//! shapes**: the login is the same sign-in (throttling, rate limits, audit) answered in their
//! token shape, and a diagnosis-support request is read into the same analysis input, run by
//! the same engine, stored as the same report in the same series, with the same
//! `Idempotency-Key`, RBAC and audit; only the envelope of the answer differs. The field table
//! is in the IFU (section "Migrating from Legit.Health").

use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dermagate_domain::records::report::Report;
use dermagate_domain::services::identity::SignIn;
use dermagate_inference::UploadedImage;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::analyses::input::{self, AnalysisInput, InputLimits};
use crate::error::ApiError;
use crate::extract::{Caller, ClientIp};
use crate::state::AppState;

pub const PREFIX: &str = "/compat/legit";

pub fn routes() -> OpenApiRouter<AppState> {
    let upload =
        OpenApiRouter::new().routes(routes!(diagnosis_support)).layer(axum::extract::DefaultBodyLimit::disable());
    OpenApiRouter::new().routes(routes!(login)).merge(upload)
}

/// Their login form.
#[derive(Deserialize, ToSchema)]
pub struct LegitLogin {
    pub username: String,
    #[schema(format = Password)]
    pub password: String,
}

/// Their token answer (field names as their SDKs read them).
#[derive(Serialize, ToSchema)]
pub struct LegitToken {
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: String,
    pub expires_in_minutes: u64,
}

/// Sign in (Legit.Health shape): the same sign-in as `POST /v1/auth/login`.
#[utoipa::path(post, path = "/compat/legit/login", operation_id = "legitLogin", tag = "compat-legit",
    request_body(content = LegitLogin, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "An access token", body = LegitToken)))]
pub async fn login(State(state): State<AppState>, ip: ClientIp, req: Request) -> Result<Response, ApiError> {
    state.rate_limits.check_sign_in(&ip)?;
    let axum::Form(form) = axum::Form::<LegitLogin>::from_request(req, &state).await.map_err(|e| {
        ApiError::validation("body", "form", format!("send username and password as a form: {}", e.body_text()))
    })?;
    let source = ip.source();
    let tokens = state
        .identity
        .sign_in(SignIn { username: &form.username, password: form.password, otp: None, source: &source })
        .await?;
    let body = LegitToken {
        access_token: tokens.access_token,
        token_type: "Bearer".into(),
        expires_in_minutes: tokens.expires_in.div_ceil(60),
    };
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Their diagnosis-support request.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegitRequest {
    /// One to three images.
    #[schema(min_items = 1, max_items = 3)]
    pub payload: Vec<LegitPayload>,
    /// Their camelCase body sites (`armLeft`) or ours (`ARM_LEFT`).
    #[schema(example = "armLeft")]
    pub body_site: Option<String>,
    pub known_condition: Option<LegitKnownCondition>,
    /// The subject (`{"reference": "..."}`): reports of one subject form its time series.
    pub subject: Option<LegitSubject>,
    /// Links this report to the latest one of the same lesion.
    #[schema(format = Uuid)]
    pub previous_diagnostic_report_id: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegitPayload {
    pub content_attachment: LegitAttachment,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegitAttachment {
    /// Base64 of the image bytes.
    #[schema(content_encoding = "base64")]
    pub data: String,
    pub title: Option<String>,
    /// Defaults to `image/png`, as theirs does.
    pub content_type: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct LegitKnownCondition {
    /// Their `{text, coding}` or `{display, code}`, or plain text.
    #[schema(value_type = Object)]
    pub conclusion: Option<serde_json::Value>,
}

#[derive(Deserialize, ToSchema)]
pub struct LegitSubject {
    pub reference: String,
}

/// Their body sites mapped onto ours (the closest of our catalogue's codes).
const BODY_SITES: &[(&str, &str)] = &[
    ("headFront", "FACE"),
    ("headBack", "HEAD"),
    ("headTop", "SCALP"),
    ("headLeft", "HEAD"),
    ("headRight", "HEAD"),
    ("scalp", "SCALP"),
    ("earLeft", "EAR_LEFT"),
    ("earRight", "EAR_RIGHT"),
    ("perioral", "FACE"),
    ("tongue", "MUCOSA_ORAL"),
    ("trunkFront", "CHEST"),
    ("trunkBack", "BACK_UPPER"),
    ("armLeft", "ARM_LEFT"),
    ("armRight", "ARM_RIGHT"),
    ("upperArmLeft", "ARM_LEFT"),
    ("upperArmRight", "ARM_RIGHT"),
    ("lowerArmLeft", "FOREARM_LEFT"),
    ("lowerArmRight", "FOREARM_RIGHT"),
    ("elbowLeft", "ARM_LEFT"),
    ("elbowRight", "ARM_RIGHT"),
    ("handLeft", "HAND_LEFT"),
    ("handRight", "HAND_RIGHT"),
    ("nails", "NAIL_FINGER"),
    ("genital", "GENITAL"),
    ("legLeft", "LEG_LEFT"),
    ("legRight", "LEG_RIGHT"),
    ("upperLegLeft", "THIGH_LEFT"),
    ("upperLegRight", "THIGH_RIGHT"),
    ("lowerLegLeft", "LEG_LEFT"),
    ("lowerLegRight", "LEG_RIGHT"),
    ("kneeLeft", "KNEE_LEFT"),
    ("kneeRight", "KNEE_RIGHT"),
    ("footLeft", "FOOT_LEFT"),
    ("footRight", "FOOT_RIGHT"),
];

fn our_body_site(theirs: &str) -> String {
    BODY_SITES.iter().find(|(t, _)| *t == theirs).map_or_else(|| theirs.to_string(), |(_, ours)| ours.to_string())
}

fn condition_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(m) => {
            ["text", "display", "code"].iter().find_map(|k| m.get(*k)?.as_str().map(String::from))
        }
        _ => None,
    }
}

/// Reads their request into the native analysis input (JSON only, within the body deadline).
fn read_legit<'a>(
    req: Request,
    _state: &'a AppState,
    limits: &'a InputLimits,
    deadline: std::time::Duration,
) -> futures::future::BoxFuture<'a, Result<AnalysisInput, ApiError>> {
    Box::pin(input::within_deadline(deadline, async move {
        let bytes = axum::body::to_bytes(req.into_body(), limits.max_body_bytes).await.map_err(|e| {
            if input::is_length_limit(&e) {
                input::too_large(limits)
            } else {
                ApiError::BadRequest(format!("could not read the request body: {e}"))
            }
        })?;
        let limits = limits.clone();
        input::off_runtime(move || parse(&bytes, &limits)).await
    }))
}

fn parse(bytes: &[u8], limits: &InputLimits) -> Result<AnalysisInput, ApiError> {
    let body: LegitRequest = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => crate::error::schema_error(&e.to_string()),
        _ => ApiError::BadRequest(format!("malformed JSON: {e}")),
    })?;
    input::check_count(body.payload.len(), limits)?;
    let mut images = Vec::with_capacity(body.payload.len());
    for (i, p) in body.payload.into_iter().enumerate() {
        let content_type = p.content_attachment.content_type.unwrap_or_else(|| "image/png".into());
        let bytes = input::decode_base64(i, &p.content_attachment.data, &content_type, limits)?;
        images.push(UploadedImage { bytes, content_type });
    }
    // Without a subject, the report starts a series of its own.
    let subject =
        body.subject.map(|s| s.reference).unwrap_or_else(|| format!("legit-{}", uuid::Uuid::new_v4().simple()));
    let site = body.body_site.map(|s| our_body_site(&s));
    let condition = body.known_condition.and_then(|k| k.conclusion).and_then(|c| condition_text(&c));
    input::metadata(images, Some(subject), site, condition, body.previous_diagnostic_report_id)
}

/// Their DiagnosticReport-like envelope.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegitReport {
    #[schema(example = "DiagnosticReport")]
    pub resource_type: String,
    pub identifier: LegitIdentifier,
    /// Always `preliminary`.
    pub status: String,
    pub issued: String,
    /// Seconds.
    pub analysis_duration: f64,
    pub subject: LegitSubjectRef,
    pub conclusions: Vec<LegitConclusion>,
    pub imaging_study_series: Vec<LegitSeries>,
    pub clinical_indicators: Option<LegitIndicators>,
    pub previous_diagnostic_report_id: Option<String>,
    pub next_diagnostic_report_id: Option<String>,
    /// Present when the model is a demonstration model.
    pub notice: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LegitIdentifier {
    #[serde(rename = "use")]
    pub use_: String,
    pub value: String,
}

#[derive(Serialize, ToSchema)]
pub struct LegitSubjectRef {
    pub reference: String,
}

#[derive(Serialize, ToSchema)]
pub struct LegitConclusion {
    /// Percent.
    pub probability: f64,
    pub coding: LegitCoding,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegitCoding {
    pub code: String,
    pub display: String,
    #[schema(example = "ICD-11")]
    pub system: String,
    /// The code system's URI.
    pub system_alias: String,
}

#[derive(Serialize, ToSchema)]
pub struct LegitSeries {
    pub media: LegitMedia,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegitMedia {
    pub content_type: String,
    pub validity: LegitValidity,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegitValidity {
    pub is_valid: bool,
    pub metrics: LegitMetrics,
}

#[derive(Serialize, ToSchema)]
pub struct LegitMetrics {
    pub quality: LegitQuality,
    pub domain: LegitDomain,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegitQuality {
    pub is_valid: bool,
    pub score: u8,
    pub category: String,
    pub failed_checks: Vec<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegitDomain {
    pub is_dermatological: bool,
    pub is_valid: bool,
    pub score: u8,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegitIndicators {
    pub malignancy: f64,
    pub urgent_referral: f64,
}

fn envelope(r: &Report) -> LegitReport {
    LegitReport {
        resource_type: "DiagnosticReport".into(),
        identifier: LegitIdentifier { use_: "official".into(), value: r.id.to_string() },
        status: "preliminary".into(),
        issued: r.issued.clone(),
        analysis_duration: r.analysis_duration,
        subject: LegitSubjectRef { reference: r.subject.clone() },
        conclusions: r
            .conclusions
            .iter()
            .map(|c| LegitConclusion {
                probability: c.probability,
                coding: LegitCoding {
                    code: c.code.clone(),
                    display: c.display.clone(),
                    system: "ICD-11".into(),
                    system_alias: c.system.clone(),
                },
            })
            .collect(),
        imaging_study_series: r
            .imaging_study_series
            .iter()
            .map(|i| {
                let q = &i.quality;
                let quality_only: Vec<String> = q.failed_checks.iter().filter(|c| *c != "domain").cloned().collect();
                LegitSeries {
                    media: LegitMedia {
                        content_type: i.content_type.clone(),
                        validity: LegitValidity {
                            is_valid: q.is_valid,
                            metrics: LegitMetrics {
                                quality: LegitQuality {
                                    is_valid: quality_only.is_empty(),
                                    score: q.score,
                                    category: q.category.clone(),
                                    failed_checks: quality_only,
                                },
                                domain: LegitDomain {
                                    is_dermatological: q.domain.is_dermatological,
                                    is_valid: q.domain.is_dermatological,
                                    score: q.domain.score,
                                },
                            },
                        },
                    },
                }
            })
            .collect(),
        clinical_indicators: r
            .clinical_indicators
            .as_ref()
            .map(|c| LegitIndicators { malignancy: c.malignancy, urgent_referral: c.urgent_referral }),
        previous_diagnostic_report_id: r.previous_report_id.map(|id| id.to_string()),
        next_diagnostic_report_id: r.next_report_id.map(|id| id.to_string()),
        notice: r.notice.clone(),
    }
}

/// Diagnosis support (Legit.Health shape): the same analysis as `POST /v1/analyses`.
#[utoipa::path(post, path = "/compat/legit/diagnosis-support", operation_id = "legitDiagnosisSupport", tag = "compat-legit",
    params(("Idempotency-Key" = Option<String>, Header, description = "As on POST /v1/analyses")),
    request_body = LegitRequest,
    responses((status = 200, description = "Their DiagnosticReport-like envelope", body = LegitReport,
        headers(("Location" = String, description = "The report in the native API"),
            ("Idempotent-Replayed" = String, description = "true when this answers an earlier request with the same key"))),
        (status = 408, description = "The body did not arrive within its deadline", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Key in flight, subject erased, or the previous report already has a successor", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The Idempotency-Key was used with a different request", body = crate::error::Problem, content_type = "application/problem+json")),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn diagnosis_support(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let (stored, replayed) = super::analyses::submit(&state, caller, &headers, request, read_legit).await?;
    let mut resp = (StatusCode::OK, axum::Json(envelope(&stored.report))).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(location) = HeaderValue::from_str(&state.url(&format!("/v1/analyses/{}", stored.report.id))) {
        h.insert(header::LOCATION, location);
    }
    if replayed {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}
