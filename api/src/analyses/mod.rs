//! The device's output over REST: `POST /v1/analyses` turns images and metadata into an immutable
//! report in the subject's time series, replicated through Raft so any node serves it. Inference
//! runs on the bounded worker pool; **when it is full the node answers 503 with `Retry-After` at
//! once instead of timing out later**.

pub mod catalog;
pub mod fhir;
pub mod idempotency;
pub mod input;
pub mod report;
pub mod subjects;

use std::time::{Duration, Instant};

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dermagate_inference::{AnalysisError, UploadedImage};
use dermagate_storage::model::{Command, StoredImage, StoredReport};
use uuid::Uuid;

use crate::auth::rbac::Permission;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::{now_ms, AppState};
use idempotency::{Claim, IdempotencyKey};
use input::AnalysisInput;
use report::{Report, ReportContext};

/// Settings of the analysis endpoints, from the configuration.
#[derive(Debug, Clone)]
pub struct AnalysisSettings {
    pub limits: input::InputLimits,
    /// Longest an analysis may wait for and use a worker.
    pub deadline: Duration,
    pub idempotency_ttl: Duration,
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        AnalysisSettings {
            limits: input::InputLimits { max_images: 3, max_image_bytes: 8 << 20, max_body_bytes: 36 << 20 },
            deadline: Duration::from_secs(10),
            idempotency_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// `POST /v1/analyses`.
pub async fn create(
    State(state): State<AppState>,
    principal: Result<Principal, ApiError>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let limit = state.settings.analyses.limits.max_body_bytes;
    // Refusals decided before the body is read still read (and drop) it, so the client gets the
    // answer instead of a connection closed under its upload.
    let admitted = principal.and_then(|p| p.require(Permission::AnalysesCreate).map(|()| p)).and_then(|p| {
        let key = idempotency::from_headers(&headers, &p)?;
        Ok((p, key))
    });
    let (principal, scoped_key) = match admitted {
        Ok(ok) => ok,
        Err(e) => {
            discard(request.into_body(), limit).await;
            return Err(e);
        }
    };
    // Bounded admission: at most `analysis_slots` requests hold bodies in memory at once, and a
    // full inference queue is refused before a body is parsed and decoded.
    let slot = state.analysis_slots.clone().try_acquire_owned().ok();
    if slot.is_none() {
        metrics::counter!("dermagate_inference_shed_total").increment(1);
    }
    if slot.is_none() || !state.engine.admits() {
        discard(request.into_body(), limit).await;
        return Err(analysis_error(AnalysisError::Busy));
    }
    let started = Instant::now();
    let settings = state.settings.analyses.clone();
    let input = input::read(request, &state, &settings.limits).await?;
    let key = scoped_key.map(|scoped| IdempotencyKey { scoped, fingerprint: input.fingerprint() });
    if let Some(key) = &key {
        // The holder has finished or failed by then: the analysis deadline, then one replicated
        // write (its own timeout is 5 s), with a second of margin.
        let lease = (settings.deadline + std::time::Duration::from_secs(6)).as_millis() as i64;
        if let Claim::Replay(original) =
            idempotency::claim(&state, key, settings.idempotency_ttl.as_millis() as i64, lease).await?
        {
            metrics::counter!("dermagate_analyses_total", "outcome" => "replayed").increment(1);
            return respond_created(&headers, original.body, true);
        }
    }
    let result = analyse_and_store(&state, &principal, input, key.clone(), started, settings.deadline).await;
    match result {
        Ok(body) => respond_created(&headers, body, false),
        Err(Stored::Replayed(original)) => respond_created(&headers, original.body, true),
        Err(Stored::Failed(e)) => {
            if let Some(key) = key {
                // Outcome-unknown writes keep the claim: the report may exist; the lease expires.
                if !matches!(e, ApiError::OutcomeUnknown(_)) {
                    idempotency::release(&state, key).await;
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
    while let Some(Ok(_)) = body.frame().await {}
}

enum Stored {
    Replayed(Box<StoredReport>),
    Failed(ApiError),
}

impl From<ApiError> for Stored {
    fn from(e: ApiError) -> Self {
        Stored::Failed(e)
    }
}

async fn analyse_and_store(
    state: &AppState,
    principal: &Principal,
    input: AnalysisInput,
    key: Option<IdempotencyKey>,
    started: Instant,
    budget: std::time::Duration,
) -> Result<serde_json::Value, Stored> {
    let requested_ms = now_ms() - started.elapsed().as_millis() as i64;
    let deadline = started + budget;
    let previous = check_previous_report(state, principal, &input).await?;
    let store_images =
        state.store.organization(&principal.org_id).map_err(ApiError::from)?.is_some_and(|o| o.store_images);
    let mut input = input;
    let content_types: Vec<String> = input.images.iter().map(|i| i.content_type.clone()).collect();
    // The bytes move to the engine: megabytes are not copied on their way to the workers.
    let uploads: Vec<UploadedImage> = std::mem::take(&mut input.images);
    let analysis = state.engine.analyse(uploads, store_images, deadline).await.map_err(analysis_error)?;
    let id = Uuid::now_v7();
    // A later point of a series is never issued before the point it follows (clocks differ
    // between nodes).
    let issued_ms = now_ms().max(previous.map_or(0, |p| p.issued_ms + 1));
    let manifest = &state.engine.model().manifest;
    let ctx = ReportContext {
        id,
        issued_ms,
        org_id: principal.org_id,
        requested_by: &principal.id,
        manifest,
        input: &input,
        content_types: &content_types,
        stored: store_images,
    };
    let report = report::build(&ctx, &analysis);
    let body = serde_json::to_value(&report).map_err(ApiError::internal)?;
    // The image bytes go to a quorum of blob stores first; the report entry names them only.
    let images = store_images_on_quorum(state, id, analysis).await?;
    let stored = StoredReport {
        id,
        org_id: principal.org_id,
        subject: input.subject.clone(),
        issued_ms,
        requested_ms,
        previous_report_id: input.previous_report_id,
        idempotency_key: key.as_ref().map(|k| k.scoped.clone()),
        idempotency_fingerprint: key.as_ref().map(|k| k.fingerprint.clone()),
        body: body.clone(),
    };
    match state.commit(Command::StoreReport { report: stored, images }).await {
        Ok(()) => {}
        Err(ApiError::Conflict(reason)) if reason.starts_with("idempotency key done") => {
            let original = reason.rsplit(' ').next().and_then(|id| id.parse::<Uuid>().ok());
            if let Some(found) = original.and_then(|id| state.store.report(&id).ok().flatten()) {
                return Err(Stored::Replayed(Box::new(found)));
            }
            return Err(ApiError::Conflict(reason).into());
        }
        Err(ApiError::Unprocessable(reason)) if reason.contains("previousReportId") => {
            return Err(previous_mismatch().into());
        }
        Err(e) => return Err(e.into()),
    }
    let outcome = report.outcome.clone();
    metrics::counter!("dermagate_analyses_total", "outcome" => outcome.clone()).increment(1);
    tracing::info!(report_id = %id, org_id = %principal.org_id, by = %principal.id, outcome, images = content_types.len(), "analysis stored");
    Ok(body)
}

fn previous_mismatch() -> ApiError {
    ApiError::validation(
        "previousReportId",
        "same_subject",
        "previousReportId must be a report of the same subject in your organisation",
    )
}

/// The link to an earlier point must stay inside the subject's own series (and organisation).
async fn check_previous_report(
    state: &AppState,
    principal: &Principal,
    input: &AnalysisInput,
) -> Result<Option<StoredReport>, ApiError> {
    let Some(previous) = input.previous_report_id else { return Ok(None) };
    let found = state.read_fresh(|| Ok(state.store.report(&previous)?)).await?;
    match found {
        Some(p) if p.org_id == principal.org_id && p.subject == input.subject => Ok(Some(p)),
        _ => Err(previous_mismatch()),
    }
}

/// Stores the re-encoded copies (organisations that keep images) durably on a quorum of nodes,
/// in parallel, and returns what the report entry records of them: digest, size, type.
async fn store_images_on_quorum(
    state: &AppState,
    report_id: Uuid,
    analysis: dermagate_inference::Analysis,
) -> Result<Vec<StoredImage>, ApiError> {
    let copies: Vec<(u32, Vec<u8>)> = analysis
        .images
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.stored_jpeg.map(|jpeg| (i as u32, jpeg)))
        .collect();
    let stores = copies.into_iter().map(|(index, jpeg)| async move {
        let (size, digest) = (jpeg.len() as u64, dermagate_storage::blobs::digest_of(&jpeg));
        state.node.store_blob_on_quorum(&digest, jpeg).await.map_err(blob_error)?;
        Ok::<_, ApiError>(StoredImage { report_id, index, content_type: "image/jpeg".into(), digest, size })
    });
    futures::future::try_join_all(stores).await
}

pub(crate) fn blob_error(e: dermagate_raft::blobs::BlobError) -> ApiError {
    use dermagate_raft::blobs::BlobError;
    match e {
        BlobError::NoQuorum { .. } => {
            ApiError::Unavailable { detail: format!("the images could not be stored safely: {e}"), retry_after_secs: 2 }
        }
        BlobError::Unavailable(_) => {
            ApiError::Unavailable { detail: "no node can provide this image right now".into(), retry_after_secs: 2 }
        }
        BlobError::Store(e) if e.to_string().contains("No space left") => {
            ApiError::InsufficientStorage("this node has no room for the images".into())
        }
        BlobError::Store(e) => ApiError::internal(e),
    }
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

/// Whether the client prefers FHIR (`Accept: application/fhir+json`), honouring q-values: FHIR
/// is chosen when it is acceptable (q > 0) and weighted at least as high as plain JSON.
pub fn wants_fhir(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else { return false };
    let (mut fhir, mut json) = (0f32, 0f32);
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q =
            parts.filter_map(|p| p.trim().strip_prefix("q=")).find_map(|q| q.trim().parse::<f32>().ok()).unwrap_or(1.0);
        match media.as_str() {
            fhir::FHIR_JSON => fhir = fhir.max(q),
            "application/json" | "application/*" | "*/*" => json = json.max(q),
            _ => {}
        }
    }
    fhir > 0.0 && fhir >= json
}

/// The report as JSON or as a FHIR Bundle, as the client asked.
pub fn render(headers: &HeaderMap, body: serde_json::Value) -> Result<Response, ApiError> {
    if wants_fhir(headers) {
        let report: Report = serde_json::from_value(body).map_err(ApiError::internal)?;
        let mut resp = axum::Json(fhir::bundle(&report)).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(fhir::FHIR_JSON));
        Ok(resp)
    } else {
        Ok(axum::Json(body).into_response())
    }
}

fn respond_created(headers: &HeaderMap, body: serde_json::Value, replayed: bool) -> Result<Response, ApiError> {
    let id = body["id"].as_str().unwrap_or_default().to_string();
    let mut resp = render(headers, body)?;
    *resp.status_mut() = StatusCode::CREATED;
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/analyses/{id}")) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    if replayed {
        resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// A report of the caller's organisation, or 404 (another organisation's reports do not exist).
pub async fn find_report(state: &AppState, principal: &Principal, id: &str) -> Result<StoredReport, ApiError> {
    let not_found = || ApiError::NotFound("report".into());
    let id = input::canonical_uuid(id).ok_or_else(not_found)?;
    let report = state.read_fresh(|| Ok(state.store.report(&id)?)).await?.ok_or_else(not_found)?;
    if report.org_id != principal.org_id {
        return Err(not_found());
    }
    Ok(report)
}

/// `GET /v1/analyses/{id}`.
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    principal.require(Permission::ReportsRead)?;
    let report = find_report(&state, &principal, &id).await?;
    render(&headers, report.body)
}

/// `GET /v1/analyses/{id}/images/{index}`: a stored copy (organisations that opted in).
pub async fn get_image(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, index)): Path<(String, u32)>,
) -> Result<Response, ApiError> {
    principal.require(Permission::ReportsRead)?;
    let report = find_report(&state, &principal, &id).await?;
    let image =
        state.store.report_image(&report.id, index)?.ok_or_else(|| ApiError::NotFound("stored image".into()))?;
    // A node that lacks the blob (it was down when the report was stored) fetches it from a
    // peer, verified against its digest, before serving it.
    let bytes = state.node.blob(&image.digest).await.map_err(blob_error)?;
    Ok(([(header::CONTENT_TYPE, image.content_type)], bytes).into_response())
}
