//! Applying the commands of console sessions: opened for an active user of an active
//! organisation, ended on every node, expired ones forgotten.

use super::rejected;
use crate::command::Outcome;
use crate::error::{Entity, Rejection};
use crate::keys;
use crate::records::{ConsoleSession, Organization, User, UserStatus};
use crate::state::{self, StateError, StateWrite};

pub fn create(state: &mut impl StateWrite, id_hash: &str, session: &ConsoleSession) -> Result<Outcome, StateError> {
    match state::get::<User>(state, &keys::user(&session.user_id))? {
        Some(u) if u.org_id == session.org_id && u.status == UserStatus::Active => {}
        _ => return rejected(Rejection::NotFound(Entity::User)),
    }
    match state::get::<Organization>(state, &keys::org(&session.org_id))? {
        Some(o) if o.is_active() => {}
        Some(_) => return rejected(Rejection::OrganizationInactive),
        None => return rejected(Rejection::NotFound(Entity::Organization)),
    }
    let key = keys::console_session(id_hash);
    if state::exists(state, &key)? {
        return rejected(Rejection::AlreadyExists(Entity::User));
    }
    state::put(state, key, session)?;
    Ok(Outcome::Done)
}

/// Ending an unknown (or already ended) session is done: sign-out is idempotent.
pub fn end(state: &mut impl StateWrite, id_hash: &str) -> Result<Outcome, StateError> {
    state.delete(keys::console_session(id_hash));
    state.credentials_changed();
    Ok(Outcome::Done)
}

pub fn purge(state: &mut impl StateWrite, now_ms: i64) -> Result<Outcome, StateError> {
    for (key, value) in state.scan_raw(keys::CONSOLE_SESSION.as_bytes())? {
        let session: ConsoleSession = serde_json::from_slice(&value)?;
        if session.expires_at_ms < now_ms {
            state.delete(key);
        }
    }
    Ok(Outcome::Done)
}
