//! Machines and their credentials: client keys of an organisation (the secret is shown once and
//! kept as a hash), the OAuth client-credentials grant, revocation (RFC 7009) and introspection
//! (RFC 7662). A platform administrator does not mint data-scoped keys inside a tenant unless
//! it says so explicitly (break-glass), which the tenant's audit trail records.

use std::time::Duration;

use uuid::Uuid;

use super::identity::{hash_secret, new_token, Identity, Principal, REFRESH_PREFIX};
use super::tokens::{claims_for, AccessClaims, PrincipalKind};
use super::{now_ms, now_secs, ServiceError};
use crate::command::Command;
use crate::error::{Entity, ErrorCode};
use crate::rbac::Permission;
use crate::reads;
use crate::records::{Client, ClientSecret, PLATFORM_ORG_ID};

/// Prefix of client secrets, so they are recognisable as API keys (and by secret scanners).
pub const SECRET_PREFIX: &str = "dgk_";
pub const CLIENT_ID_PREFIX: &str = "dgc_";
/// Scopes a client may hold; they map to permissions (see `rbac`).
pub const KNOWN_SCOPES: &[&str] = &["analyses:write", "reports:read", "subjects:erase"];
/// What a client gets when it asks for no scopes: erasure must be asked for explicitly.
pub const DEFAULT_SCOPES: &[&str] = &["analyses:write", "reports:read"];

/// A new client key and its secret (shown once).
pub struct NewClient {
    pub client: Client,
    pub secret: String,
}

fn new_client_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 10];
    rand::rng().fill_bytes(&mut bytes);
    format!("{CLIENT_ID_PREFIX}{}", hex::encode(bytes))
}

fn check_scopes(scopes: Option<Vec<String>>) -> Result<Vec<String>, ServiceError> {
    let mut scopes = scopes.unwrap_or_else(|| DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect());
    if let Some(bad) = scopes.iter().find(|s| !KNOWN_SCOPES.contains(&s.as_str())) {
        return Err(ServiceError::validation("scopes", "known_scope", format!("unknown scope {bad:?}")));
    }
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

/// Constant-time comparison of two hex hashes.
fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Identity {
    async fn active_org(&self, principal: &Principal, org_id: &Uuid) -> Result<(), ServiceError> {
        principal.require_org(org_id, Entity::Organization)?;
        let state = self.ctx.state.clone();
        let org = self
            .ctx
            .read_fresh(|| Ok(reads::organization(state.as_ref(), org_id)?))
            .await?
            .ok_or_else(|| ServiceError::not_found(Entity::Organization))?;
        if !org.is_active() {
            return Err(ServiceError::new(ErrorCode::Unprocessable, "the organization is suspended"));
        }
        Ok(())
    }

    /// Creates a client key. Inside another organisation a platform administrator must ask for
    /// break-glass, which that organisation's audit trail shows.
    pub async fn create_client(
        &self,
        principal: &Principal,
        org_id: Uuid,
        name: &str,
        scopes: Option<Vec<String>>,
        break_glass: bool,
    ) -> Result<NewClient, ServiceError> {
        principal.require(Permission::ClientsManage)?;
        self.active_org(principal, &org_id).await?;
        super::identity::require_break_glass(principal, &org_id, break_glass)?;
        let foreign = principal.org_id != org_id;
        let secret = new_token(SECRET_PREFIX);
        let client = Client {
            client_id: new_client_id(),
            org_id,
            name: super::validate::text("name", name, 200)?,
            scopes: check_scopes(scopes)?,
            secrets: vec![ClientSecret { hash: hash_secret(&secret), valid_until: None }],
            revoked: false,
            created_at_ms: now_ms(),
            created_by: principal.actor(),
        };
        self.ctx.commit(&principal.actor(), Command::CreateClient(client.clone())).await?;
        tracing::info!(client_id = %client.client_id, org_id = %org_id, break_glass = foreign, "client created");
        Ok(NewClient { client, secret })
    }

    pub async fn list_clients(&self, principal: &Principal, org_id: Uuid) -> Result<Vec<Client>, ServiceError> {
        principal.require(Permission::ClientsManage)?;
        principal.require_org(&org_id, Entity::Organization)?;
        self.ctx.replicator.linearize().await?;
        Ok(reads::clients(self.ctx.state.as_ref())?.into_iter().filter(|c| c.org_id == org_id).collect())
    }

    pub async fn get_client(
        &self,
        principal: &Principal,
        org_id: Uuid,
        client_id: &str,
    ) -> Result<Client, ServiceError> {
        principal.require(Permission::ClientsManage)?;
        principal.require_org(&org_id, Entity::Client)?;
        self.ctx.replicator.linearize().await?;
        self.client_of(&org_id, client_id)
    }

    fn client_of(&self, org_id: &Uuid, client_id: &str) -> Result<Client, ServiceError> {
        let keyer = self.ctx.keyer()?;
        reads::client(self.ctx.state.as_ref(), &keyer, client_id)?
            .filter(|c| &c.org_id == org_id)
            .ok_or_else(|| ServiceError::not_found(Entity::Client))
    }

    /// Revokes a client: its secrets and every token issued to it stop working on every node.
    pub async fn revoke_client(
        &self,
        principal: &Principal,
        org_id: Uuid,
        client_id: &str,
    ) -> Result<(), ServiceError> {
        principal.require(Permission::ClientsManage)?;
        principal.require_org(&org_id, Entity::Client)?;
        let keyer = self.ctx.keyer()?;
        let state = self.ctx.state.clone();
        self.ctx
            .read_fresh(|| Ok(reads::client(state.as_ref(), &keyer, client_id)?.filter(|c| c.org_id == org_id)))
            .await?
            .ok_or_else(|| ServiceError::not_found(Entity::Client))?;
        self.ctx.commit(&principal.actor(), Command::RevokeClient { org_id, client_id: client_id.to_string() }).await?;
        metrics::counter!("dermagate_revocations_total", "kind" => "client").increment(1);
        Ok(())
    }

    /// Issues a new secret; the previous ones keep working for `overlap`.
    pub async fn rotate_client_secret(
        &self,
        principal: &Principal,
        org_id: Uuid,
        client_id: &str,
        overlap: Duration,
    ) -> Result<NewClient, ServiceError> {
        principal.require(Permission::ClientsManage)?;
        self.active_org(principal, &org_id).await?;
        let client = self.client_of(&org_id, client_id)?;
        if client.revoked {
            return Err(ServiceError::new(ErrorCode::Unprocessable, "the client is revoked"));
        }
        let secret = new_token(SECRET_PREFIX);
        let command = Command::RotateClientSecret {
            org_id,
            client_id: client_id.to_string(),
            new_secret_hash: hash_secret(&secret),
            old_valid_until_secs: now_secs() + overlap.as_secs() as i64,
        };
        self.ctx.commit(&principal.actor(), command).await?;
        Ok(NewClient { client: self.client_of(&org_id, client_id)?, secret })
    }

    /// Authenticates a client by its id and secret (OAuth client authentication).
    pub async fn authenticate_client(&self, client_id: &str, secret: &str) -> Result<Client, ServiceError> {
        let invalid = || {
            metrics::counter!("dermagate_auth_failures_total", "reason" => "bad_client").increment(1);
            ServiceError::unauthorized("invalid_client", "client authentication failed")
        };
        let keyer = self.ctx.keyer()?;
        let state = self.ctx.state.clone();
        let client =
            self.ctx.read_fresh(|| Ok(reads::client(state.as_ref(), &keyer, client_id)?)).await?.ok_or_else(invalid)?;
        let presented = hash_secret(secret);
        let now = now_secs();
        let matches =
            client.secrets.iter().any(|s| s.valid_until.is_none_or(|t| t > now) && hashes_equal(&s.hash, &presented));
        let org_active = reads::organization(state.as_ref(), &client.org_id)?.is_some_and(|o| o.is_active());
        if !matches || client.revoked || !org_active {
            return Err(invalid());
        }
        Ok(client)
    }

    /// The client-credentials grant: a token with the requested scopes (a subset of the client's).
    pub fn client_token(
        &self,
        client: &Client,
        requested: Option<&str>,
    ) -> Result<(String, AccessClaims), ServiceError> {
        let scope = match requested {
            Some(requested) => {
                let wanted: Vec<&str> = requested.split_whitespace().collect();
                if let Some(bad) = wanted.iter().find(|s| !client.scopes.iter().any(|c| c == *s)) {
                    let mut e = ServiceError::new(ErrorCode::Validation, format!("scope {bad:?} not granted"));
                    e.auth_error = Some("invalid_scope");
                    return Err(e);
                }
                wanted.join(" ")
            }
            None => client.scopes.join(" "),
        };
        let claims =
            claims_for(PrincipalKind::Client, client.client_id.clone(), client.client_id.clone(), client.org_id, scope);
        self.tokens.issue(claims, now_ms())
    }

    /// RFC 7009: a caller revokes tokens it owns; administrators revoke tokens of their
    /// organisation. Nothing is revealed about a token the caller may not revoke.
    pub async fn revoke_token(&self, caller: &Principal, token: &str) -> Result<(), ServiceError> {
        if token.starts_with(REFRESH_PREFIX) {
            let keyer = self.ctx.keyer()?;
            let state = self.ctx.state.clone();
            // Issued through another node a moment ago: catch up rather than answer "done".
            if let Some(r) = self.ctx.read_fresh(|| Ok(reads::refresh_record(state.as_ref(), &keyer, token)?)).await? {
                let org = reads::user(self.ctx.state.as_ref(), &r.user_id)?.map(|u| u.org_id).unwrap_or_default();
                if owns_or_administers(caller, &r.user_id.to_string(), &org) {
                    self.ctx.commit(&caller.actor(), Command::RevokeRefreshFamily { family: r.family }).await?;
                    metrics::counter!("dermagate_revocations_total", "kind" => "refresh_family").increment(1);
                }
            }
            return Ok(());
        }
        if let Ok(v) = self.tokens.verify(token, now_secs()) {
            if owns_or_administers(caller, &v.claims.sub, &v.claims.org_id) {
                self.ctx
                    .commit(
                        &caller.actor(),
                        Command::RevokeToken {
                            jti: v.claims.jti.clone(),
                            exp_secs: v.claims.exp,
                            org_id: v.claims.org_id,
                        },
                    )
                    .await?;
                metrics::counter!("dermagate_revocations_total", "kind" => "token").increment(1);
            }
        }
        Ok(())
    }

    /// RFC 7662: whether a token is active now, and its claims, for callers entitled to know:
    /// the token's own holder, or an administrator of its organisation (or the platform).
    pub fn introspect(
        &self,
        caller: &Principal,
        token: &str,
    ) -> Result<Option<(AccessClaims, Principal)>, ServiceError> {
        let Ok(v) = self.tokens.verify(token, now_secs()) else { return Ok(None) };
        let Ok(holder) = self.authenticate_locally(&super::identity::Credential::AccessToken(token)) else {
            return Ok(None);
        };
        if !owns_or_administers(caller, &v.claims.sub, &v.claims.org_id) {
            return Ok(None);
        }
        Ok(Some((v.claims.clone(), holder)))
    }
}

/// The caller is the token's subject, a platform administrator, or an administrator of the
/// token's organisation.
fn owns_or_administers(caller: &Principal, sub: &str, org: &Uuid) -> bool {
    caller.id == sub
        || (caller.is_platform_admin() && caller.org_id == PLATFORM_ORG_ID)
        || (caller.org_id == *org && caller.require(Permission::UsersManage).is_ok())
}
