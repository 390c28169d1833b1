//! A subject's data: the time series of its reports (ordered by `issued`, paginated, never
//! overwritten), erasure (GDPR art. 17, audited, cluster-wide) and export (art. 15, audited).
//! Subjects are scoped by organisation: **another organisation's subject answers 404**.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use dermagate_storage::model::{keys, AuditEntry, Command, StoredReport};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::fhir;
use super::input::subject_id;
use super::report::Report;
use crate::auth::rbac::Permission;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::organizations::rfc3339;
use crate::state::{now_ms, AppState};

#[derive(Debug, Deserialize)]
pub struct Page {
    pub limit: Option<usize>,
    /// Opaque position returned as `nextCursor`.
    pub cursor: Option<String>,
    /// Alternatively, how many reports to skip from the oldest.
    pub offset: Option<usize>,
}

/// One page of a subject's time series.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeriesPage {
    pub subject: String,
    /// Reports ordered by `issued`, oldest first.
    #[schema(value_type = Vec<Report>)]
    pub items: Vec<serde_json::Value>,
    /// Reports of the subject in all pages.
    pub total: usize,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;

async fn series(state: &AppState, principal: &Principal, subject: &str) -> Result<Vec<StoredReport>, ApiError> {
    state.catch_up_for_listing().await;
    let (org, s) = (principal.org_id, subject.to_string());
    let reports = state.scan(move |store| store.subject_reports(&org, &s)).await?;
    if reports.is_empty() {
        return Err(ApiError::NotFound("subject".into()));
    }
    Ok(reports)
}

fn checked_subject(raw: &str) -> Result<String, ApiError> {
    // A malformed identifier cannot name any subject: not found, like an unknown one.
    subject_id(Some(raw)).map_err(|_| ApiError::NotFound("subject".into()))
}

/// `GET /v1/subjects/{subject}/analyses`.
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Path(subject): Path<String>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    principal.require(Permission::ReportsRead)?;
    let subject = checked_subject(&subject)?;
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
    let all = series(&state, &principal, &subject).await?;
    let total = all.len();
    let items: Vec<StoredReport> = all.into_iter().skip(start).take(limit).collect();
    let next = (start + items.len() < total).then(|| (start + items.len()).to_string());
    if super::wants_fhir(&headers) {
        let reports: Vec<Report> = items.iter().filter_map(|r| serde_json::from_value(r.body.clone()).ok()).collect();
        let mut resp = axum::Json(fhir::searchset(&reports, total)).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(fhir::FHIR_JSON));
        return Ok(with_next_link(resp, &subject, limit, next.as_deref()));
    }
    let page = SeriesPage {
        subject: subject.clone(),
        items: items.into_iter().map(|r| r.body).collect(),
        total,
        next_cursor: next.clone(),
    };
    Ok(with_next_link(axum::Json(page).into_response(), &subject, limit, next.as_deref()))
}

fn with_next_link(mut resp: Response, subject: &str, limit: usize, next: Option<&str>) -> Response {
    if let Some(cursor) = next {
        let link = format!("</v1/subjects/{subject}/analyses?limit={limit}&cursor={cursor}>; rel=\"next\"");
        if let Ok(v) = HeaderValue::from_str(&link) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    resp
}

fn audit_entry(principal: &Principal, subject: &str, action: &str) -> AuditEntry {
    AuditEntry {
        id: Uuid::now_v7(),
        at_ms: now_ms(),
        action: action.into(),
        actor: principal.id.clone(),
        org_id: principal.org_id,
        subject_hash: keys::hash_hex(&format!("{}/{subject}", principal.org_id)),
        reports: 0,
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Erasure {
    pub subject: String,
    pub erased_reports: u64,
    /// The audit entry that records the erasure.
    pub audit_id: Uuid,
}

/// `DELETE /v1/subjects/{subject}`: erases every report and stored image of the subject, on
/// every node; acknowledged only once every reachable node has applied it.
pub async fn erase(
    State(state): State<AppState>,
    principal: Principal,
    Path(subject): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::SubjectsErase)?;
    let subject = checked_subject(&subject)?;
    series(&state, &principal, &subject).await?;
    let audit = audit_entry(&principal, &subject, "subject_erased");
    let audit_id = audit.id;
    state.commit(Command::EraseSubject { org_id: principal.org_id, subject: subject.clone(), audit }).await?;
    let logged: Option<AuditEntry> =
        state.store.record(dermagate_storage::model::Collection::Audit, &audit_id.to_string())?;
    let erased_reports = logged.map_or(0, |a| a.reports);
    tracing::info!(org_id = %principal.org_id, by = %principal.id, %audit_id, erased_reports, "subject erased");
    Ok(axum::Json(Erasure { subject, erased_reports, audit_id }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportedImage {
    pub report_id: Uuid,
    pub index: u32,
    pub content_type: String,
    /// Base64 of the stored (re-encoded) image.
    pub data: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubjectExport {
    pub subject: String,
    pub organization_id: Uuid,
    pub exported_at: String,
    #[schema(value_type = Vec<Report>)]
    pub reports: Vec<serde_json::Value>,
    pub images: Vec<ExportedImage>,
    pub audit_id: Uuid,
}

/// `GET /v1/subjects/{subject}/export`: everything kept about the subject (right of access).
pub async fn export(
    State(state): State<AppState>,
    principal: Principal,
    Path(subject): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::ReportsRead)?;
    let subject = checked_subject(&subject)?;
    let reports = series(&state, &principal, &subject).await?;
    let mut audit = audit_entry(&principal, &subject, "subject_exported");
    audit.reports = reports.len() as u64;
    let audit_id = audit.id;
    state.commit(Command::Audit(audit)).await?;
    let ids: Vec<Uuid> = reports.iter().map(|r| r.id).collect();
    let stored = state
        .scan(move |store| {
            let mut all = Vec::new();
            for id in &ids {
                all.extend(store.report_images(id)?);
            }
            Ok(all)
        })
        .await?;
    let mut images = Vec::with_capacity(stored.len());
    for i in stored {
        let bytes = state.node.blob(&i.digest).await.map_err(super::blob_error)?;
        images.push(ExportedImage {
            report_id: i.report_id,
            index: i.index,
            content_type: i.content_type,
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        });
    }
    Ok(axum::Json(SubjectExport {
        subject,
        organization_id: principal.org_id,
        exported_at: rfc3339(now_ms()),
        reports: reports.into_iter().map(|r| r.body).collect(),
        images,
        audit_id,
    }))
}
