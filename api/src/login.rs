//! `POST /v1/auth/login`: people sign in with username and password and get the standard OAuth
//! token response (the first-party sign-in; the OAuth `password` grant is not offered).
//!
//! Brute force is bounded cluster-wide: failures are replicated per username hash (existing or
//! not), and after `max_failures` the name is locked with a growing wait, permanently after
//! repeated locks. Unknown users, wrong passwords and locked accounts get the same answer at the
//! same cost (a dummy hash is verified when the user does not exist).

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use dermagate_storage::model::{Collection, Command, OrgStatus, User, UserStatus};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::tokens::PrincipalKind;
use crate::error::ApiError;
use crate::json::Json;
use crate::rate_limit::ClientIp;
use crate::state::{now_ms, AppState};

/// Refresh tokens live this long (seconds) unless rotated earlier.
pub const REFRESH_TTL_SECS: i64 = 8 * 3600;
pub const REFRESH_PREFIX: &str = "dgr_";

#[derive(Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
}

/// A stored refresh token (keyed by a hash of the token).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshRecord {
    pub family: Uuid,
    pub user_id: Uuid,
    pub issued_at_ms: i64,
    pub expires_at: i64,
    pub rotated: bool,
}

/// Token responses must never be cached (RFC 6749 section 5.1).
pub fn token_response(body: TokenResponse) -> Response {
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

fn bad_credentials() -> ApiError {
    ApiError::Unauthorized {
        error: "invalid_grant",
        detail: "invalid username or password, or the account is temporarily locked".into(),
    }
}

pub async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    Json(body): Json<LoginRequest>,
) -> Result<Response, ApiError> {
    state.rate_limits.check_sign_in(&ip)?;
    let user = sign_in(&state, &body.username, body.password).await?;
    issue_for_user(&state, &user, Uuid::new_v4()).await
}

/// Checks a username and password against the replicated users and lockout state.
pub async fn sign_in(state: &AppState, username: &str, password: String) -> Result<User, ApiError> {
    if username.len() > 256 || password.len() > 1024 {
        return Err(bad_credentials());
    }
    let lock = state.store.sign_in_state(username)?;
    // Always catch up (not only on a miss): a miss that cost an extra round trip would tell an
    // attacker which usernames exist.
    state.catch_up_for_listing().await;
    let user = state.store.user_by_username(username)?;
    let valid = state.passwords.verify(password, user.as_ref().map(|u| u.password_hash.clone())).await?;
    if lock.is_locked(now_ms()) {
        metrics::counter!("dermagate_auth_failures_total", "reason" => "locked").increment(1);
        return Err(bad_credentials());
    }
    let org_active = |u: &User| -> Result<bool, ApiError> {
        Ok(state.store.organization(&u.org_id)?.is_some_and(|o| o.status == OrgStatus::Active))
    };
    match user {
        Some(u) if valid && u.status == UserStatus::Active && org_active(&u)? => {
            if lock.failures > 0 || lock.temporary_locks > 0 {
                state.commit(Command::ResetSignInFailures { username: username.to_string() }).await?;
            }
            Ok(u)
        }
        _ => {
            metrics::counter!("dermagate_auth_failures_total", "reason" => "bad_credentials").increment(1);
            let policy = state.settings.lockout;
            state.commit(Command::RecordSignInFailure { username: username.to_string(), policy }).await?;
            if state.store.sign_in_state(username)?.is_locked(now_ms()) {
                metrics::counter!("dermagate_lockouts_total").increment(1);
                tracing::warn!("sign-in locked after repeated failures");
            }
            Err(bad_credentials())
        }
    }
}

/// Issues an access token and a fresh refresh token of `family` for `user`.
pub async fn issue_for_user(state: &AppState, user: &User, family: Uuid) -> Result<Response, ApiError> {
    let (access, expires_in, refresh, record) = new_user_tokens(state, user, family)?;
    state
        .commit(Command::PutRecord {
            collection: Collection::RefreshToken,
            id: refresh.clone(),
            value: serde_json::to_value(&record).map_err(ApiError::internal)?,
            unique: true,
        })
        .await?;
    Ok(token_response(TokenResponse {
        access_token: access,
        token_type: "Bearer",
        expires_in,
        refresh_token: Some(refresh),
        scope: String::new(),
    }))
}

/// A signed access token plus a new refresh token and its record (not yet stored).
pub fn new_user_tokens(
    state: &AppState,
    user: &User,
    family: Uuid,
) -> Result<(String, u64, String, RefreshRecord), ApiError> {
    let now = now_ms();
    let (access, claims) = state.tokens.issue(
        PrincipalKind::User,
        user.id.to_string(),
        "dermagate-login".into(),
        user.org_id,
        user.roles.clone(),
        String::new(),
        now,
    )?;
    let refresh = new_refresh_token();
    let record = RefreshRecord {
        family,
        user_id: user.id,
        issued_at_ms: now,
        expires_at: now / 1000 + REFRESH_TTL_SECS,
        rotated: false,
    };
    Ok((access, (claims.exp - claims.iat) as u64, refresh, record))
}

fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{REFRESH_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}
