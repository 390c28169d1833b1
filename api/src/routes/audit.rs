//! `GET /v1/audit`: the caller's organisation's audit trail (auditors and administrators), a
//! hash chain appended through Raft; the platform's own trail for platform administrators.

use axum::extract::{Query, State};
use dermagate_domain::records::AuditRecord;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::Caller;
use crate::state::{rfc3339, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(trail))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Records after this sequence number (the `nextAfter` of the previous page).
    #[param(minimum = 0)]
    pub after: Option<u64>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub seq: u64,
    pub at: String,
    /// e.g. `sign_in_failed`, `user_roles_changed`, `client_created`, `report_read`, `subject_erased`.
    pub action: String,
    pub actor: String,
    pub organization_id: Uuid,
    pub target: String,
    pub outcome: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

impl From<AuditRecord> for AuditEntry {
    fn from(r: AuditRecord) -> Self {
        AuditEntry {
            seq: r.seq,
            at: rfc3339(r.at_ms),
            action: r.event.action,
            actor: r.event.actor,
            organization_id: r.event.org_id,
            target: r.event.target,
            outcome: r.event.outcome,
            detail: r.event.detail,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<u64>,
}

#[utoipa::path(get, path = "/v1/audit", operation_id = "auditTrail", tag = "audit",
    params(AuditQuery),
    responses((status = 200, description = "A page of the trail, oldest first", body = AuditPage)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn trail(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<axum::Json<AuditPage>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::validation("limit", "range", "limit must be between 1 and 500"));
    }
    let records = state.audit.trail(&caller, caller.org_id, q.after.unwrap_or(0), limit + 1).await?;
    let more = records.len() > limit;
    let items: Vec<AuditEntry> = records.into_iter().take(limit).map(AuditEntry::from).collect();
    let next_after = if more { items.last().map(|e| e.seq) } else { None };
    Ok(axum::Json(AuditPage { items, next_after }))
}
