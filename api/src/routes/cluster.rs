//! Cluster administration (platform administrators): who leads, each member's role, applied
//! index and lag; adding and removing members; backup and restore. **A backup leaves only
//! encrypted to the operator's age recipients** (`[backup] recipients`): the platform operator
//! runs the service without reading patient data over HTTP, and the token-signing keys are not
//! in a backup at all. Every one of these operations is in the platform's audit trail.

use std::io::Write;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::response::IntoResponse;
use dermagate_domain::command::Command;
use dermagate_domain::rbac::Permission;
use dermagate_domain::records::{AuditEvent, PLATFORM_ORG_ID};
use dermagate_raft::NodeInfo;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::extract::{Caller, Json};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_cluster))
        .routes(routes!(add_node))
        .routes(routes!(remove_node))
        .routes(routes!(backup))
        // A backup holds every report and image: larger than any other request.
        .merge(OpenApiRouter::new().routes(routes!(restore)).layer(axum::extract::DefaultBodyLimit::max(1 << 30)))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub id: u64,
    pub raft_addr: String,
    pub api_url: String,
    pub voter: bool,
    pub reachable: bool,
    pub role: Option<String>,
    pub applied_index: Option<u64>,
    pub matched_index: Option<u64>,
    pub lag: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    pub leader_id: Option<u64>,
    pub term: u64,
    /// The node that answered.
    pub observed_by: u64,
    pub nodes: Vec<NodeView>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PeerHealth {
    role: String,
    applied_index: Option<u64>,
}

/// Members, roles, applied indexes and lag, each asked first-hand.
#[utoipa::path(get, path = "/v1/cluster", operation_id = "getCluster", tag = "cluster",
    responses((status = 200, description = "The cluster as this node sees it", body = ClusterView)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn get_cluster(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<ClusterView>, ApiError> {
    caller.require(Permission::ClusterRead)?;
    Ok(axum::Json(cluster_view(&state).await))
}

pub(crate) async fn cluster_view(state: &AppState) -> ClusterView {
    let status = state.node.status();
    let probes = status.members.iter().map(|m| probe(state, m.id, &m.api_url));
    let healths = futures::future::join_all(probes).await;
    let leader_applied = status.applied_index.unwrap_or(0);
    let nodes = status
        .members
        .iter()
        .zip(healths)
        .map(|(m, h)| {
            let applied = h.as_ref().and_then(|h| h.applied_index);
            NodeView {
                id: m.id,
                raft_addr: m.raft_addr.clone(),
                api_url: m.api_url.clone(),
                voter: m.voter,
                reachable: h.is_some(),
                role: h.map(|h| h.role),
                applied_index: applied,
                matched_index: m.matched_index,
                lag: m.lag.or_else(|| applied.map(|a| leader_applied.saturating_sub(a))),
            }
        })
        .collect();
    ClusterView { leader_id: status.leader_id, term: status.term, observed_by: status.node_id, nodes }
}

/// Asks a member for its own view (its `/livez`), so roles and applied indexes are first-hand.
async fn probe(state: &AppState, id: u64, api_url: &str) -> Option<PeerHealth> {
    if id == state.node.id() {
        let s = state.node.status();
        return Some(PeerHealth { role: s.role.to_string(), applied_index: s.applied_index });
    }
    let client = state.peer_http.as_ref()?;
    let resp = client.get(format!("{api_url}/livez")).timeout(Duration::from_millis(800)).send().await.ok()?;
    resp.json().await.ok()
}

/// Appends a platform event to the platform's audit trail; the operation is refused if it cannot.
async fn audit(
    state: &AppState,
    caller: &Caller,
    action: &str,
    target: String,
    detail: String,
) -> Result<(), ApiError> {
    let event = AuditEvent {
        action: action.into(),
        actor: caller.actor(),
        org_id: PLATFORM_ORG_ID,
        target,
        outcome: "done".into(),
        detail,
    };
    Ok(state.identity.ctx.commit(&caller.actor(), Command::Audit(event)).await?)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeRequest {
    #[schema(minimum = 1)]
    pub id: u64,
    /// host:port of the node's Raft endpoint.
    #[schema(example = "10.0.0.4:7100")]
    pub raft_addr: String,
    /// The node's HTTPS base URL.
    #[schema(example = "https://10.0.0.4:8443")]
    pub api_url: String,
}

/// Add a member: it catches up as a learner, then becomes a voter.
#[utoipa::path(post, path = "/v1/cluster/nodes", operation_id = "addNode", tag = "cluster",
    request_body = NodeRequest,
    responses((status = 201, description = "Added", body = ClusterView)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn add_node(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<NodeRequest>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::ClusterManage)?;
    if body.id == 0 {
        return Err(ApiError::validation("id", "minimum", "node id must be a positive integer"));
    }
    if !body.raft_addr.contains(':') {
        return Err(ApiError::validation("raftAddr", "host_port", "raftAddr must be host:port"));
    }
    if !body.api_url.starts_with("https://") {
        return Err(ApiError::validation("apiUrl", "https_url", "apiUrl must be an https:// URL"));
    }
    audit(&state, &caller, "member_added", body.id.to_string(), format!("raft_addr={}", body.raft_addr)).await?;
    tracing::info!(node = body.id, raft_addr = %body.raft_addr, "adding cluster member");
    state.node.add_node(body.id, NodeInfo { raft_addr: body.raft_addr, api_url: body.api_url }).await?;
    Ok((StatusCode::CREATED, axum::Json(cluster_view(&state).await)))
}

/// Remove a member.
#[utoipa::path(delete, path = "/v1/cluster/nodes/{id}", operation_id = "removeNode", tag = "cluster",
    params(("id" = u64, Path, description = "Node id")),
    responses((status = 200, description = "Removed", body = ClusterView)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn remove_node(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<u64>,
) -> Result<axum::Json<ClusterView>, ApiError> {
    caller.require(Permission::ClusterManage)?;
    audit(&state, &caller, "member_removed", id.to_string(), String::new()).await?;
    tracing::info!(node = id, "removing cluster member");
    state.node.remove_node(id).await?;
    Ok(axum::Json(cluster_view(&state).await))
}

/// Encrypts `data` to every configured recipient (age, X25519).
fn encrypt_to_recipients(recipients: &[String], data: &[u8]) -> Result<Vec<u8>, ApiError> {
    let parsed = recipients
        .iter()
        .map(|r| {
            r.parse::<age::x25519::Recipient>().map_err(|e| ApiError::internal(format!("backup recipient {r:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let encryptor =
        age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient)).map_err(ApiError::internal)?;
    let mut out = Vec::with_capacity(data.len() + 512);
    let mut writer = encryptor.wrap_output(&mut out).map_err(ApiError::internal)?;
    writer.write_all(data).map_err(ApiError::internal)?;
    writer.finish().map_err(ApiError::internal)?;
    Ok(out)
}

/// A consistent backup of every replicated record and image, **encrypted to the operator's age
/// recipients** (decrypt with `age -d -i key.txt`, or `dermagate restore --identity`).
#[utoipa::path(get, path = "/v1/cluster/backup", operation_id = "backup", tag = "cluster",
    responses((status = 200, description = "An age-encrypted backup",
        content_type = "application/vnd.age", body = inline(crate::openapi::Binary),
        headers(("X-Dermagate-Applied-Index" = String, description = "The Raft index the backup is current as of")))),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn backup(State(state): State<AppState>, caller: Caller) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::ClusterManage)?;
    let recipients = state.settings.backup_recipients.clone();
    if recipients.is_empty() {
        return Err(ApiError::Unprocessable(
            "no backup recipient is configured ([backup] recipients): a backup never leaves in plaintext".into(),
        ));
    }
    audit(&state, &caller, "backup_exported", "cluster".into(), format!("recipients={}", recipients.len())).await?;
    let (applied, plain) = state.node.export_backup().await?;
    let size = plain.len();
    let sealed = tokio::task::spawn_blocking(move || encrypt_to_recipients(&recipients, &plain))
        .await
        .map_err(ApiError::internal)??;
    tracing::info!(by = %caller.id, bytes = size, "backup exported (encrypted)");
    Ok((
        [
            (header::CONTENT_TYPE, "application/vnd.age".to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (HeaderName::from_static("x-dermagate-applied-index"), applied.to_string()),
        ],
        sealed,
    ))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Restore {
    pub restored_records: usize,
    pub restored_blobs: usize,
}

/// Restore a decrypted backup: its images verified and stored on a quorum, its records
/// committed through Raft (merged into the current state).
#[utoipa::path(post, path = "/v1/cluster/restore", operation_id = "restore", tag = "cluster",
    request_body(content = inline(crate::openapi::Binary), content_type = "application/octet-stream", description = "A decrypted dermagate backup"),
    responses((status = 200, description = "Restored", body = Restore)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn restore(
    State(state): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<axum::Json<Restore>, ApiError> {
    caller.require(Permission::ClusterManage)?;
    let restored = state.node.restore_backup(&body, &caller.actor()).await?;
    // Recorded after the records are back, so it chains onto the restored trail.
    let detail = format!("records={} blobs={}", restored.records, restored.blobs);
    audit(&state, &caller, "backup_restored", "cluster".into(), detail).await?;
    tracing::info!(by = %caller.id, records = restored.records, blobs = restored.blobs, "backup restored");
    Ok(axum::Json(Restore { restored_records: restored.records, restored_blobs: restored.blobs }))
}
