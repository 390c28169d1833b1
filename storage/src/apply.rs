//! Applying commands to the state machine. **Apply is deterministic**: it reads only the current
//! state and the command (which carries its own time and ids), never clocks or randomness, so
//! every node that applies the same log ends with the same state.
//!
//! Writes of one apply batch collect in an [`Overlay`] so that later entries of the batch see the
//! effects of earlier ones before the whole batch lands in RocksDB in one atomic `WriteBatch`.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::db::{Store, CF_SM_DATA};
use crate::error::StoreError;
use crate::model::{
    keys, AppliedRequest, Client, Collection, Command, Invitation, KeyStatus, LockoutPolicy, OrgStatus, Organization,
    Request, Response, SignInState, SigningKey, User, UserStatus, SCHEMA_VERSION,
};
use crate::subjects;

/// Pending writes of one apply batch over the committed state.
pub struct Overlay<'a> {
    store: &'a Store,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Key ranges `[start, end)` deleted by this batch, applied before `writes`.
    deleted_ranges: Vec<(Vec<u8>, Vec<u8>)>,
    /// Blobs this batch referenced (the node fetches any it lacks) and blobs it freed (the node
    /// deletes them once the batch is written).
    blobs: BlobEffects,
}

/// What an apply batch means for the blob store, acted on after the batch is written.
#[derive(Debug, Default, Clone)]
pub struct BlobEffects {
    pub referenced: Vec<String>,
    pub freed: Vec<String>,
}

impl<'a> Overlay<'a> {
    pub fn new(store: &'a Store) -> Overlay<'a> {
        Overlay { store, writes: BTreeMap::new(), deleted_ranges: Vec::new(), blobs: BlobEffects::default() }
    }

    pub(crate) fn referenced_blob(&mut self, digest: &str) {
        self.blobs.freed.retain(|d| d != digest);
        self.blobs.referenced.push(digest.to_string());
    }

    pub(crate) fn freed_blob(&mut self, digest: &str) {
        self.blobs.referenced.retain(|d| d != digest);
        self.blobs.freed.push(digest.to_string());
    }

    /// The blob effects of the batch so far.
    pub fn blob_effects(&self) -> &BlobEffects {
        &self.blobs
    }

    fn range_deleted(&self, key: &[u8]) -> bool {
        self.deleted_ranges.iter().any(|(start, end)| key >= start.as_slice() && key < end.as_slice())
    }

    pub(crate) fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.writes.get(key) {
            Some(Some(bytes)) => Ok(Some(serde_json::from_slice(bytes)?)),
            Some(None) => Ok(None),
            None if self.range_deleted(key) => Ok(None),
            None => self.store.get_json(CF_SM_DATA, key),
        }
    }

    pub(crate) fn exists(&self, key: &[u8]) -> Result<bool, StoreError> {
        match self.writes.get(key) {
            Some(v) => Ok(v.is_some()),
            None if self.range_deleted(key) => Ok(false),
            None => Ok(self.store.get_raw(CF_SM_DATA, key)?.is_some()),
        }
    }

    /// Deletes every key in `[start, end)` (one range tombstone, however many keys).
    pub(crate) fn delete_range(&mut self, start: Vec<u8>, end: Vec<u8>) {
        let doomed: Vec<Vec<u8>> = self.writes.range(start.clone()..end.clone()).map(|(k, _)| k.clone()).collect();
        for key in doomed {
            self.writes.remove(&key);
        }
        self.deleted_ranges.push((start, end));
    }

    pub(crate) fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) -> Result<(), StoreError> {
        self.writes.insert(key, Some(serde_json::to_vec(value)?));
        Ok(())
    }

    pub(crate) fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// Keys under `prefix` as the batch sees them (committed keys plus pending, minus deleted).
    pub(crate) fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut keys: BTreeMap<Vec<u8>, bool> =
            self.store.scan_prefix(CF_SM_DATA, prefix.as_bytes())?.into_iter().map(|(k, _)| (k, true)).collect();
        for (k, v) in self.writes.range(prefix.as_bytes().to_vec()..) {
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            keys.insert(k.clone(), v.is_some());
        }
        Ok(keys.into_iter().filter(|(_, live)| *live).map(|(k, _)| k).collect())
    }

    /// Whether this batch touches anything a credential check reads.
    pub fn touches_credentials(&self) -> bool {
        const PREFIXES: [&str; 5] = [keys::ORG, keys::USER, keys::CLIENT, keys::REVOKED_JTI, "rfam/"];
        self.writes.keys().any(|k| PREFIXES.iter().any(|p| k.starts_with(p.as_bytes())))
    }

    /// Moves the pending writes into `batch`, sealed.
    pub fn into_batch(self, batch: &mut rocksdb::WriteBatch) {
        let cf = self.store.cf(CF_SM_DATA);
        for (start, end) in &self.deleted_ranges {
            batch.delete_range_cf(cf, start, end);
        }
        for (key, value) in self.writes {
            match value {
                Some(v) => self.store.put_raw(batch, CF_SM_DATA, &key, &v),
                None => batch.delete_cf(cf, &key),
            }
        }
    }
}

/// Applies one request, once per request id: a request applied before answers with its first
/// outcome and changes nothing. `Err` means storage failed (fatal for the node); business
/// outcomes such as conflicts are `Ok(Response::..)` and are the same on every node.
pub fn apply_request(state: &mut Overlay<'_>, req: &Request) -> Result<Response, StoreError> {
    if req.id.is_nil() {
        return apply_command(state, req);
    }
    let key = keys::applied_request(req.at_ms, &req.id);
    if let Some(first) = state.get::<AppliedRequest>(&key)? {
        return Ok(first.response);
    }
    let response = apply_command(state, req)?;
    state.put(key, &AppliedRequest { response: response.clone() })?;
    Ok(response)
}

fn apply_command(state: &mut Overlay<'_>, req: &Request) -> Result<Response, StoreError> {
    if req.schema > SCHEMA_VERSION {
        // Proposers refuse newer schemas, so this only happens in a mixed-version cluster; every
        // node of this version answers the same way, which keeps them identical.
        return Ok(Response::Rejected { reason: format!("unsupported command schema {}", req.schema) });
    }
    match &req.command {
        Command::Noop => Ok(Response::Ok),
        Command::CreateOrganization(org) => create_organization(state, org),
        Command::SetOrganizationStatus { id, status } => set_org_status(state, id, *status),
        Command::CreateUser(user) => create_user(state, user),
        Command::UpdateUser(user) => update_user(state, user),
        Command::DeleteUser { org_id, id } => delete_user(state, org_id, id),
        Command::CreateClient(client) => create_client(state, client),
        Command::UpdateClient(client) => update_client(state, client),
        Command::DeleteClient { org_id, client_id } => delete_client(state, org_id, client_id),
        Command::PutSigningKey(key) => {
            state.put(keys::signing_key(&key.kid), key)?;
            Ok(Response::Ok)
        }
        Command::RevokeToken { jti, exp } => {
            state.put(keys::revoked_jti(jti), exp)?;
            Ok(Response::Ok)
        }
        Command::PurgeRevocations { before } => purge_revocations(state, *before),
        Command::RecordSignInFailure { username, policy } => record_failure(state, username, policy, req.at_ms),
        Command::ResetSignInFailures { username } => {
            state.delete(keys::sign_in(username));
            Ok(Response::Ok)
        }
        Command::SignOutEverywhere { user_id } => {
            let key = keys::user(user_id);
            let Some(mut user) = state.get::<User>(&key)? else {
                return Ok(Response::NotFound { what: "user".into() });
            };
            user.tokens_valid_after_ms = req.at_ms;
            state.put(key, &user)?;
            Ok(Response::Ok)
        }
        Command::RotateRefreshToken { old, new, record } => rotate_refresh(state, old, new, record, req.at_ms),
        Command::RotateSigningKey { key, retire_after } => rotate_signing_key(state, key, *retire_after),
        Command::PurgeSigningKeys { now_secs } => {
            for k in state.keys_with_prefix(keys::SIGNING_KEY)? {
                let retired = state.get::<SigningKey>(&k)?.is_some_and(|key| {
                    key.status == KeyStatus::Retiring && key.retire_after.is_some_and(|t| t < *now_secs)
                });
                if retired {
                    state.delete(k);
                }
            }
            Ok(Response::Ok)
        }
        Command::ImportRecords { records } => {
            for (key, value) in records {
                // Validate before storing: a backup holds JSON values under printable keys only.
                if key.is_empty() || !key.is_ascii() || serde_json::from_str::<serde_json::Value>(value).is_err() {
                    return Ok(Response::Rejected { reason: "the backup holds an invalid record".into() });
                }
            }
            for (key, value) in records {
                state.writes.insert(key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()));
            }
            Ok(Response::Ok)
        }
        Command::RedeemInvitation { invitation, user } => redeem_invitation(state, invitation, user, req.at_ms),
        Command::RevokeRefreshFamily { family } => {
            state.put(keys::revoked_family(family), &req.at_ms)?;
            Ok(Response::Ok)
        }
        Command::PutRecord { collection, id, value, unique } => {
            let key = keys::record(*collection, id);
            if *unique && state.exists(&key)? {
                return Ok(Response::Conflict { reason: format!("{collection:?} {id} already exists") });
            }
            state.put(key, value)?;
            Ok(Response::Ok)
        }
        Command::DeleteRecord { collection, id } => {
            state.delete(keys::record(*collection, id));
            Ok(Response::Ok)
        }
        Command::SetOrganizationSettings { id, store_images } => {
            subjects::set_organization_settings(state, id, *store_images)
        }
        Command::RenameOrganization { id, name } => {
            let key = keys::org(id);
            let Some(mut org) = state.get::<Organization>(&key)? else {
                return Ok(Response::NotFound { what: "organization".into() });
            };
            org.name = name.clone();
            state.put(key, &org)?;
            Ok(Response::Ok)
        }
        Command::ClaimIdempotencyKey { scoped_key, record } => {
            subjects::claim_idempotency_key(state, scoped_key, record, req.at_ms)
        }
        Command::ReleaseIdempotencyKey { scoped_key, fingerprint } => {
            subjects::release_idempotency_key(state, scoped_key, fingerprint)
        }
        Command::StoreReport { report, images } => subjects::store_report(state, report, images, req.at_ms),
        Command::EraseSubject { org_id, subject, audit } => subjects::erase_subject(state, org_id, subject, audit),
        Command::Audit(entry) => {
            state.put(keys::record(Collection::Audit, &entry.id.to_string()), entry)?;
            Ok(Response::Ok)
        }
        Command::PurgeIdempotencyKeys { now_ms } => subjects::purge_idempotency_keys(state, *now_ms),
        Command::PurgeAppliedRequests { before_ms } => {
            state.delete_range(
                keys::APPLIED_REQUEST.as_bytes().to_vec(),
                keys::applied_request(*before_ms, &uuid::Uuid::nil()),
            );
            Ok(Response::Ok)
        }
    }
}

fn create_organization(state: &mut Overlay<'_>, org: &Organization) -> Result<Response, StoreError> {
    let key = keys::org(&org.id);
    if state.exists(&key)? {
        return Ok(Response::Conflict { reason: "organization id already exists".into() });
    }
    state.put(key, org)?;
    Ok(Response::Ok)
}

fn set_org_status(state: &mut Overlay<'_>, id: &uuid::Uuid, status: OrgStatus) -> Result<Response, StoreError> {
    let key = keys::org(id);
    let Some(mut org) = state.get::<Organization>(&key)? else {
        return Ok(Response::NotFound { what: "organization".into() });
    };
    org.status = status;
    state.put(key, &org)?;
    Ok(Response::Ok)
}

fn create_user(state: &mut Overlay<'_>, user: &User) -> Result<Response, StoreError> {
    if !state.exists(&keys::org(&user.org_id))? {
        return Ok(Response::NotFound { what: "organization".into() });
    }
    let name_key = keys::username(&user.username);
    if state.exists(&name_key)? {
        return Ok(Response::Conflict { reason: "username already taken".into() });
    }
    state.put(name_key, &user.id)?;
    state.put(keys::user(&user.id), user)?;
    Ok(Response::Ok)
}

fn update_user(state: &mut Overlay<'_>, user: &User) -> Result<Response, StoreError> {
    let key = keys::user(&user.id);
    match state.get::<User>(&key)? {
        Some(old) if old.org_id == user.org_id && old.username == user.username => {
            state.put(key, user)?;
            Ok(Response::Ok)
        }
        Some(_) => Ok(Response::Rejected { reason: "username and organization cannot change".into() }),
        None => Ok(Response::NotFound { what: "user".into() }),
    }
}

fn delete_user(state: &mut Overlay<'_>, org_id: &uuid::Uuid, id: &uuid::Uuid) -> Result<Response, StoreError> {
    let key = keys::user(id);
    match state.get::<User>(&key)? {
        Some(user) if &user.org_id == org_id => {
            state.delete(keys::username(&user.username));
            state.delete(key);
            Ok(Response::Ok)
        }
        _ => Ok(Response::NotFound { what: "user".into() }),
    }
}

fn create_client(state: &mut Overlay<'_>, client: &Client) -> Result<Response, StoreError> {
    if !state.exists(&keys::org(&client.org_id))? {
        return Ok(Response::NotFound { what: "organization".into() });
    }
    let key = keys::client(&client.client_id);
    if state.exists(&key)? {
        return Ok(Response::Conflict { reason: "client id already exists".into() });
    }
    index_secrets(state, client, None)?;
    state.put(key, client)?;
    Ok(Response::Ok)
}

/// Keeps the secret-hash index in step with a client's secrets (old ones dropped).
fn index_secrets(state: &mut Overlay<'_>, client: &Client, old: Option<&Client>) -> Result<(), StoreError> {
    if let Some(old) = old {
        for s in &old.secrets {
            state.delete(keys::client_secret(&s.hash));
        }
    }
    for s in &client.secrets {
        state.put(keys::client_secret(&s.hash), &client.client_id)?;
    }
    Ok(())
}

fn update_client(state: &mut Overlay<'_>, client: &Client) -> Result<Response, StoreError> {
    let key = keys::client(&client.client_id);
    match state.get::<Client>(&key)? {
        Some(old) if old.org_id == client.org_id => {
            index_secrets(state, client, Some(&old))?;
            state.put(key, client)?;
            Ok(Response::Ok)
        }
        _ => Ok(Response::NotFound { what: "client".into() }),
    }
}

fn delete_client(state: &mut Overlay<'_>, org_id: &uuid::Uuid, client_id: &str) -> Result<Response, StoreError> {
    let key = keys::client(client_id);
    match state.get::<Client>(&key)? {
        Some(old) if &old.org_id == org_id => {
            for s in &old.secrets {
                state.delete(keys::client_secret(&s.hash));
            }
            state.delete(key);
            Ok(Response::Ok)
        }
        _ => Ok(Response::NotFound { what: "client".into() }),
    }
}

/// Counts a failure; locks for a growing wait after `max_failures`, permanently after
/// `permanent_after` temporary locks (an existing user is then marked `locked`).
fn record_failure(
    state: &mut Overlay<'_>,
    username: &str,
    policy: &LockoutPolicy,
    now: i64,
) -> Result<Response, StoreError> {
    let key = keys::sign_in(username);
    let mut s: SignInState = state.get(&key)?.unwrap_or_default();
    if now - s.last_failure_ms > policy.failure_reset_ms {
        s.failures = 0;
    }
    s.failures += 1;
    s.last_failure_ms = now;
    if s.failures >= policy.max_failures.max(1) {
        s.failures = 0;
        s.temporary_locks += 1;
        let wait = (policy.wait_increment_ms * s.temporary_locks as i64).min(policy.max_wait_ms);
        s.locked_until_ms = now + wait;
        if policy.permanent_after > 0 && s.temporary_locks >= policy.permanent_after {
            s.permanently_locked = true;
            lock_user(state, username)?;
        }
    }
    state.put(key, &s)?;
    Ok(Response::Ok)
}

fn lock_user(state: &mut Overlay<'_>, username: &str) -> Result<(), StoreError> {
    if let Some(id) = state.get::<uuid::Uuid>(&keys::username(username))? {
        let key = keys::user(&id);
        if let Some(mut user) = state.get::<User>(&key)? {
            user.status = UserStatus::Locked;
            state.put(key, &user)?;
        }
    }
    Ok(())
}

fn redeem_invitation(state: &mut Overlay<'_>, token: &str, user: &User, now: i64) -> Result<Response, StoreError> {
    let key = keys::record(Collection::Invitation, token);
    let Some(mut inv) = state.get::<Invitation>(&key)? else {
        return Ok(Response::NotFound { what: "invitation".into() });
    };
    if inv.used || inv.expires_at_ms < now {
        return Ok(Response::Rejected { reason: "the invitation is used up or expired".into() });
    }
    if inv.org_id != user.org_id || inv.roles != user.roles {
        return Ok(Response::Rejected { reason: "the invitation does not match the registration".into() });
    }
    let created = create_user(state, user)?;
    if created.is_ok() {
        inv.used = true;
        state.put(key, &inv)?;
    }
    Ok(created)
}

fn rotate_refresh(
    state: &mut Overlay<'_>,
    old: &str,
    new: &str,
    record: &serde_json::Value,
    now: i64,
) -> Result<Response, StoreError> {
    let old_key = keys::record(Collection::RefreshToken, old);
    let Some(mut old_record) = state.get::<serde_json::Value>(&old_key)? else {
        return Ok(Response::NotFound { what: "refresh token".into() });
    };
    if old_record["rotated"].as_bool() == Some(true) {
        if let Some(family) = old_record["family"].as_str().and_then(|f| f.parse::<uuid::Uuid>().ok()) {
            state.put(keys::revoked_family(&family), &now)?;
        }
        return Ok(Response::Conflict { reason: "refresh token reuse detected; the token family is revoked".into() });
    }
    old_record["rotated"] = serde_json::Value::Bool(true);
    state.put(old_key, &old_record)?;
    state.put(keys::record(Collection::RefreshToken, new), record)?;
    Ok(Response::Ok)
}

fn rotate_signing_key(state: &mut Overlay<'_>, key: &SigningKey, retire_after: i64) -> Result<Response, StoreError> {
    for k in state.keys_with_prefix(keys::SIGNING_KEY)? {
        if let Some(mut old) = state.get::<SigningKey>(&k)? {
            if old.status == KeyStatus::Active {
                old.status = KeyStatus::Retiring;
                old.retire_after = Some(retire_after);
                state.put(k, &old)?;
            }
        }
    }
    state.put(keys::signing_key(&key.kid), key)?;
    Ok(Response::Ok)
}

fn purge_revocations(state: &mut Overlay<'_>, before: i64) -> Result<Response, StoreError> {
    for key in state.keys_with_prefix(keys::REVOKED_JTI)? {
        if state.get::<i64>(&key)?.is_some_and(|exp| exp < before) {
            state.delete(key);
        }
    }
    Ok(Response::Ok)
}
