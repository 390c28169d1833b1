//! Cluster administration: who leads, each member's role, applied index and lag, and adding or
//! removing members (platform administrators only).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use dermagate_raft::NodeInfo;
use serde::{Deserialize, Serialize};

use crate::auth::rbac::Permission;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::json::Json;
use crate::state::AppState;

#[derive(Serialize)]
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

#[derive(Serialize)]
pub struct ClusterView {
    pub leader_id: Option<u64>,
    /// The leader's member entry, for tools that want its addresses at once.
    pub leader: Option<u64>,
    pub term: u64,
    pub observed_by: u64,
    pub nodes: Vec<NodeView>,
}

#[derive(Deserialize)]
struct PeerHealth {
    role: String,
    applied_index: Option<u64>,
}

pub async fn get_cluster(State(state): State<AppState>, principal: Principal) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::ClusterRead)?;
    Ok(axum::Json(cluster_view(&state).await))
}

async fn cluster_view(state: &AppState) -> ClusterView {
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
    ClusterView {
        leader_id: status.leader_id,
        leader: status.leader_id,
        term: status.term,
        observed_by: status.node_id,
        nodes,
    }
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddNode {
    pub id: u64,
    pub raft_addr: String,
    pub api_url: String,
}

pub async fn add_node(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<AddNode>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::ClusterManage)?;
    if body.id == 0 {
        return Err(ApiError::validation("id", "positive", "node id must be a positive integer"));
    }
    if body.raft_addr.parse::<std::net::SocketAddr>().is_err() && !body.raft_addr.contains(':') {
        return Err(ApiError::validation("raft_addr", "host_port", "raft_addr must be host:port"));
    }
    if !body.api_url.starts_with("https://") {
        return Err(ApiError::validation("api_url", "https_url", "api_url must be an https:// URL"));
    }
    tracing::info!(node = body.id, raft_addr = %body.raft_addr, "adding cluster member");
    state.node.add_node(body.id, NodeInfo { raft_addr: body.raft_addr, api_url: body.api_url }).await?;
    Ok((StatusCode::CREATED, axum::Json(cluster_view(&state).await)))
}

pub async fn remove_node(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<u64>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::ClusterManage)?;
    tracing::info!(node = id, "removing cluster member");
    state.node.remove_node(id).await?;
    Ok(axum::Json(cluster_view(&state).await))
}

/// A consistent export of every replicated record, for `dermagate backup`. It is plaintext
/// inside TLS; the backup tool seals it before it touches a disk.
pub async fn backup(State(state): State<AppState>, principal: Principal) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::ClusterManage)?;
    state.catch_up_for_listing().await;
    let store = state.store.clone();
    let (applied, records, images) = tokio::task::spawn_blocking(move || {
        let (applied, records) = dermagate_storage::state_machine::export(&store)?;
        Ok::<_, dermagate_storage::StoreError>((applied, records, store.all_stored_images()?))
    })
    .await
    .map_err(ApiError::internal)??;
    // The backup carries every blob a report names, as a frame `blob:<digest>` after the records.
    let digests: std::collections::BTreeSet<String> = images.into_iter().map(|i| i.digest).collect();
    let mut blob_frames = Vec::with_capacity(digests.len());
    for digest in digests {
        let bytes = state.node.blob(&digest).await.map_err(crate::analyses::blob_error)?;
        blob_frames.push((format!("{BACKUP_BLOB_PREFIX}{digest}").into_bytes(), bytes));
    }
    let blobs = blob_frames.len();
    let mut data = records;
    data.extend_from_slice(&dermagate_storage::snapshot::encode(blob_frames)[8..]);
    tracing::info!(by = %principal.id, bytes = data.len(), blobs, "backup exported");
    let index = applied.map_or(0, |l| l.index).to_string();
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (axum::http::header::CACHE_CONTROL, "no-store".to_string()),
            (axum::http::HeaderName::from_static("x-dermagate-applied-index"), index),
        ],
        data,
    ))
}

/// The key of a blob frame in a backup (`blob:<sha256 hex>`, the bytes as the value).
pub const BACKUP_BLOB_PREFIX: &str = "blob:";

/// Imports a backup's records through Raft, in bounded chunks, so every node gets them; its
/// blobs first, each verified against its digest and stored on a quorum.
pub async fn restore(
    State(state): State<AppState>,
    principal: Principal,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::ClusterManage)?;
    let pairs = dermagate_storage::snapshot::decode(&body)
        .map_err(|e| ApiError::validation("body", "backup_format", format!("not a dermagate backup: {e}")))?;
    let (blob_pairs, pairs): (Vec<_>, Vec<_>) =
        pairs.into_iter().partition(|(k, _)| k.starts_with(BACKUP_BLOB_PREFIX.as_bytes()));
    // Every blob is verified against its digest before anything is restored.
    let mut blobs = Vec::with_capacity(blob_pairs.len());
    for (k, bytes) in blob_pairs {
        let digest = String::from_utf8_lossy(&k[BACKUP_BLOB_PREFIX.len()..]).to_string();
        if !dermagate_storage::blobs::is_digest(&digest) || dermagate_storage::blobs::verify(&digest, &bytes).is_err() {
            return Err(ApiError::validation(
                "body",
                "blob_digest",
                format!("the backup is damaged: image blob {digest} does not match its digest"),
            ));
        }
        blobs.push((digest, bytes));
    }
    let blob_count = blobs.len();
    for (digest, bytes) in blobs {
        state.node.store_blob_on_quorum(&digest, bytes).await.map_err(crate::analyses::blob_error)?;
    }
    let mut records = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        let key =
            String::from_utf8(k).map_err(|_| ApiError::validation("body", "backup_format", "a key is not UTF-8"))?;
        let value =
            String::from_utf8(v).map_err(|_| ApiError::validation("body", "backup_format", "a value is not UTF-8"))?;
        records.push((key, value));
    }
    let total = records.len();
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0;
    for (k, v) in records {
        chunk_bytes += k.len() + v.len();
        chunk.push((k, v));
        if chunk_bytes > 512 * 1024 {
            state
                .commit(dermagate_storage::model::Command::ImportRecords { records: std::mem::take(&mut chunk) })
                .await?;
            chunk_bytes = 0;
        }
    }
    if !chunk.is_empty() {
        state.commit(dermagate_storage::model::Command::ImportRecords { records: chunk }).await?;
    }
    tracing::info!(by = %principal.id, records = total, blobs = blob_count, "backup restored");
    Ok(axum::Json(serde_json::json!({ "restored_records": total, "restored_blobs": blob_count })))
}
