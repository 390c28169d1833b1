//! The audit trail, appended by apply itself: every security-relevant command writes its audit
//! record in the same atomic batch as its effect, so **there is no change without its record and
//! no record without its change**. Each organisation has its own hash chain (its auditors can
//! verify it); platform events go to the platform operator's chain.

use uuid::Uuid;

use crate::command::{Command, Outcome, Request};
use crate::keys;
use crate::records::{AuditEvent, AuditRecord, User, PLATFORM_ORG_ID};
use crate::state::{self, StateError, StateWrite};

/// Appends `event` to its organisation's chain.
pub fn append(state: &mut impl StateWrite, event: &AuditEvent, at_ms: i64) -> Result<AuditRecord, StateError> {
    let head: Option<(u64, String)> = state::get(state, &keys::audit_head(&event.org_id))?;
    let (seq, prev_hash) = match head {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, AuditRecord::first_prev_hash()),
    };
    let hash = AuditRecord::compute_hash(seq, at_ms, event, &prev_hash);
    let record = AuditRecord { seq, at_ms, event: event.clone(), prev_hash, hash: hash.clone() };
    state::put(state, keys::audit(&event.org_id, seq), &record)?;
    state::put(state, keys::audit_head(&event.org_id), &(seq, hash))?;
    Ok(record)
}

fn org_of_user(state: &impl StateWrite, user_id: &Uuid) -> Result<Uuid, StateError> {
    Ok(state::get::<User>(state, &keys::user(user_id))?.map_or(PLATFORM_ORG_ID, |u| u.org_id))
}

fn outcome_name(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Done => "done".into(),
        Outcome::Rejected(r) => format!("rejected: {r}"),
    }
}

/// A credential created inside an organisation by the platform operator: the organisation's
/// trail names it as break-glass.
fn is_break_glass(actor: &str, org_id: &Uuid) -> bool {
    actor.starts_with("platform:") && *org_id != PLATFORM_ORG_ID
}

/// Writes the audit record of a security-relevant command (after it was applied).
pub fn record_command(state: &mut impl StateWrite, req: &Request, outcome: &Outcome) -> Result<(), StateError> {
    let ev = |action: &str, org_id: Uuid, target: String, detail: String| AuditEvent {
        action: action.to_string(),
        actor: req.actor.clone(),
        org_id,
        target,
        outcome: outcome_name(outcome),
        detail,
    };
    let event = match &req.command {
        Command::CreateOrganization(o) => ev("organization_created", o.id, o.id.to_string(), String::new()),
        Command::SetOrganizationStatus { id, status } => {
            ev("organization_status_changed", *id, id.to_string(), format!("status={status:?}"))
        }
        Command::UpdateOrganization { id, store_images, name } => ev(
            "organization_settings_changed",
            *id,
            id.to_string(),
            format!("store_images={store_images:?} renamed={}", name.is_some()),
        ),
        Command::SetPlatformSettings(s) => ev(
            "platform_settings_changed",
            PLATFORM_ORG_ID,
            "platform".into(),
            format!("require_admin_mfa={}", s.require_admin_mfa),
        ),
        Command::CreateUser(u) => ev(
            if is_break_glass(&req.actor, &u.org_id) { "user_created_break_glass" } else { "user_created" },
            u.org_id,
            u.id.to_string(),
            format!("roles={:?}", u.roles),
        ),
        Command::SetUserRoles { org_id, user_id, roles } => {
            ev("user_roles_changed", *org_id, user_id.to_string(), format!("roles={roles:?}"))
        }
        Command::SetUserStatus { org_id, user_id, status } => {
            ev("user_status_changed", *org_id, user_id.to_string(), format!("status={status:?}"))
        }
        Command::SetUserPassword { org_id, user_id, .. } => {
            ev("password_changed", *org_id, user_id.to_string(), String::new())
        }
        Command::DeleteUser { org_id, user_id } => ev("user_deleted", *org_id, user_id.to_string(), String::new()),
        Command::SignOutEverywhere { user_id } => {
            ev("signed_out_everywhere", org_of_user(state, user_id)?, user_id.to_string(), String::new())
        }
        Command::EnrollTotp { user_id, .. } => {
            ev("second_factor_enrolment_started", org_of_user(state, user_id)?, user_id.to_string(), String::new())
        }
        Command::UseTotpStep { user_id, confirm: true, .. } => {
            ev("second_factor_enrolled", org_of_user(state, user_id)?, user_id.to_string(), String::new())
        }
        Command::UseRecoveryCode { user_id, .. } => {
            ev("recovery_code_used", org_of_user(state, user_id)?, user_id.to_string(), String::new())
        }
        Command::DisableTotp { user_id } => {
            ev("second_factor_disabled", org_of_user(state, user_id)?, user_id.to_string(), String::new())
        }
        Command::SignInAttempt { user_id, password_ok, source, .. } => {
            let action = match (password_ok, outcome) {
                (_, Outcome::Rejected(crate::error::Rejection::SignInThrottled { .. })) => "sign_in_throttled",
                (true, Outcome::Done) => "sign_in_succeeded",
                _ => "sign_in_failed",
            };
            let (org, target) = match user_id {
                Some(id) => (org_of_user(state, id)?, id.to_string()),
                None => (PLATFORM_ORG_ID, "unknown user".to_string()),
            };
            let keyed_source = match super::keyer(state)? {
                Ok(k) => k.hash("source", source),
                Err(_) => String::new(),
            };
            ev(action, org, target, format!("source={}", &keyed_source[..keyed_source.len().min(16)]))
        }
        Command::ClearSignInThrottle { .. } => {
            ev("sign_in_throttle_cleared", PLATFORM_ORG_ID, "a username".into(), String::new())
        }
        Command::CreateClient(c) => ev(
            if is_break_glass(&req.actor, &c.org_id) { "client_created_break_glass" } else { "client_created" },
            c.org_id,
            c.client_id.clone(),
            format!("scopes={:?}", c.scopes),
        ),
        Command::RotateClientSecret { org_id, client_id, .. } => {
            ev("client_secret_rotated", *org_id, client_id.clone(), String::new())
        }
        Command::RevokeClient { org_id, client_id } => ev("client_revoked", *org_id, client_id.clone(), String::new()),
        Command::RotateSigningKey { key, .. } => {
            ev("signing_key_rotated", PLATFORM_ORG_ID, key.kid.clone(), String::new())
        }
        Command::PutSigningKey(key) => ev("signing_key_created", PLATFORM_ORG_ID, key.kid.clone(), String::new()),
        // The token's own organisation sees its revocation (the id is not recorded).
        Command::RevokeToken { org_id, .. } => ev("token_revoked", *org_id, "a token".into(), String::new()),
        Command::RotateRefreshToken { record, .. } if !outcome.is_done() => ev(
            "refresh_token_reused",
            org_of_user(state, &record.user_id)?,
            record.user_id.to_string(),
            "family revoked".into(),
        ),
        Command::RevokeRefreshFamily { family } => {
            ev("refresh_family_revoked", PLATFORM_ORG_ID, family.to_string(), String::new())
        }
        Command::CreateInvitation { invitation, .. } => ev(
            if is_break_glass(&req.actor, &invitation.org_id) {
                "invitation_created_break_glass"
            } else {
                "invitation_created"
            },
            invitation.org_id,
            invitation.created_by.to_string(),
            format!("roles={:?}", invitation.roles),
        ),
        Command::RedeemInvitation { user, .. } => {
            ev("invitation_redeemed", user.org_id, user.id.to_string(), String::new())
        }
        Command::CreateConsoleSession { session, .. } => {
            ev("console_session_started", session.org_id, session.user_id.to_string(), String::new())
        }
        Command::EndConsoleSession { org_id, user_id, .. } => {
            ev("console_session_ended", *org_id, user_id.to_string(), String::new())
        }
        Command::RestoreRecords { records, .. } => {
            ev("backup_restored", PLATFORM_ORG_ID, "cluster".into(), format!("records={}", records.len()))
        }
        _ => return Ok(()),
    };
    append(state, &event, req.at_ms)?;
    Ok(())
}
