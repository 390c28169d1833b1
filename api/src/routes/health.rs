//! `/livez` and `/readyz`: unauthenticated probes for load balancers and operators. Both say who
//! this node is and who it believes leads, so failover is visible without credentials.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(livez)).routes(routes!(readyz))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `ok` (live), `ready`, or `not_ready`.
    pub status: String,
    pub node_id: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub applied_index: Option<u64>,
    pub last_log_index: Option<u64>,
    /// Why the node is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn health(state: &AppState, status: &str, reason: Option<String>) -> Health {
    let s = state.node.status();
    Health {
        status: status.into(),
        node_id: s.node_id,
        role: s.role.into(),
        leader_id: s.leader_id,
        term: s.term,
        applied_index: s.applied_index,
        last_log_index: s.last_log_index,
        reason,
    }
}

/// The process is up and serving HTTP.
#[utoipa::path(get, path = "/livez", operation_id = "livez", tag = "health",
    responses((status = 200, description = "Live", body = Health)))]
pub async fn livez(State(state): State<AppState>) -> axum::Json<Health> {
    axum::Json(health(&state, "ok", None))
}

/// 200 only when this node may serve authenticated requests: a member of a cluster with a
/// leader, proven current within the staleness bound, with room on its disk.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "health",
    responses((status = 200, description = "Ready", body = Health), (status = 503, description = "Not ready", body = Health)))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.node.readiness() {
        Ok(()) => (StatusCode::OK, axum::Json(health(&state, "ready", None))),
        Err(not_ready) => {
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(health(&state, "not_ready", Some(not_ready.reason))))
        }
    }
}
