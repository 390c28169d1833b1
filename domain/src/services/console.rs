//! Sessions of the administration console: **the same sign-in decision as `/v1/auth/login`**
//! (password, second factor, throttling judged in log order), a replicated session record, and
//! on every request **the same authorisation from the replicated records as an access token**
//! (user active, organisation active, roles as they are now, sign-out everywhere). The console
//! holds no rule of its own: its pages call the same services as the API with the principal
//! decided here.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::identity::{Identity, Principal, SignIn};
use super::tokens::PrincipalKind;
use super::{now_ms, ServiceError};
use crate::command::Command;
use crate::records::{ConsoleSession, OrgStatus, UserStatus};
use crate::{keys, reads, state};

/// The client id console sessions act under (what `/v1/me` would call the client).
pub const CONSOLE_CLIENT_ID: &str = "dermagate-console";
/// A session id is 32 random bytes, URL-safe base64 without padding.
const SESSION_ID_LEN: usize = 43;

/// A session as a request presents it, decided from the replicated state.
#[derive(Debug, Clone)]
pub struct ConsoleAccess {
    pub principal: Principal,
    pub session: ConsoleSession,
    /// The SHA-256 of the session id (the record's key).
    pub id_hash: String,
}

impl ConsoleAccess {
    /// The CSRF token of this session: an HMAC of a fixed label under the session's own secret,
    /// so it is bound to the session and useless once the session ends.
    pub fn csrf_token(&self) -> String {
        hex::encode(csrf_mac(&self.session.csrf_secret).finalize().into_bytes())
    }

    /// Whether `presented` is this session's CSRF token (compared in constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        let Ok(bytes) = hex::decode(presented.trim()) else { return false };
        csrf_mac(&self.session.csrf_secret).verify_slice(&bytes).is_ok()
    }
}

fn csrf_mac(secret: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"dermagate-console-csrf");
    mac
}

/// SHA-256 (hex) of a session id: the only form the replicated state keeps.
pub fn session_id_hash(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

fn ended() -> ServiceError {
    ServiceError::invalid_token("the console session has ended or expired")
}

impl Identity {
    /// Signs in like `/v1/auth/login` and opens a replicated console session lasting `ttl_ms`.
    /// Returns the session id (for the cookie only) and the session.
    pub async fn open_console_session(
        &self,
        s: SignIn<'_>,
        ttl_ms: i64,
    ) -> Result<(String, ConsoleSession), ServiceError> {
        let (user, mfa) = self.check_sign_in(s).await?;
        let mut id_bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut id_bytes);
        let id = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id_bytes)
        };
        let mut csrf_secret = vec![0u8; 32];
        rand::rng().fill_bytes(&mut csrf_secret);
        let now = now_ms();
        let session = ConsoleSession {
            user_id: user.id,
            org_id: user.org_id,
            created_at_ms: now,
            expires_at_ms: now + ttl_ms,
            csrf_secret,
            mfa,
        };
        let command = Command::CreateConsoleSession { id_hash: session_id_hash(&id), session: session.clone() };
        self.ctx.commit(&format!("user:{}", user.id), command).await?;
        tracing::info!(user_id = %user.id, org_id = %user.org_id, "console session opened");
        Ok((id, session))
    }

    /// The principal of a console session, decided from the replicated records now. A session
    /// unknown here is looked for again after catching up with the leader (it may have been
    /// opened through another node a moment ago); garbage does not cost that round trip.
    pub async fn console_access(&self, id: &str) -> Result<ConsoleAccess, ServiceError> {
        if id.len() != SESSION_ID_LEN || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(ended());
        }
        let id_hash = session_id_hash(id);
        let key = keys::console_session(&id_hash);
        let state = self.ctx.state.clone();
        let session =
            self.ctx.read_fresh(|| Ok(state::get::<ConsoleSession>(state.as_ref(), &key)?)).await?.ok_or_else(ended)?;
        let principal = self.console_principal(&session)?;
        Ok(ConsoleAccess { principal, session, id_hash })
    }

    fn console_principal(&self, session: &ConsoleSession) -> Result<Principal, ServiceError> {
        let state = self.ctx.state.as_ref();
        if session.expires_at_ms <= now_ms() {
            return Err(ended());
        }
        if !reads::organization(state, &session.org_id)?.is_some_and(|o| o.status == OrgStatus::Active) {
            return Err(ended());
        }
        let user = reads::user(state, &session.user_id)?
            .filter(|u| u.status == UserStatus::Active && u.org_id == session.org_id)
            .ok_or_else(ended)?;
        // Sign-out everywhere, a password change or disabling the account (even if it is
        // enabled again) end every session opened before it.
        if session.created_at_ms < user.tokens_valid_after_ms {
            return Err(ended());
        }
        Ok(Principal {
            kind: PrincipalKind::User,
            id: user.id.to_string(),
            org_id: user.org_id,
            roles: self.effective_roles(&user, session.mfa)?,
            scopes: Vec::new(),
            client_id: CONSOLE_CLIENT_ID.into(),
            token_expires_at: Some(session.expires_at_ms / 1000),
            jti: None,
            mfa: session.mfa,
        })
    }

    /// Ends a console session on every node (acknowledged once every member applied it).
    pub async fn end_console_session(&self, access: &ConsoleAccess) -> Result<(), ServiceError> {
        let command = Command::EndConsoleSession {
            id_hash: access.id_hash.clone(),
            org_id: access.session.org_id,
            user_id: access.session.user_id,
        };
        self.ctx.commit(&access.principal.actor(), command).await?;
        tracing::info!(user_id = %access.session.user_id, "console session ended");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn csrf_token_is_bound_to_the_session_secret() {
        let session = |secret: u8| ConsoleSession {
            user_id: Uuid::nil(),
            org_id: Uuid::nil(),
            created_at_ms: 0,
            expires_at_ms: 1,
            csrf_secret: vec![secret; 32],
            mfa: false,
        };
        let principal = Principal {
            kind: PrincipalKind::User,
            id: String::new(),
            org_id: Uuid::nil(),
            roles: Vec::new(),
            scopes: Vec::new(),
            client_id: String::new(),
            token_expires_at: None,
            jti: None,
            mfa: false,
        };
        let a = ConsoleAccess { principal: principal.clone(), session: session(1), id_hash: String::new() };
        let b = ConsoleAccess { principal, session: session(2), id_hash: String::new() };
        assert!(a.csrf_matches(&a.csrf_token()));
        assert!(!a.csrf_matches(&b.csrf_token()));
        assert!(!a.csrf_matches(""));
        assert!(!a.csrf_matches("not hex"));
    }
}
