//! Applying the commands of people: users, their roles, status, passwords and second factor,
//! sign-in attempts and their throttling, invitations.

use uuid::Uuid;

use super::{keyer, rejected};
use crate::command::Outcome;
use crate::error::{Entity, Rejection};
use crate::keys;
use crate::rbac;
use crate::records::{FailureCount, Invitation, Organization, Role, ThrottlePolicy, Totp, User, UserStatus};
use crate::state::{self, StateError, StateWrite};

/// `let x = try_reject!(expr)`: the value of an `Ok(Ok(v))`, or return the rejection.
macro_rules! try_reject {
    ($e:expr) => {
        match $e? {
            Ok(v) => v,
            Err(r) => return rejected(r),
        }
    };
}

fn active_org(state: &impl StateWrite, org_id: &Uuid) -> Result<Result<Organization, Rejection>, StateError> {
    Ok(match state::get::<Organization>(state, &keys::org(org_id))? {
        Some(org) if org.is_active() => Ok(org),
        Some(_) => Err(Rejection::OrganizationInactive),
        None => Err(Rejection::NotFound(Entity::Organization)),
    })
}

/// The user `user_id` of organisation `org_id` (another organisation's user is not found).
fn user_of(state: &impl StateWrite, org_id: &Uuid, user_id: &Uuid) -> Result<Result<User, Rejection>, StateError> {
    Ok(match state::get::<User>(state, &keys::user(user_id))? {
        Some(u) if &u.org_id == org_id => Ok(u),
        _ => Err(Rejection::NotFound(Entity::User)),
    })
}

fn any_user(state: &impl StateWrite, user_id: &Uuid) -> Result<Result<User, Rejection>, StateError> {
    Ok(state::get::<User>(state, &keys::user(user_id))?.ok_or(Rejection::NotFound(Entity::User)))
}

fn save(state: &mut impl StateWrite, user: &User) -> Result<Outcome, StateError> {
    state::put(state, keys::user(&user.id), user)?;
    state.credentials_changed();
    Ok(Outcome::Done)
}

pub fn create_user(state: &mut impl StateWrite, user: &User) -> Result<Outcome, StateError> {
    let keyer = try_reject!(keyer(state));
    try_reject!(active_org(state, &user.org_id));
    let name_key = keyer.username(&user.username);
    if state::exists(state, &name_key)? {
        // A record identical to the stored one (its random id, its salted hash) can only be the
        // same creation proposed again, whatever its request id: it answers as the first did.
        if state::get::<User>(state, &keys::user(&user.id))?.as_ref() == Some(user) {
            return Ok(Outcome::Done);
        }
        return rejected(Rejection::UsernameTaken);
    }
    if state::exists(state, &keys::user(&user.id))? {
        return rejected(Rejection::AlreadyExists(Entity::User));
    }
    state::put(state, name_key, &user.id)?;
    save(state, user)
}

/// New roles take effect on the user's next request on any node (authorisation reads the
/// record, not the token).
pub fn set_roles(
    state: &mut impl StateWrite,
    org_id: &Uuid,
    user_id: &Uuid,
    roles: &[Role],
    _at: i64,
) -> Result<Outcome, StateError> {
    let mut user = try_reject!(user_of(state, org_id, user_id));
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        return rejected(Rejection::InvalidCommand("a user needs at least one role".into()));
    }
    user.roles = roles;
    save(state, &user)
}

pub fn set_status(
    state: &mut impl StateWrite,
    org_id: &Uuid,
    user_id: &Uuid,
    status: UserStatus,
    at: i64,
) -> Result<Outcome, StateError> {
    let mut user = try_reject!(user_of(state, org_id, user_id));
    user.status = status;
    if status == UserStatus::Disabled {
        // Enabling the account again must not bring back the tokens and console sessions that
        // disabling ended.
        user.tokens_valid_after_ms = user.tokens_valid_after_ms.max(at);
    }
    save(state, &user)
}

pub fn set_password(
    state: &mut impl StateWrite,
    org_id: &Uuid,
    user_id: &Uuid,
    password_hash: &str,
    at: i64,
) -> Result<Outcome, StateError> {
    let mut user = try_reject!(user_of(state, org_id, user_id));
    user.password_hash = password_hash.to_string();
    // A new password signs the user out everywhere.
    user.tokens_valid_after_ms = at;
    save(state, &user)
}

pub fn delete_user(state: &mut impl StateWrite, org_id: &Uuid, user_id: &Uuid) -> Result<Outcome, StateError> {
    let keyer = try_reject!(keyer(state));
    let user = try_reject!(user_of(state, org_id, user_id));
    state.delete(keyer.username(&user.username));
    state.delete(keys::user(user_id));
    state.credentials_changed();
    Ok(Outcome::Done)
}

pub fn sign_out_everywhere(state: &mut impl StateWrite, user_id: &Uuid, at: i64) -> Result<Outcome, StateError> {
    let mut user = try_reject!(any_user(state, user_id));
    user.tokens_valid_after_ms = at;
    save(state, &user)
}

pub fn enroll_totp(
    state: &mut impl StateWrite,
    user_id: &Uuid,
    secret: &[u8],
    recovery_code_hashes: &[String],
) -> Result<Outcome, StateError> {
    let mut user = try_reject!(any_user(state, user_id));
    if user.has_confirmed_totp() {
        return rejected(Rejection::InvalidCommand(
            "a confirmed second factor must be disabled before a new enrolment".into(),
        ));
    }
    user.totp = Some(Totp {
        secret: secret.to_vec(),
        confirmed: false,
        recovery_code_hashes: recovery_code_hashes.to_vec(),
        last_step: 0,
    });
    save(state, &user)
}

/// Accepts a code's time step once: a step not newer than the last accepted one is a replay.
pub fn use_totp_step(
    state: &mut impl StateWrite,
    user_id: &Uuid,
    step: u64,
    confirm: bool,
) -> Result<Outcome, StateError> {
    let mut user = try_reject!(any_user(state, user_id));
    let Some(totp) = user.totp.as_mut() else {
        return rejected(Rejection::SecondFactorInvalid);
    };
    if step <= totp.last_step || (!confirm && !totp.confirmed) {
        return rejected(Rejection::SecondFactorInvalid);
    }
    totp.last_step = step;
    totp.confirmed = true;
    save(state, &user)
}

pub fn use_recovery_code(state: &mut impl StateWrite, user_id: &Uuid, code_hash: &str) -> Result<Outcome, StateError> {
    let mut user = try_reject!(any_user(state, user_id));
    let Some(totp) = user.totp.as_mut().filter(|t| t.confirmed) else {
        return rejected(Rejection::SecondFactorInvalid);
    };
    let before = totp.recovery_code_hashes.len();
    totp.recovery_code_hashes.retain(|h| h != code_hash);
    if totp.recovery_code_hashes.len() == before {
        return rejected(Rejection::SecondFactorInvalid);
    }
    save(state, &user)
}

pub fn disable_totp(state: &mut impl StateWrite, user_id: &Uuid, at: i64) -> Result<Outcome, StateError> {
    let mut user = try_reject!(any_user(state, user_id));
    user.totp = None;
    // Tokens issued with the second factor are not kept after it is removed.
    user.tokens_valid_after_ms = at;
    save(state, &user)
}

/// Decides a sign-in attempt in log order. Throttled: refused whatever the password. Otherwise a
/// good password is allowed and clears the counters; a bad one counts against the username from
/// this source (an attacker slows only itself) and, far more leniently, from everywhere.
pub fn sign_in_attempt(
    state: &mut impl StateWrite,
    username: &str,
    source: &str,
    user_id: Option<Uuid>,
    password_ok: bool,
    policy: &ThrottlePolicy,
    at: i64,
) -> Result<Outcome, StateError> {
    let keyer = try_reject!(keyer(state));
    let (user_key, source_key) = (keyer.sign_in_user(username), keyer.sign_in_source(username, source));
    let mut by_user: FailureCount = state::get(state, &user_key)?.unwrap_or_default();
    let mut by_source: FailureCount = state::get(state, &source_key)?.unwrap_or_default();
    if by_user.waiting(at) || by_source.waiting(at) {
        if by_source.waiting(at) {
            // Guessing on while told to wait only makes this source wait longer.
            by_source.fail(
                at,
                policy.per_source_failures,
                policy.base_wait_ms,
                policy.max_wait_ms,
                policy.forget_after_ms,
            );
            state::put(state, source_key, &by_source)?;
        }
        let until = by_user.wait_until_ms.max(by_source.wait_until_ms);
        return rejected(Rejection::SignInThrottled { retry_after_secs: ((until - at).max(0) as u64).div_ceil(1000) });
    }
    if password_ok && user_id.is_some() {
        state.delete(source_key);
        if by_user.failures > 0 {
            state.delete(user_key);
        }
        return Ok(Outcome::Done);
    }
    by_source.fail(at, policy.per_source_failures, policy.base_wait_ms, policy.max_wait_ms, policy.forget_after_ms);
    by_user.fail(
        at,
        policy.per_user_failures,
        policy.base_wait_ms,
        policy.per_user_max_wait_ms,
        policy.forget_after_ms,
    );
    state::put(state, source_key, &by_source)?;
    state::put(state, user_key, &by_user)?;
    rejected(Rejection::BadCredentials)
}

/// An administrator's unlock: clears the per-username counter (per-source counters of that
/// username expire by themselves).
pub fn clear_throttle(state: &mut impl StateWrite, username: &str) -> Result<Outcome, StateError> {
    let keyer = try_reject!(keyer(state));
    state.delete(keyer.sign_in_user(username));
    Ok(Outcome::Done)
}

pub fn create_invitation(
    state: &mut impl StateWrite,
    token: &str,
    invitation: &Invitation,
) -> Result<Outcome, StateError> {
    let keyer = try_reject!(keyer(state));
    try_reject!(active_org(state, &invitation.org_id));
    let key = keyer.invitation(token);
    if state::exists(state, &key)? {
        return rejected(Rejection::AlreadyExists(Entity::Invitation));
    }
    state::put(state, key, invitation)?;
    Ok(Outcome::Done)
}

/// Registers a user from an invitation that is unused, unexpired, of the user's organisation, and
/// whose issuer still exists, is active and may still grant every role it carries.
pub fn redeem_invitation(
    state: &mut impl StateWrite,
    token: &str,
    user: &User,
    at: i64,
) -> Result<Outcome, StateError> {
    let keyer = try_reject!(keyer(state));
    let key = keyer.invitation(token);
    let Some(mut inv) = state::get::<Invitation>(state, &key)? else {
        return rejected(Rejection::InvitationInvalid);
    };
    if inv.used || at >= inv.expires_at_ms || inv.org_id != user.org_id || inv.roles != user.roles {
        return rejected(Rejection::InvitationInvalid);
    }
    let issuer_may_grant = state::get::<User>(state, &keys::user(&inv.created_by))?.is_some_and(|issuer| {
        issuer.status == UserStatus::Active
            && (issuer.org_id == inv.org_id || issuer.roles.contains(&Role::PlatformAdmin))
            && inv.roles.iter().all(|r| rbac::may_grant(&issuer.roles, *r))
    });
    if !issuer_may_grant {
        return rejected(Rejection::InvitationInvalid);
    }
    let created = create_user(state, user)?;
    if !created.is_done() {
        return Ok(created);
    }
    inv.used = true;
    state::put(state, key, &inv)?;
    Ok(Outcome::Done)
}
