//! The device's output over REST: `POST /v1/analyses` turns images and metadata into an immutable
//! report in the subject's time series (the rules are the domain's `Analyses` service; the
//! compute is the inference engine's). **When the node or the caller's organisation has no free
//! slot, the answer is 503 with `Retry-After` at once instead of a timeout later**, and a body
//! that does not arrive within its deadline frees its slot (408).

pub mod fhir;
pub mod fhir_schema;
pub mod input;
pub mod report;
pub mod slots;
pub mod subjects;

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dermagate_domain::rbac::Permission;
use dermagate_domain::records::report::Report;
use dermagate_domain::records::StoredReport;
use dermagate_domain::services::analyses::{Claim, IdempotencyKey, ImageCopy};
use dermagate_domain::services::identity::Principal;
use dermagate_domain::services::{now_ms, ServiceError};
use dermagate_inference::{AnalysisError, UploadedImage};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::{ApiError, Problem};
use crate::extract::Caller;
use crate::state::AppState;
use fhir_schema::FhirBundle;
use futures::future::BoxFuture;
use input::{AnalysisForm, AnalysisInput, AnalysisRequest, InputLimits};
use report::ReportContext;

pub fn routes() -> OpenApiRouter<AppState> {
    // The analysis reads (and limits) its own body as a stream.
    let upload = OpenApiRouter::new().routes(routes!(create)).layer(DefaultBodyLimit::disable());
    OpenApiRouter::new()
        .merge(upload)
        .routes(routes!(get))
        .routes(routes!(get_fhir))
        .routes(routes!(get_image))
        .merge(subjects::routes())
}

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The key of the request, if it has one; quotes of the structured-field form are accepted.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_HEADER) else { return Ok(None) };
    let bad = || {
        ApiError::validation("Idempotency-Key", "pattern", "Idempotency-Key must be 1-255 printable ASCII characters")
    };
    let text = value.to_str().map_err(|_| bad())?.trim();
    let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
    if text.is_empty() || text.len() > 255 || !text.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        return Err(bad());
    }
    Ok(Some(text.to_string()))
}

/// Analyse images of one lesion and store the report in the subject's time series.
#[utoipa::path(post, path = "/v1/analyses", operation_id = "createAnalysis", tag = "analyses",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key and request, on any node, answers the original report (1-255 printable ASCII characters)"),
        ("Accept" = Option<String>, Header, description = "application/fhir+json for a FHIR R4 Bundle (q-values honoured); application/json otherwise"),
    ),
    request_body(description = "Images and metadata, as JSON (base64 images) or multipart/form-data (image files)",
        content((AnalysisRequest = "application/json"), (AnalysisForm = "multipart/form-data"))),
    responses(
        (status = 201, description = "The report", content((Report = "application/json"), (FhirBundle = "application/fhir+json")),
            headers(("Location" = String, description = "URL of the report"),
                ("Idempotent-Replayed" = String, description = "true when this is the original answer to an earlier request with the same Idempotency-Key"))),
        (status = 408, description = "The body did not arrive within its deadline", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The Idempotency-Key is still in flight, the subject was erased meanwhile, or the previous report already has a successor", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The Idempotency-Key was used with a different request", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let (stored, replayed) = submit(&state, caller, &headers, request, input::read).await?;
    respond_created(&state, &headers, &stored.report, replayed)
}

/// One analysis request of any shape, end to end: admission (credentials, scope, fair slot),
/// the body read by `read` within its deadline, the `Idempotency-Key`, the analysis and the
/// stored report. Returns the report and whether it is the replay of an earlier request.
pub async fn submit(
    state: &AppState,
    caller: Result<Caller, ApiError>,
    headers: &HeaderMap,
    request: Request,
    read: impl for<'a> FnOnce(
        Request,
        &'a AppState,
        &'a InputLimits,
        std::time::Duration,
    ) -> BoxFuture<'a, Result<AnalysisInput, ApiError>>,
) -> Result<(StoredReport, bool), ApiError> {
    let limit = state.settings.analyses.input.max_body_bytes;
    // Refusals decided before the body is read still read (and drop) it, so the client gets the
    // answer instead of a connection closed under its upload.
    let admitted = caller
        .and_then(|c| c.require(Permission::AnalysesCreate).map(|()| c).map_err(ApiError::from))
        .and_then(|c| Ok((idempotency_key(headers)?, c)));
    let (key_text, caller) = match admitted {
        Ok(ok) => ok,
        Err(e) => {
            discard(request.into_body(), limit).await;
            return Err(e);
        }
    };
    let Some(_slot) = state.slots.try_admit(caller.org_id).filter(|_| state.engine.admits()) else {
        metrics::counter!("dermagate_inference_shed_total").increment(1);
        discard(request.into_body(), limit).await;
        return Err(analysis_error(AnalysisError::Busy));
    };
    let started = Instant::now();
    let limits = state.settings.analyses.clone();
    let input = read(request, state, &limits.input, limits.body_deadline).await?;
    let key = key_text.map(|k| IdempotencyKey::new(&caller, &k, input.fingerprint()));
    if let Some(key) = &key {
        if let Claim::Replay(original) = state.analyses.claim(&caller, key).await? {
            metrics::counter!("dermagate_analyses_total", "outcome" => "replayed").increment(1);
            return Ok((*original, true));
        }
    }
    match analyse_and_store(state, &caller, input, key.as_ref(), started).await {
        Ok(Ok(stored)) => Ok((stored, false)),
        Ok(Err(original)) => Ok((*original, true)),
        Err(e) => {
            if let Some(key) = key {
                // Outcome-unknown writes keep the claim: the report may exist; the lease expires.
                if !matches!(e, ApiError::OutcomeUnknown(_)) {
                    state.analyses.release(&caller, key).await;
                }
            }
            Err(e)
        }
    }
}

/// Reads and drops a request body (up to `limit` bytes).
pub(crate) async fn discard(body: axum::body::Body, limit: usize) {
    use http_body_util::BodyExt;
    let mut body = http_body_util::Limited::new(body, limit);
    let drain = async { while let Some(Ok(_)) = body.frame().await {} };
    // A client that never finishes its body is not waited for.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
}

/// Runs the analysis and stores its report; `Ok(Err(original))` when a retry raced the
/// original request and the original's report is the answer.
async fn analyse_and_store(
    state: &AppState,
    caller: &Principal,
    mut input: AnalysisInput,
    key: Option<&IdempotencyKey>,
    started: Instant,
) -> Result<Result<StoredReport, Box<StoredReport>>, ApiError> {
    let requested_ms = now_ms() - started.elapsed().as_millis() as i64;
    let deadline = started + state.settings.analyses.deadline;
    let previous = state.analyses.check_previous(caller, &input.subject, input.previous_report_id).await?;
    let keep_images = state.analyses.keeps_images(caller)?;
    let content_types: Vec<String> = input.images.iter().map(|i| i.content_type.clone()).collect();
    // The bytes move to the engine: megabytes are not copied on their way to the workers.
    let uploads: Vec<UploadedImage> = std::mem::take(&mut input.images);
    let analysis = state.engine.analyse(uploads, keep_images, deadline).await.map_err(analysis_error)?;
    let id = Uuid::now_v7();
    // A later point of a series is never issued before the point it follows (clocks differ).
    let issued_ms = now_ms().max(previous.map_or(0, |p| p.issued_ms + 1));
    let ctx = ReportContext {
        id,
        issued_ms,
        org_id: caller.org_id,
        requested_by: &caller.id,
        manifest: &state.engine.model().manifest,
        input: &input,
        content_types: &content_types,
        stored: keep_images,
    };
    let report = report::build(&ctx, &analysis);
    let copies: Vec<ImageCopy> = analysis
        .images
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| {
            r.stored_jpeg.map(|bytes| ImageCopy { index: i as u32, content_type: "image/jpeg".into(), bytes })
        })
        .collect();
    let stored = StoredReport {
        report,
        org_id: caller.org_id,
        subject: input.subject.clone(),
        issued_ms,
        requested_ms,
        idempotency: None,
    };
    let outcome = state.analyses.store(caller, stored, key, copies).await?;
    if let Ok(stored) = &outcome {
        let kind = stored.report.outcome.clone();
        metrics::counter!("dermagate_analyses_total", "outcome" => kind.clone()).increment(1);
        tracing::info!(report_id = %id, org_id = %caller.org_id, by = %caller.id, outcome = kind, images = content_types.len(), "analysis stored");
    }
    Ok(outcome)
}

fn analysis_error(e: AnalysisError) -> ApiError {
    match e {
        AnalysisError::Rejected { index, error } => input::rejected_image(index, &error),
        AnalysisError::Busy => {
            metrics::counter!("dermagate_analyses_total", "outcome" => "shed").increment(1);
            ApiError::Overloaded {
                detail: "the device is at capacity; retry after the indicated delay or on another node".into(),
                retry_after_secs: 1,
            }
        }
        AnalysisError::DeadlineExceeded => {
            metrics::counter!("dermagate_analyses_total", "outcome" => "deadline").increment(1);
            ApiError::Unavailable {
                detail: "the analysis could not finish within its deadline".into(),
                retry_after_secs: 2,
            }
        }
        AnalysisError::Stopped => {
            ApiError::Unavailable { detail: "this node is shutting down".into(), retry_after_secs: 1 }
        }
        AnalysisError::Model(e) => ApiError::Internal(e.to_string()),
    }
}

/// Whether the client prefers FHIR (`Accept: application/fhir+json`, or the older
/// `application/json+fhir`), honouring q-values: FHIR is chosen when it is acceptable (q > 0)
/// and weighted at least as high as plain JSON.
pub fn wants_fhir(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else { return false };
    let (mut fhir, mut json) = (0f32, 0f32);
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q =
            parts.filter_map(|p| p.trim().strip_prefix("q=")).find_map(|q| q.trim().parse::<f32>().ok()).unwrap_or(1.0);
        match media.as_str() {
            fhir::FHIR_JSON | fhir::FHIR_JSON_LEGACY => fhir = fhir.max(q),
            "application/json" | "application/*" | "*/*" => json = json.max(q),
            _ => {}
        }
    }
    fhir > 0.0 && fhir >= json
}

/// Reports, images and exports are personal data: never cached anywhere.
pub fn no_store(mut resp: Response) -> Response {
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The report as JSON or as a FHIR Bundle, as the client asked.
pub fn render(headers: &HeaderMap, report: &Report) -> Response {
    if wants_fhir(headers) {
        fhir_response(fhir::bundle(report))
    } else {
        no_store(axum::Json(report).into_response())
    }
}

fn respond_created(
    state: &AppState,
    headers: &HeaderMap,
    report: &Report,
    replayed: bool,
) -> Result<Response, ApiError> {
    let mut resp = render(headers, report);
    *resp.status_mut() = StatusCode::CREATED;
    if let Ok(location) = HeaderValue::from_str(&state.url(&format!("/v1/analyses/{}", report.id))) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    if replayed {
        resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// A report id from a path: a malformed one names no report (404, like an unknown one).
fn report_id(raw: &str) -> Result<Uuid, ApiError> {
    input::canonical_uuid(raw).ok_or_else(|| ServiceError::not_found(dermagate_domain::Entity::Report).into())
}

/// One report (another organisation's reports do not exist).
#[utoipa::path(get, path = "/v1/analyses/{id}", operation_id = "getAnalysis", tag = "analyses",
    params(("id" = String, Path, description = "Report id (UUID)"),
        ("Accept" = Option<String>, Header, description = "application/fhir+json for a FHIR R4 Bundle")),
    responses((status = 200, description = "The report", content((Report = "application/json"), (FhirBundle = "application/fhir+json")))),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let stored = state.analyses.report(&caller, report_id(&id)?).await?;
    Ok(render(&headers, &stored.report))
}

/// The report as a FHIR R4 Bundle, whatever the `Accept` header (for generated clients, which
/// cannot negotiate one operation into two types).
#[utoipa::path(get, path = "/v1/analyses/{id}/fhir", operation_id = "getAnalysisFhir", tag = "analyses",
    params(("id" = String, Path, description = "Report id (UUID)")),
    responses((status = 200, description = "The report as a FHIR Bundle (collection)", content_type = "application/fhir+json", body = FhirBundle)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn get_fhir(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let stored = state.analyses.report(&caller, report_id(&id)?).await?;
    Ok(fhir_response(fhir::bundle(&stored.report)))
}

/// A FHIR answer, with its media type, never cached.
pub fn fhir_response(bundle: serde_json::Value) -> Response {
    let mut resp = axum::Json(bundle).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(fhir::FHIR_JSON));
    no_store(resp)
}

/// A stored copy of an analysed image (organisations that keep images); fetched from a peer,
/// verified, when this node lacks it.
#[utoipa::path(get, path = "/v1/analyses/{id}/images/{index}", operation_id = "getAnalysisImage", tag = "analyses",
    params(("id" = String, Path, description = "Report id (UUID)"), ("index" = u32, Path, description = "Image index in the report")),
    responses((status = 200, description = "The stored image (re-encoded, no metadata)", content_type = "image/jpeg", body = inline(crate::openapi::Binary))),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn get_image(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, index)): Path<(String, u32)>,
) -> Result<Response, ApiError> {
    let (bytes, content_type) = state.analyses.image(&caller, report_id(&id)?, index).await?;
    Ok(no_store(([(header::CONTENT_TYPE, content_type)], bytes).into_response()))
}
