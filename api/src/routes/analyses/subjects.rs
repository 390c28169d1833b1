//! A subject's data: the time series of its reports (ordered by `issued`, paginated, never
//! overwritten), erasure (GDPR art. 17, audited, cluster-wide) and export (art. 15, audited).
//! Subjects are scoped by organisation: **another organisation's subject answers 404**.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use dermagate_domain::records::report::Report;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::fhir::{self, PageLinks};
use super::fhir_schema::FhirBundle;
use super::input::subject_id;
use super::{no_store, wants_fhir};
use crate::error::ApiError;
use crate::extract::Caller;
use crate::state::{rfc3339, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(list_fhir)).routes(routes!(erase)).routes(routes!(export))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Page {
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
    /// Opaque position returned as `nextCursor`.
    pub cursor: Option<String>,
    /// Alternatively, how many reports to skip from the oldest.
    #[param(minimum = 0)]
    pub offset: Option<usize>,
}

/// One page of a subject's time series.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeriesPage {
    pub subject: String,
    /// Reports ordered by `issued`, oldest first.
    pub items: Vec<Report>,
    /// Reports of the subject in all pages.
    pub total: usize,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;

fn checked_subject(raw: &str) -> Result<String, ApiError> {
    // A malformed identifier cannot name any subject: not found, like an unknown one.
    subject_id(Some(raw)).map_err(|_| ApiError::not_found("subject"))
}

fn page_url(state: &AppState, subject: &str, limit: usize, cursor: Option<&str>) -> String {
    match cursor {
        Some(c) => state.url(&format!("/v1/subjects/{subject}/analyses?limit={limit}&cursor={c}")),
        None => state.url(&format!("/v1/subjects/{subject}/analyses?limit={limit}")),
    }
}

/// The subject's reports in time-series order, a page at a time.
#[utoipa::path(get, path = "/v1/subjects/{subject}/analyses", operation_id = "listSubjectAnalyses", tag = "subjects",
    params(("subject" = String, Path, description = "The pseudonymous subject identifier", pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"),
        ("Accept" = Option<String>, Header, description = "application/fhir+json for a FHIR searchset Bundle"),
        Page),
    responses((status = 200, description = "A page of the series",
        content((SeriesPage = "application/json"), (FhirBundle = "application/fhir+json")),
        headers(("Link" = String, description = "rel=\"next\" when there is a next page")))),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(subject): Path<String>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    series_page(&state, &caller, &subject, &page, wants_fhir(&headers)).await
}

/// The subject's reports as a FHIR searchset Bundle, whatever the `Accept` header (for
/// generated clients).
#[utoipa::path(get, path = "/v1/subjects/{subject}/analyses/fhir", operation_id = "listSubjectAnalysesFhir", tag = "subjects",
    params(("subject" = String, Path, description = "The pseudonymous subject identifier", pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"),
        Page),
    responses((status = 200, description = "A page of the series as a searchset", content_type = "application/fhir+json", body = FhirBundle,
        headers(("Link" = String, description = "rel=\"next\" when there is a next page")))),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn list_fhir(
    State(state): State<AppState>,
    caller: Caller,
    Path(subject): Path<String>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    series_page(&state, &caller, &subject, &page, true).await
}

pub(crate) async fn series_page(
    state: &AppState,
    caller: &Caller,
    subject: &str,
    page: &Page,
    as_fhir: bool,
) -> Result<Response, ApiError> {
    let subject = checked_subject(subject)?;
    let limit = page.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::validation("limit", "range", format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let start = match &page.cursor {
        None => page.offset.unwrap_or(0),
        Some(c) => c
            .parse::<usize>()
            .map_err(|_| ApiError::validation("cursor", "opaque", "cursor must be a value returned as nextCursor"))?,
    };
    let all = state.analyses.series(caller, &subject).await?;
    let total = all.len();
    let items: Vec<Report> = all.into_iter().skip(start).take(limit).map(|r| r.report).collect();
    let next = (start + items.len() < total).then(|| (start + items.len()).to_string());
    let mut resp = if as_fhir {
        let current = page.cursor.clone().or_else(|| (start > 0).then(|| start.to_string()));
        let links = PageLinks {
            self_url: page_url(state, &subject, limit, current.as_deref()),
            next_url: next.as_deref().map(|c| page_url(state, &subject, limit, Some(c))),
        };
        super::fhir_response(fhir::searchset(&items, total, &links))
    } else {
        no_store(
            axum::Json(SeriesPage { subject: subject.clone(), items, total, next_cursor: next.clone() })
                .into_response(),
        )
    };
    if let Some(cursor) = next {
        if let Ok(v) =
            HeaderValue::from_str(&format!("<{}>; rel=\"next\"", page_url(state, &subject, limit, Some(&cursor))))
        {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(resp)
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Erasure {
    pub subject: String,
    pub erased_reports: u64,
    /// The audit record of the erasure (`GET /v1/audit`), as `<sequence number>`.
    pub audit_id: String,
}

/// Erase every report and stored image of the subject, on every node (cannot be undone).
#[utoipa::path(delete, path = "/v1/subjects/{subject}", operation_id = "eraseSubject", tag = "subjects",
    params(("subject" = String, Path, description = "The pseudonymous subject identifier", pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")),
    responses((status = 200, description = "Erased on every node", body = Erasure)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn erase(
    State(state): State<AppState>,
    caller: Caller,
    Path(subject): Path<String>,
) -> Result<axum::Json<Erasure>, ApiError> {
    let subject = checked_subject(&subject)?;
    let erased = state.analyses.erase(&caller, &subject).await?;
    if erased.reports == 0 {
        return Err(ApiError::not_found("subject"));
    }
    tracing::info!(org_id = %caller.org_id, by = %caller.id, audit_seq = erased.audit_seq, erased = erased.reports, "subject erased");
    Ok(axum::Json(Erasure { subject, erased_reports: erased.reports as u64, audit_id: erased.audit_seq.to_string() }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportedImage {
    pub report_id: Uuid,
    pub index: u32,
    pub content_type: String,
    /// Base64 of the stored (re-encoded) image.
    #[schema(content_encoding = "base64")]
    pub data: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubjectExport {
    pub subject: String,
    pub organization_id: Uuid,
    pub exported_at: String,
    pub reports: Vec<Report>,
    pub images: Vec<ExportedImage>,
}

/// Everything kept about the subject (right of access), audited.
#[utoipa::path(get, path = "/v1/subjects/{subject}/export", operation_id = "exportSubject", tag = "subjects",
    params(("subject" = String, Path, description = "The pseudonymous subject identifier", pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")),
    responses((status = 200, description = "The subject's reports and stored images", body = SubjectExport)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path(subject): Path<String>,
) -> Result<Response, ApiError> {
    let subject = checked_subject(&subject)?;
    export_document(&state, &caller, &subject).await
}

/// The export document of a subject (also the console's download).
pub(crate) async fn export_document(
    state: &AppState,
    caller: &dermagate_domain::services::identity::Principal,
    subject: &str,
) -> Result<Response, ApiError> {
    let subject = subject.to_string();
    let (reports, images) = state.analyses.export(caller, &subject).await?;
    if reports.is_empty() {
        return Err(ApiError::not_found("subject"));
    }
    let images = images
        .into_iter()
        .map(|(i, bytes)| ExportedImage {
            report_id: i.report_id,
            index: i.index,
            content_type: i.content_type,
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        })
        .collect();
    let export = SubjectExport {
        subject,
        organization_id: caller.org_id,
        exported_at: rfc3339(dermagate_domain::services::now_ms()),
        reports: reports.into_iter().map(|r| r.report).collect(),
        images,
    };
    Ok(no_store(axum::Json(export).into_response()))
}
