//! `POST /v1/signing-keys/rotate`: rotation of the token-signing key ring on demand (it also
//! rotates on a schedule). The previous key keeps verifying until every token it signed expired.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::extract::Caller;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(rotate))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// The id of the new signing key.
    pub kid: String,
    pub jwks_uri: String,
}

#[utoipa::path(post, path = "/v1/signing-keys/rotate", operation_id = "rotateSigningKey", tag = "platform",
    responses((status = 200, description = "Rotated", body = Rotation)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn rotate(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Rotation>, ApiError> {
    caller.require(dermagate_domain::rbac::Permission::SigningKeysRotate)?;
    let kid = dermagate_domain::services::maintenance::rotate_signing_key(&state.identity, &caller.actor()).await?;
    Ok(axum::Json(Rotation { kid, jwks_uri: state.url("/.well-known/jwks.json") }))
}
