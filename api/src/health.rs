//! `/livez` and `/readyz`: unauthenticated probes for load balancers and operators. Both say who
//! this node is and who it believes leads, so failover is visible without credentials.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;

use crate::state::AppState;

#[derive(Serialize)]
pub struct Health {
    pub status: &'static str,
    pub node_id: u64,
    pub role: &'static str,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub applied_index: Option<u64>,
    pub last_log_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn health(state: &AppState, status: &'static str, reason: Option<String>) -> Health {
    let s = state.node.status();
    Health {
        status,
        node_id: s.node_id,
        role: s.role,
        leader_id: s.leader_id,
        term: s.term,
        applied_index: s.applied_index,
        last_log_index: s.last_log_index,
        reason,
    }
}

/// The process is up and serving HTTP.
pub async fn livez(State(state): State<AppState>) -> impl IntoResponse {
    axum::Json(health(&state, "ok", None))
}

/// 200 only when this node is a member of a cluster with a leader it heard from recently.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.node.readiness() {
        Ok(()) => (StatusCode::OK, axum::Json(health(&state, "ready", None))),
        Err(not_ready) => {
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(health(&state, "not_ready", Some(not_ready.reason))))
        }
    }
}
