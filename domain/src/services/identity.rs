//! People and who is calling: authentication of every request (from the replicated state, not
//! the token alone), sign-in with throttling and a second factor, users and their roles,
//! invitations, sign-out.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::passwords::Passwords;
use super::tokens::{claims_for, AccessClaims, PrincipalKind, TokenService};
use super::{now_ms, now_secs, Context, ServiceError};
use crate::command::Command;
use crate::error::{Entity, ErrorCode, Rejection};
use crate::rbac::{may_grant, roles_have, scopes_have, Permission};
use crate::reads;
use crate::records::{Invitation, OrgStatus, RefreshRecord, Role, ThrottlePolicy, User, UserStatus};

/// Refresh tokens live this long (seconds) unless rotated earlier.
pub const REFRESH_TTL_SECS: i64 = 8 * 3600;
pub const REFRESH_PREFIX: &str = "dgr_";
pub const INVITATION_PREFIX: &str = "dgi_";
const MAX_INVITATION_SECS: u64 = 14 * 24 * 3600;

/// The authenticated caller, decided from the replicated state on every request.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Principal {
    pub kind: PrincipalKind,
    /// The user id, or the client id.
    pub id: String,
    pub org_id: Uuid,
    /// The user's roles as the replicated state has them now (empty for a client).
    pub roles: Vec<Role>,
    pub scopes: Vec<String>,
    pub client_id: String,
    /// Expiry of the access token (unix seconds); `None` for a static API key.
    pub token_expires_at: Option<i64>,
    #[serde(skip)]
    pub jti: Option<String>,
    /// Whether a second factor was used to sign in.
    pub mfa: bool,
}

impl Principal {
    /// Users are authorised by their roles, clients by their scopes.
    pub fn require(&self, permission: Permission) -> Result<(), ServiceError> {
        let allowed = match self.kind {
            PrincipalKind::User => roles_have(&self.roles, permission),
            PrincipalKind::Client => scopes_have(&self.scopes, permission),
        };
        if allowed {
            Ok(())
        } else {
            Err(ServiceError::forbidden("your roles or scopes do not allow this operation"))
        }
    }

    pub fn is_platform_admin(&self) -> bool {
        self.kind == PrincipalKind::User && self.roles.contains(&Role::PlatformAdmin)
    }

    /// Tenant isolation: a caller sees only its own organisation unless it is a platform admin.
    /// Another organisation's resources are reported as not found, so their ids are not confirmed.
    pub fn require_org(&self, org_id: &Uuid, what: Entity) -> Result<(), ServiceError> {
        if self.is_platform_admin() || &self.org_id == org_id {
            Ok(())
        } else {
            Err(ServiceError::not_found(what))
        }
    }

    /// Patient data (reports, images, subjects) stays inside its organisation: not even a
    /// platform administrator reads another organisation's.
    pub fn require_own_org(&self, org_id: &Uuid, what: Entity) -> Result<(), ServiceError> {
        if &self.org_id == org_id {
            Ok(())
        } else {
            Err(ServiceError::not_found(what))
        }
    }

    /// A client authenticated by its own secret (an API key, or HTTP Basic at the OAuth endpoints).
    pub fn of_client(client: crate::records::Client) -> Principal {
        Principal {
            kind: PrincipalKind::Client,
            id: client.client_id.clone(),
            org_id: client.org_id,
            roles: Vec::new(),
            scopes: client.scopes,
            client_id: client.client_id,
            token_expires_at: None,
            jti: None,
            mfa: false,
        }
    }

    /// The actor recorded in commands and the audit trail.
    pub fn actor(&self) -> String {
        match self.kind {
            PrincipalKind::User if self.is_platform_admin() => format!("platform:{}", self.id),
            PrincipalKind::User => format!("user:{}", self.id),
            PrincipalKind::Client => format!("client:{}", self.id),
        }
    }
}

/// A credential as presented.
pub enum Credential<'a> {
    AccessToken(&'a str),
    ApiKey(&'a str),
}

/// What a sign-in returns.
pub struct Tokens {
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: Option<String>,
    pub scope: String,
}

/// How a user signs in.
pub struct SignIn<'a> {
    pub username: &'a str,
    pub password: String,
    /// A TOTP code, or a recovery code, when the user has a second factor.
    pub otp: Option<&'a str>,
    /// The client address the attempt came from (throttling is counted per source).
    pub source: &'a str,
}

#[derive(Debug, Clone)]
pub struct IdentitySettings {
    pub throttle: ThrottlePolicy,
}

pub struct Identity {
    pub ctx: Context,
    pub tokens: Arc<TokenService>,
    pub passwords: Passwords,
    pub settings: IdentitySettings,
}

fn bad_credentials() -> ServiceError {
    ServiceError::from(Rejection::BadCredentials)
}

/// SHA-256 of a client secret, hex (the form a secret is kept in).
pub fn hash_secret(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

impl Identity {
    /// Who is calling. A token's signature is checked once; **what its holder may do is decided
    /// from the replicated records** (user status and roles, organisation status, revocations,
    /// sign-outs, client scopes) and decided again as soon as any credential changes. A refusal
    /// from local state is confirmed after catching up with the leader: the user or key may have
    /// been created through another node a moment ago.
    pub async fn authenticate(&self, credential: Credential<'_>) -> Result<Principal, ServiceError> {
        match self.authenticate_locally(&credential) {
            Err(e) if e.code == ErrorCode::Unauthorized && self.worth_catching_up(&credential) => {
                if self.ctx.replicator.linearize().await.is_err() {
                    return Err(e);
                }
                self.authenticate_locally(&credential)
            }
            decided => decided,
        }
    }

    /// Only credentials that could be valid are worth a round trip to the leader: a signed
    /// token, or a key of the right shape (garbage must not make the node work for it).
    fn worth_catching_up(&self, credential: &Credential<'_>) -> bool {
        match credential {
            Credential::AccessToken(token) => self.tokens.verify(token, now_secs()).is_ok(),
            Credential::ApiKey(key) => key.starts_with(super::credentials::SECRET_PREFIX) && key.len() < 128,
        }
    }

    pub(crate) fn authenticate_locally(&self, credential: &Credential<'_>) -> Result<Principal, ServiceError> {
        match *credential {
            Credential::AccessToken(token) => {
                let verified = self.tokens.verify(token, now_secs())?;
                // Read the epoch before deciding: a revocation applied meanwhile bumps it again.
                let epoch = self.ctx.state.credentials_epoch();
                if let Some(p) = verified.decided_at(epoch) {
                    return Ok(p);
                }
                let p = self.decide(&verified.claims)?;
                verified.remember(epoch, p.clone());
                Ok(p)
            }
            Credential::ApiKey(key) => self.api_key(key),
        }
    }

    fn decide(&self, claims: &AccessClaims) -> Result<Principal, ServiceError> {
        let revoked = |what: &str| {
            metrics::counter!("dermagate_token_verifications_total", "outcome" => "revoked").increment(1);
            Err(ServiceError::invalid_token(format!("token revoked: {what}")))
        };
        let state = self.ctx.state.as_ref();
        let keyer = self.ctx.keyer()?;
        if reads::is_jti_revoked(state, &keyer, &claims.jti)? {
            return revoked("token");
        }
        if claims.fam.is_some_and(|f| reads::is_family_revoked(state, &f).unwrap_or(true)) {
            return revoked("its refresh-token family");
        }
        if !reads::organization(state, &claims.org_id)?.is_some_and(|o| o.status == OrgStatus::Active) {
            return revoked("organization suspended or removed");
        }
        let mfa = claims.amr.iter().any(|m| m == "otp");
        match claims.kind {
            PrincipalKind::User => {
                let id: Uuid = claims.sub.parse().map_err(|_| ServiceError::invalid_token("invalid subject"))?;
                let Some(user) =
                    reads::user(state, &id)?.filter(|u| u.status == UserStatus::Active && u.org_id == claims.org_id)
                else {
                    return revoked("user disabled or removed");
                };
                if claims.iat_ms < user.tokens_valid_after_ms {
                    return revoked("signed out");
                }
                Ok(Principal {
                    kind: PrincipalKind::User,
                    id: claims.sub.clone(),
                    org_id: user.org_id,
                    roles: self.effective_roles(&user, mfa)?,
                    scopes: Vec::new(),
                    client_id: claims.client_id.clone(),
                    token_expires_at: Some(claims.exp),
                    jti: Some(claims.jti.clone()),
                    mfa,
                })
            }
            PrincipalKind::Client => {
                let Some(client) = reads::client(state, &keyer, &claims.client_id)?
                    .filter(|c| !c.revoked && c.org_id == claims.org_id)
                else {
                    return revoked("client revoked");
                };
                let granted: Vec<String> = claims
                    .scope
                    .split_whitespace()
                    .filter(|s| client.scopes.iter().any(|c| c == s))
                    .map(String::from)
                    .collect();
                Ok(Principal {
                    kind: PrincipalKind::Client,
                    id: client.client_id.clone(),
                    org_id: client.org_id,
                    roles: Vec::new(),
                    scopes: granted,
                    client_id: client.client_id,
                    token_expires_at: Some(claims.exp),
                    jti: Some(claims.jti.clone()),
                    mfa: false,
                })
            }
        }
    }

    /// The roles a user acts with now: administrator roles need a second factor when the
    /// platform requires one (an administrator without it keeps only non-admin roles, enough to
    /// enrol one).
    pub(crate) fn effective_roles(&self, user: &User, mfa: bool) -> Result<Vec<Role>, ServiceError> {
        let required = reads::platform_settings(self.ctx.state.as_ref())?.require_admin_mfa;
        if required && !mfa {
            return Ok(user.roles.iter().copied().filter(|r| !r.is_admin()).collect());
        }
        Ok(user.roles.clone())
    }

    /// A client key used directly as a static API key: the same checks as its tokens.
    fn api_key(&self, key: &str) -> Result<Principal, ServiceError> {
        let invalid = || {
            metrics::counter!("dermagate_auth_failures_total", "reason" => "bad_api_key").increment(1);
            ServiceError::invalid_token("invalid or revoked client key")
        };
        let state = self.ctx.state.as_ref();
        let keyer = self.ctx.keyer()?;
        let hash = hash_secret(key);
        let client = reads::client_by_secret_hash(state, &keyer, &hash)?.ok_or_else(invalid)?;
        let org_active = reads::organization(state, &client.org_id)?.is_some_and(|o| o.is_active());
        if client.revoked || !client.accepts(&hash, now_secs()) || !org_active {
            return Err(invalid());
        }
        Ok(Principal::of_client(client))
    }

    /// Checks a username, password and (when the user has one) second factor. The attempt is
    /// decided in the replicated state machine, so concurrent attempts on different nodes are
    /// judged in one order; unknown users, wrong passwords and throttled attempts cost the same.
    pub async fn sign_in(&self, s: SignIn<'_>) -> Result<Tokens, ServiceError> {
        let (user, mfa) = self.check_sign_in(s).await?;
        self.issue_user_tokens(&user, Uuid::new_v4(), mfa).await
    }

    /// The one sign-in decision (password, second factor, throttling in log order), shared by
    /// the API's token sign-in and the console's sessions: the user and whether a second factor
    /// was used.
    pub(crate) async fn check_sign_in(&self, s: SignIn<'_>) -> Result<(User, bool), ServiceError> {
        if s.username.len() > 256 || s.password.len() > 1024 {
            return Err(bad_credentials());
        }
        // Always catch up (not only on a miss): a miss that cost an extra round trip would tell
        // an attacker which usernames exist.
        let _ = self.ctx.replicator.linearize().await;
        let state = self.ctx.state.as_ref();
        let keyer = self.ctx.keyer()?;
        let user = reads::user_by_username(state, &keyer, s.username)?;
        let valid = self.passwords.verify(s.password, user.as_ref().map(|u| u.password_hash.clone())).await?;
        let usable = match &user {
            Some(u) => {
                u.status == UserStatus::Active && reads::organization(state, &u.org_id)?.is_some_and(|o| o.is_active())
            }
            None => false,
        };
        let mut second_factor = SecondFactor::None;
        if valid && usable {
            if let Some(u) = user.as_ref().filter(|u| u.has_confirmed_totp()) {
                second_factor = self.check_second_factor(u, s.otp)?;
                if second_factor == SecondFactor::Missing {
                    return Err(ServiceError::unauthorized(
                        "mfa_required",
                        "a second-factor code is required (field otp)",
                    ));
                }
            }
        }
        let password_ok = valid && usable && second_factor != SecondFactor::Wrong;
        let attempt = Command::SignInAttempt {
            username: s.username.to_string(),
            source: s.source.to_string(),
            user_id: user.as_ref().map(|u| u.id),
            password_ok,
            policy: self.settings.throttle,
        };
        match self.ctx.commit_outcome("anonymous", attempt).await?.into_result() {
            Ok(()) => {}
            Err(r @ Rejection::SignInThrottled { .. }) => {
                metrics::counter!("dermagate_auth_failures_total", "reason" => "throttled").increment(1);
                return Err(r.into());
            }
            Err(_) => {
                metrics::counter!("dermagate_auth_failures_total", "reason" => "bad_credentials").increment(1);
                let source_key = keyer.sign_in_source(s.username, s.source);
                let now_waiting =
                    crate::state::get::<crate::records::FailureCount>(self.ctx.state.as_ref(), &source_key)?
                        .is_some_and(|f| f.waiting(now_ms()));
                if now_waiting {
                    // This failure engaged the throttle (a "lockout" of the guessing address).
                    metrics::counter!("dermagate_lockouts_total").increment(1);
                    tracing::warn!("sign-in throttled after repeated failures from one address");
                }
                return Err(bad_credentials());
            }
        }
        let user = user.ok_or_else(bad_credentials)?;
        let mfa = matches!(second_factor, SecondFactor::Step(_) | SecondFactor::Recovery(_));
        match second_factor {
            SecondFactor::Step(step) => {
                self.ctx
                    .commit(
                        &format!("user:{}", user.id),
                        Command::UseTotpStep { user_id: user.id, step, confirm: false },
                    )
                    .await?;
            }
            SecondFactor::Recovery(code_hash) => {
                self.ctx
                    .commit(&format!("user:{}", user.id), Command::UseRecoveryCode { user_id: user.id, code_hash })
                    .await?;
            }
            _ => {}
        }
        Ok((user, mfa))
    }

    fn check_second_factor(&self, user: &User, otp: Option<&str>) -> Result<SecondFactor, ServiceError> {
        let Some(code) = otp.map(str::trim).filter(|c| !c.is_empty()) else { return Ok(SecondFactor::Missing) };
        let Some(totp) = &user.totp else { return Ok(SecondFactor::Wrong) };
        if let Some(step) = super::totp::matching_step(&totp.secret, code, now_secs() as u64)? {
            return Ok(if step > totp.last_step { SecondFactor::Step(step) } else { SecondFactor::Wrong });
        }
        let hash = super::totp::hash_recovery_code(code);
        Ok(if totp.recovery_code_hashes.contains(&hash) { SecondFactor::Recovery(hash) } else { SecondFactor::Wrong })
    }

    /// An access token and a fresh refresh token of `family` for `user`.
    pub async fn issue_user_tokens(&self, user: &User, family: Uuid, mfa: bool) -> Result<Tokens, ServiceError> {
        let now = now_ms();
        let mut claims =
            claims_for(PrincipalKind::User, user.id.to_string(), "dermagate-login".into(), user.org_id, String::new());
        claims.fam = Some(family);
        claims.amr = if mfa { vec!["pwd".into(), "otp".into()] } else { vec!["pwd".into()] };
        let (access, claims) = self.tokens.issue(claims, now)?;
        let refresh = new_token(REFRESH_PREFIX);
        let record = RefreshRecord {
            family,
            user_id: user.id,
            issued_at_ms: now,
            expires_at_secs: now / 1000 + REFRESH_TTL_SECS,
            rotated: false,
            mfa,
        };
        self.ctx
            .commit(&format!("user:{}", user.id), Command::StoreRefreshToken { token: refresh.clone(), record })
            .await?;
        Ok(Tokens {
            access_token: access,
            expires_in: (claims.exp - claims.iat) as u64,
            refresh_token: Some(refresh),
            scope: String::new(),
        })
    }

    /// Rotation on every use; a reused (already rotated) refresh token revokes its whole family.
    pub async fn refresh(&self, presented: &str) -> Result<Tokens, ServiceError> {
        let invalid =
            || ServiceError::unauthorized("invalid_grant", "the refresh token is invalid, expired or revoked");
        let keyer = self.ctx.keyer()?;
        let state = self.ctx.state.clone();
        let record = self
            .ctx
            .read_fresh(|| Ok(reads::refresh_record(state.as_ref(), &keyer, presented)?))
            .await?
            .ok_or_else(invalid)?;
        if reads::is_family_revoked(state.as_ref(), &record.family)? || record.expires_at_secs < now_secs() {
            return Err(invalid());
        }
        let user = reads::user(state.as_ref(), &record.user_id)?.ok_or_else(invalid)?;
        let org_ok = reads::organization(state.as_ref(), &user.org_id)?.is_some_and(|o| o.is_active());
        if user.status != UserStatus::Active || !org_ok || record.issued_at_ms < user.tokens_valid_after_ms {
            return Err(invalid());
        }
        let now = now_ms();
        let mut claims =
            claims_for(PrincipalKind::User, user.id.to_string(), "dermagate-login".into(), user.org_id, String::new());
        claims.fam = Some(record.family);
        claims.amr = if record.mfa { vec!["pwd".into(), "otp".into()] } else { vec!["pwd".into()] };
        let (access, claims) = self.tokens.issue(claims, now)?;
        let refresh = new_token(REFRESH_PREFIX);
        let new_record = RefreshRecord {
            issued_at_ms: now,
            expires_at_secs: now / 1000 + REFRESH_TTL_SECS,
            rotated: false,
            ..record.clone()
        };
        let command =
            Command::RotateRefreshToken { old: presented.to_string(), new: refresh.clone(), record: new_record };
        match self.ctx.commit(&format!("user:{}", user.id), command).await {
            Ok(()) => Ok(Tokens {
                access_token: access,
                expires_in: (claims.exp - claims.iat) as u64,
                refresh_token: Some(refresh),
                scope: String::new(),
            }),
            Err(e) if e.rejection == Some(Rejection::RefreshReused) => {
                metrics::counter!("dermagate_revocations_total", "kind" => "refresh_family").increment(1);
                tracing::warn!(family = %record.family, "refresh token reuse: family revoked");
                Err(invalid())
            }
            Err(e) => Err(e),
        }
    }

    // ---- users ----

    /// The organisation must exist and be visible to the caller.
    async fn visible_org(&self, principal: &Principal, org_id: &Uuid) -> Result<(), ServiceError> {
        principal.require_org(org_id, Entity::Organization)?;
        let state = self.ctx.state.clone();
        self.ctx
            .read_fresh(|| Ok(reads::organization(state.as_ref(), org_id)?))
            .await?
            .ok_or_else(|| ServiceError::not_found(Entity::Organization))?;
        Ok(())
    }

    pub fn check_grantable(principal: &Principal, roles: &[Role]) -> Result<Vec<Role>, ServiceError> {
        if roles.is_empty() {
            return Err(ServiceError::validation("roles", "required", "at least one role is required"));
        }
        if let Some(role) = roles.iter().find(|r| !may_grant(&principal.roles, **r)) {
            return Err(ServiceError::forbidden(format!("you may not grant the role {}", role.name())));
        }
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        Ok(roles)
    }

    pub async fn create_user(
        &self,
        principal: &Principal,
        org_id: Uuid,
        username: String,
        password: String,
        roles: &[Role],
    ) -> Result<User, ServiceError> {
        principal.require(Permission::UsersManage)?;
        self.visible_org(principal, &org_id).await?;
        let username = super::validate::username(&username)?;
        self.passwords.check_policy(&password, &username)?;
        let roles = Self::check_grantable(principal, roles)?;
        let user = User {
            id: Uuid::new_v4(),
            org_id,
            username,
            roles,
            password_hash: self.passwords.hash(password).await?,
            status: UserStatus::Active,
            tokens_valid_after_ms: 0,
            created_at_ms: now_ms(),
            totp: None,
        };
        self.ctx.commit(&principal.actor(), Command::CreateUser(user.clone())).await?;
        tracing::info!(user_id = %user.id, org_id = %org_id, "user created");
        Ok(user)
    }

    pub async fn list_users(&self, principal: &Principal, org_id: Uuid) -> Result<Vec<User>, ServiceError> {
        principal.require(Permission::UsersRead)?;
        self.visible_org(principal, &org_id).await?;
        self.ctx.replicator.linearize().await?;
        Ok(reads::users(self.ctx.state.as_ref())?.into_iter().filter(|u| u.org_id == org_id).collect())
    }

    pub async fn get_user(&self, principal: &Principal, org_id: Uuid, id: Uuid) -> Result<User, ServiceError> {
        principal.require(Permission::UsersRead)?;
        self.visible_org(principal, &org_id).await?;
        self.ctx.replicator.linearize().await?;
        self.user_of(&org_id, &id)
    }

    fn user_of(&self, org_id: &Uuid, id: &Uuid) -> Result<User, ServiceError> {
        reads::user(self.ctx.state.as_ref(), id)?
            .filter(|u| &u.org_id == org_id)
            .ok_or_else(|| ServiceError::not_found(Entity::User))
    }

    /// Changes roles or status (disable; `active` also clears the username's sign-in throttle).
    /// Nobody changes their own roles or status, and only a platform administrator touches a
    /// platform administrator.
    pub async fn change_user(
        &self,
        principal: &Principal,
        org_id: Uuid,
        id: Uuid,
        roles: Option<&[Role]>,
        status: Option<UserStatus>,
    ) -> Result<User, ServiceError> {
        principal.require_org(&org_id, Entity::User)?;
        principal.require(Permission::UsersManage)?;
        self.ctx.replicator.linearize().await?;
        let user = self.user_of(&org_id, &id)?;
        if principal.id == id.to_string() {
            return Err(ServiceError::forbidden("you cannot change your own roles or status"));
        }
        if user.roles.contains(&Role::PlatformAdmin) && !principal.is_platform_admin() {
            return Err(ServiceError::forbidden("only a platform administrator may change a platform administrator"));
        }
        let actor = principal.actor();
        if let Some(roles) = roles {
            let roles = Self::check_grantable(principal, roles)?;
            self.ctx.commit(&actor, Command::SetUserRoles { org_id, user_id: id, roles }).await?;
        }
        if let Some(status) = status {
            self.ctx.commit(&actor, Command::SetUserStatus { org_id, user_id: id, status }).await?;
            if status == UserStatus::Active {
                self.ctx.commit(&actor, Command::ClearSignInThrottle { username: user.username.clone() }).await?;
            }
        }
        self.user_of(&org_id, &id)
    }

    /// A user changes their own password: the current one must be given (a stolen token alone
    /// is not enough), and every other session ends.
    pub async fn change_own_password(
        &self,
        principal: &Principal,
        org_id: Uuid,
        id: Uuid,
        current: String,
        new: String,
    ) -> Result<User, ServiceError> {
        principal.require_org(&org_id, Entity::User)?;
        if principal.id != id.to_string() {
            return Err(ServiceError::forbidden(
                "only the user may change their password (administrators disable and re-invite)",
            ));
        }
        let user = self.user_of(&org_id, &id)?;
        if !self.passwords.verify(current, Some(user.password_hash.clone())).await? {
            return Err(ServiceError::validation("currentPassword", "matches", "the current password is not correct"));
        }
        self.passwords.check_policy(&new, &user.username)?;
        let password_hash = self.passwords.hash(new).await?;
        self.ctx.commit(&principal.actor(), Command::SetUserPassword { org_id, user_id: id, password_hash }).await?;
        self.user_of(&org_id, &id)
    }

    pub async fn delete_user(&self, principal: &Principal, org_id: Uuid, id: Uuid) -> Result<(), ServiceError> {
        principal.require(Permission::UsersManage)?;
        principal.require_org(&org_id, Entity::User)?;
        self.ctx.replicator.linearize().await?;
        let user = self.user_of(&org_id, &id)?;
        if principal.id == id.to_string() {
            return Err(ServiceError::forbidden("you cannot delete yourself"));
        }
        if user.roles.contains(&Role::PlatformAdmin) && !principal.is_platform_admin() {
            return Err(ServiceError::forbidden("only a platform administrator may delete a platform administrator"));
        }
        self.ctx.commit(&principal.actor(), Command::DeleteUser { org_id, user_id: id }).await
    }

    /// Revokes every token and refresh token of a user, on every node. Another organisation's
    /// user is not found, whatever the caller's role (no cross-organisation oracle).
    pub async fn sign_out_everywhere(&self, principal: &Principal, id: Uuid) -> Result<(), ServiceError> {
        let state = self.ctx.state.clone();
        let user = self
            .ctx
            .read_fresh(|| Ok(reads::user(state.as_ref(), &id)?))
            .await?
            .ok_or_else(|| ServiceError::not_found(Entity::User))?;
        principal.require_org(&user.org_id, Entity::User)?;
        if principal.id != id.to_string() {
            principal.require(Permission::UsersManage)?;
        }
        self.ctx.commit(&principal.actor(), Command::SignOutEverywhere { user_id: id }).await?;
        metrics::counter!("dermagate_revocations_total", "kind" => "sign_out").increment(1);
        Ok(())
    }

    // ---- invitations ----

    pub async fn invite(
        &self,
        principal: &Principal,
        org_id: Uuid,
        roles: &[Role],
        expires_in_secs: Option<u64>,
    ) -> Result<(String, Invitation), ServiceError> {
        principal.require(Permission::UsersManage)?;
        self.visible_org(principal, &org_id).await?;
        let roles = Self::check_grantable(principal, roles)?;
        let validity = expires_in_secs.unwrap_or(72 * 3600);
        if validity == 0 || validity > MAX_INVITATION_SECS {
            return Err(ServiceError::validation(
                "expiresInSecs",
                "range",
                format!("must be between 1 and {MAX_INVITATION_SECS} seconds"),
            ));
        }
        let created_by: Uuid =
            principal.id.parse().map_err(|_| ServiceError::forbidden("only people invite people"))?;
        let token = new_token(INVITATION_PREFIX);
        let invitation =
            Invitation { org_id, roles, expires_at_ms: now_ms() + validity as i64 * 1000, used: false, created_by };
        self.ctx
            .commit(
                &principal.actor(),
                Command::CreateInvitation { token: token.clone(), invitation: invitation.clone() },
            )
            .await?;
        Ok((token, invitation))
    }

    /// Self-service registration from an invitation.
    pub async fn register(&self, token: &str, username: String, password: String) -> Result<User, ServiceError> {
        let invalid = || ServiceError::from(Rejection::InvitationInvalid);
        let keyer = self.ctx.keyer()?;
        let state = self.ctx.state.clone();
        let inv =
            self.ctx.read_fresh(|| Ok(reads::invitation(state.as_ref(), &keyer, token)?)).await?.ok_or_else(invalid)?;
        let username = super::validate::username(&username)?;
        self.passwords.check_policy(&password, &username)?;
        let user = User {
            id: Uuid::new_v4(),
            org_id: inv.org_id,
            username,
            roles: inv.roles.clone(),
            password_hash: self.passwords.hash(password).await?,
            status: UserStatus::Active,
            tokens_valid_after_ms: 0,
            created_at_ms: now_ms(),
            totp: None,
        };
        self.ctx
            .commit("anonymous", Command::RedeemInvitation { token: token.to_string(), user: user.clone() })
            .await?;
        Ok(user)
    }

    // ---- second factor ----

    /// Starts enrolment of a TOTP second factor for the caller: the secret and recovery codes
    /// are returned once; the factor counts from the first code confirmed.
    pub async fn enroll_totp(&self, principal: &Principal) -> Result<(String, String, Vec<String>), ServiceError> {
        let user_id = self.own_user_id(principal)?;
        let user =
            reads::user(self.ctx.state.as_ref(), &user_id)?.ok_or_else(|| ServiceError::not_found(Entity::User))?;
        let secret = super::totp::new_secret();
        let (codes, hashes) = super::totp::new_recovery_codes();
        let command = Command::EnrollTotp { user_id, secret: secret.clone(), recovery_code_hashes: hashes };
        self.ctx.commit(&principal.actor(), command).await?;
        let uri = super::totp::provisioning_uri(&secret, "dermagate", &user.username);
        Ok((super::totp::encoded_secret(&secret), uri, codes))
    }

    pub async fn confirm_totp(&self, principal: &Principal, code: &str) -> Result<(), ServiceError> {
        let user_id = self.own_user_id(principal)?;
        let user =
            reads::user(self.ctx.state.as_ref(), &user_id)?.ok_or_else(|| ServiceError::not_found(Entity::User))?;
        let totp = user.totp.ok_or_else(|| ServiceError::validation("code", "enrolled", "start an enrolment first"))?;
        let step = super::totp::matching_step(&totp.secret, code, now_secs() as u64)?
            .ok_or_else(|| ServiceError::validation("code", "valid_code", "the code is not valid now"))?;
        self.ctx.commit(&principal.actor(), Command::UseTotpStep { user_id, step, confirm: true }).await
    }

    /// Removes a user's second factor: the user (with a current code) or an administrator of
    /// the organisation (who lost their device).
    pub async fn disable_totp(&self, principal: &Principal, user_id: Uuid) -> Result<(), ServiceError> {
        let user =
            reads::user(self.ctx.state.as_ref(), &user_id)?.ok_or_else(|| ServiceError::not_found(Entity::User))?;
        principal.require_org(&user.org_id, Entity::User)?;
        if principal.id != user_id.to_string() {
            principal.require(Permission::UsersManage)?;
        }
        self.ctx.commit(&principal.actor(), Command::DisableTotp { user_id }).await
    }

    fn own_user_id(&self, principal: &Principal) -> Result<Uuid, ServiceError> {
        if principal.kind != PrincipalKind::User {
            return Err(ServiceError::forbidden("only people have a second factor"));
        }
        principal.id.parse().map_err(|_| ServiceError::forbidden("invalid user"))
    }

    /// The platform's settings (platform administrators).
    pub fn platform_settings(&self, principal: &Principal) -> Result<crate::command::PlatformSettings, ServiceError> {
        principal.require(Permission::ClusterRead)?;
        Ok(reads::platform_settings(self.ctx.state.as_ref())?)
    }

    /// The platform's policy on second factors.
    pub async fn set_require_admin_mfa(&self, principal: &Principal, required: bool) -> Result<(), ServiceError> {
        principal.require(Permission::ClusterManage)?;
        if required && !principal.mfa {
            return Err(ServiceError::new(
                ErrorCode::Conflict,
                "enrol and use a second factor yourself before requiring one",
            ));
        }
        let settings = crate::command::PlatformSettings { require_admin_mfa: required };
        self.ctx.commit(&principal.actor(), Command::SetPlatformSettings(settings)).await
    }

    /// How long a rotated refresh token's family or an access token may live: for docs.
    pub fn access_ttl(&self) -> Duration {
        self.tokens.settings().access_ttl
    }
}

/// The platform operator mints a client key (a machine credential with data scopes) inside
/// another organisation only when it says so (`breakGlass`); that organisation's audit trail
/// records it, as it records every user or invitation the platform creates there. People are
/// best onboarded by invitation, so the platform never knows their password.
pub fn require_break_glass(principal: &Principal, org_id: &Uuid, break_glass: bool) -> Result<(), ServiceError> {
    if principal.org_id != *org_id && !break_glass {
        return Err(ServiceError::forbidden(
            "a platform administrator creates credentials in another organisation only with breakGlass: true, \
             which that organisation's audit trail records",
        ));
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum SecondFactor {
    None,
    Missing,
    Wrong,
    Step(u64),
    Recovery(String),
}

/// A random opaque token with a recognisable prefix.
pub fn new_token(prefix: &str) -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}
