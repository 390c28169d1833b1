//! Applying requests to the replicated state: the only code that changes it. **Apply is
//! deterministic**: it reads only the state and the request (which carries its own time, id and
//! actor), never clocks or randomness, so every node that applies the same log ends with the same
//! state. Business refusals are [`Outcome::Rejected`] and identical on every node; `Err` means
//! the storage underneath failed, which stops the node rather than let it diverge.

mod audit;
mod console;
mod identity;
mod organizations;
mod reports;
mod tokens;

#[cfg(test)]
mod tests;

use crate::command::{Command, Outcome, Request, SCHEMA_VERSION};
use crate::error::Rejection;
use crate::keys::{self, Keyer};
use crate::state::{self, StateError, StateWrite};

pub use audit::append as append_audit;

/// Applies one request, once per request id: a request applied before answers with its first
/// outcome and changes nothing.
pub fn apply(state: &mut impl StateWrite, req: &Request) -> Result<Outcome, StateError> {
    if req.id.is_nil() {
        return apply_command(state, req);
    }
    let key = keys::applied_request(req.at_ms, &req.id);
    if let Some(first) = state::get::<Outcome>(state, &key)? {
        return Ok(first);
    }
    let outcome = apply_command(state, req)?;
    state::put(state, key, &outcome)?;
    Ok(outcome)
}

/// The keyer of the cluster secret, or `NotBootstrapped` before the secret exists.
pub(crate) fn keyer(state: &impl StateWrite) -> Result<Result<Keyer, Rejection>, StateError> {
    Ok(match state::get::<Vec<u8>>(state, keys::CLUSTER_SECRET)? {
        Some(secret) => Ok(Keyer::new(&secret)),
        None => Err(Rejection::NotBootstrapped),
    })
}

/// `Ok(outcome)` short-hand for a refusal.
pub(crate) fn rejected(r: Rejection) -> Result<Outcome, StateError> {
    Ok(Outcome::Rejected(r))
}

fn apply_command(state: &mut impl StateWrite, req: &Request) -> Result<Outcome, StateError> {
    if req.schema > SCHEMA_VERSION {
        // Proposers refuse newer schemas, so this only happens in a mixed-version cluster; every
        // node of this version answers the same way, which keeps them identical.
        return rejected(Rejection::UnsupportedSchema(req.schema));
    }
    let outcome = dispatch(state, req)?;
    audit::record_command(state, req, &outcome)?;
    Ok(outcome)
}

fn dispatch(state: &mut impl StateWrite, req: &Request) -> Result<Outcome, StateError> {
    let at = req.at_ms;
    match &req.command {
        Command::Noop => Ok(Outcome::Done),
        Command::EnsureClusterSecret { secret } => organizations::ensure_cluster_secret(state, secret),
        Command::SetPlatformSettings(settings) => {
            state::put(state, keys::PLATFORM_SETTINGS.to_vec(), settings)?;
            Ok(Outcome::Done)
        }
        Command::CreateOrganization(org) => organizations::create(state, org),
        Command::SetOrganizationStatus { id, status } => organizations::set_status(state, id, *status),
        Command::UpdateOrganization { id, name, store_images } => {
            organizations::update(state, id, name.as_deref(), *store_images)
        }
        Command::CreateUser(user) => identity::create_user(state, user),
        Command::SetUserRoles { org_id, user_id, roles } => identity::set_roles(state, org_id, user_id, roles, at),
        Command::SetUserStatus { org_id, user_id, status } => identity::set_status(state, org_id, user_id, *status, at),
        Command::SetUserPassword { org_id, user_id, password_hash } => {
            identity::set_password(state, org_id, user_id, password_hash, at)
        }
        Command::DeleteUser { org_id, user_id } => identity::delete_user(state, org_id, user_id),
        Command::SignOutEverywhere { user_id } => identity::sign_out_everywhere(state, user_id, at),
        Command::EnrollTotp { user_id, secret, recovery_code_hashes } => {
            identity::enroll_totp(state, user_id, secret, recovery_code_hashes)
        }
        Command::UseTotpStep { user_id, step, confirm } => identity::use_totp_step(state, user_id, *step, *confirm),
        Command::UseRecoveryCode { user_id, code_hash } => identity::use_recovery_code(state, user_id, code_hash),
        Command::DisableTotp { user_id } => identity::disable_totp(state, user_id, at),
        Command::SignInAttempt { username, source, user_id, password_ok, policy } => {
            identity::sign_in_attempt(state, username, source, *user_id, *password_ok, policy, at)
        }
        Command::ClearSignInThrottle { username } => identity::clear_throttle(state, username),
        Command::CreateClient(client) => tokens::create_client(state, client),
        Command::RotateClientSecret { org_id, client_id, new_secret_hash, old_valid_until_secs } => {
            tokens::rotate_client_secret(state, org_id, client_id, new_secret_hash, *old_valid_until_secs)
        }
        Command::RevokeClient { org_id, client_id } => tokens::revoke_client(state, org_id, client_id),
        Command::PutSigningKey(key) => {
            state::put(state, keys::signing_key(&key.kid), key)?;
            state.credentials_changed();
            Ok(Outcome::Done)
        }
        Command::RotateSigningKey { key, retire_after_secs } => {
            tokens::rotate_signing_key(state, key, *retire_after_secs)
        }
        Command::PurgeSigningKeys { now_secs } => tokens::purge_signing_keys(state, *now_secs),
        Command::RevokeToken { jti, exp_secs, .. } => tokens::revoke_token(state, jti, *exp_secs),
        Command::PurgeRevocations { before_secs } => tokens::purge_revocations(state, *before_secs),
        Command::StoreRefreshToken { token, record } => tokens::store_refresh(state, token, record),
        Command::RotateRefreshToken { old, new, record } => tokens::rotate_refresh(state, old, new, record),
        Command::RevokeRefreshFamily { family } => {
            state::put(state, keys::revoked_family(family), &at)?;
            state.credentials_changed();
            Ok(Outcome::Done)
        }
        Command::CreateInvitation { token, invitation } => identity::create_invitation(state, token, invitation),
        Command::RedeemInvitation { token, user } => identity::redeem_invitation(state, token, user, at),
        Command::ClaimIdempotencyKey { scoped_key, record } => {
            reports::claim_idempotency_key(state, scoped_key, record, at)
        }
        Command::ReleaseIdempotencyKey { scoped_key, fingerprint } => {
            reports::release_idempotency_key(state, scoped_key, fingerprint)
        }
        Command::PurgeIdempotencyKeys { now_ms } => reports::purge_idempotency_keys(state, *now_ms),
        Command::StoreReport { report, images } => reports::store_report(state, report, images, at),
        Command::EraseSubject { org_id, subject } => reports::erase_subject(state, org_id, subject, at, &req.actor),
        Command::CreateConsoleSession { id_hash, session } => console::create(state, id_hash, session),
        Command::EndConsoleSession { id_hash, .. } => console::end(state, id_hash),
        Command::PurgeConsoleSessions { now_ms } => console::purge(state, *now_ms),
        Command::Audit(event) => {
            audit::append(state, event, at)?;
            Ok(Outcome::Done)
        }
        Command::PurgeAppliedRequests { before_ms } => {
            state.delete_range(
                keys::APPLIED_REQUEST.as_bytes().to_vec(),
                keys::applied_request(*before_ms, &uuid::Uuid::nil()),
            );
            Ok(Outcome::Done)
        }
        Command::RestoreRecords { records, replace, into_new_cluster } => {
            organizations::restore_records(state, records, *replace, *into_new_cluster)
        }
    }
}
