//! Rotation of the token-signing key ring, by command (`POST /v1/signing-keys/rotate`) and on a
//! schedule. The previous key keeps verifying until every token it signed has expired.

use axum::extract::State;
use axum::response::IntoResponse;
use dermagate_storage::model::Command;

use crate::auth::rbac::Permission;
use crate::auth::tokens::generate_signing_key;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::{now_secs, AppState};

/// Rotates: a new active key; the old one retires once its last token has expired.
pub async fn rotate_now(state: &AppState) -> Result<String, ApiError> {
    let now = now_secs();
    let key = generate_signing_key(now)?;
    let kid = key.kid.clone();
    let s = state.tokens.settings();
    let retire_after = now + s.access_ttl.as_secs() as i64 + s.leeway.as_secs() as i64;
    state.commit(Command::RotateSigningKey { key, retire_after }).await?;
    tracing::info!(kid = %kid, "signing key rotated");
    Ok(kid)
}

pub async fn rotate(State(state): State<AppState>, principal: Principal) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::SigningKeysRotate)?;
    let kid = rotate_now(&state).await?;
    Ok(axum::Json(serde_json::json!({ "kid": kid, "jwks_uri": "/.well-known/jwks.json" })))
}
