//! Applying the commands of credentials: client keys and their secrets, signing keys, revoked
//! tokens, refresh tokens.

use uuid::Uuid;

use super::{keyer, rejected};
use crate::command::Outcome;
use crate::error::{Entity, Rejection};
use crate::keys;
use crate::records::{Client, ClientSecret, KeyStatus, Organization, RefreshRecord, SigningKey};
use crate::state::{self, StateError, StateWrite};

macro_rules! try_reject {
    ($e:expr) => {
        match $e? {
            Ok(v) => v,
            Err(r) => return rejected(r),
        }
    };
}

/// The client `client_id` of organisation `org_id` (another organisation's is not found).
fn client_of(
    state: &impl StateWrite,
    keyer: &keys::Keyer,
    org_id: &Uuid,
    client_id: &str,
) -> Result<Result<Client, Rejection>, StateError> {
    Ok(match state::get::<Client>(state, &keyer.client(client_id))? {
        Some(c) if &c.org_id == org_id => Ok(c),
        _ => Err(Rejection::NotFound(Entity::Client)),
    })
}

fn save(state: &mut impl StateWrite, keyer: &keys::Keyer, client: &Client) -> Result<Outcome, StateError> {
    state::put(state, keyer.client(&client.client_id), client)?;
    state.credentials_changed();
    Ok(Outcome::Done)
}

pub fn create_client(state: &mut impl StateWrite, client: &Client) -> Result<Outcome, StateError> {
    let keyer = try_reject!(keyer(state));
    match state::get::<Organization>(state, &keys::org(&client.org_id))? {
        Some(org) if org.is_active() => {}
        Some(_) => return rejected(Rejection::OrganizationInactive),
        None => return rejected(Rejection::NotFound(Entity::Organization)),
    }
    if let Some(existing) = state::get::<Client>(state, &keyer.client(&client.client_id))? {
        // The same record (random id, hashed secret) proposed again is the same creation.
        if existing == *client {
            return Ok(Outcome::Done);
        }
        return rejected(Rejection::AlreadyExists(Entity::Client));
    }
    for s in &client.secrets {
        state::put(state, keys::client_secret(&s.hash), &client.client_id)?;
    }
    save(state, &keyer, client)
}

/// Adds a new secret; the previous ones keep working until `old_valid_until_secs` (overlap).
pub fn rotate_client_secret(
    state: &mut impl StateWrite,
    org_id: &Uuid,
    client_id: &str,
    new_secret_hash: &str,
    old_valid_until_secs: i64,
) -> Result<Outcome, StateError> {
    let keyer = try_reject!(keyer(state));
    let mut client = try_reject!(client_of(state, &keyer, org_id, client_id));
    if client.revoked {
        return rejected(Rejection::NotFound(Entity::Client));
    }
    for s in client.secrets.iter_mut() {
        s.valid_until = Some(s.valid_until.map_or(old_valid_until_secs, |t| t.min(old_valid_until_secs)));
    }
    client.secrets.push(ClientSecret { hash: new_secret_hash.to_string(), valid_until: None });
    state::put(state, keys::client_secret(new_secret_hash), &client.client_id)?;
    save(state, &keyer, &client)
}

/// Revokes a client: its secrets and every token it holds stop working on every node.
pub fn revoke_client(state: &mut impl StateWrite, org_id: &Uuid, client_id: &str) -> Result<Outcome, StateError> {
    let keyer = try_reject!(keyer(state));
    let mut client = try_reject!(client_of(state, &keyer, org_id, client_id));
    for s in &client.secrets {
        state.delete(keys::client_secret(&s.hash));
    }
    client.revoked = true;
    client.secrets.clear();
    save(state, &keyer, &client)
}

pub fn rotate_signing_key(
    state: &mut impl StateWrite,
    key: &SigningKey,
    retire_after_secs: i64,
) -> Result<Outcome, StateError> {
    for k in state.keys(keys::SIGNING_KEY.as_bytes())? {
        if let Some(mut old) = state::get::<SigningKey>(state, &k)? {
            if old.status == KeyStatus::Active {
                old.status = KeyStatus::Retiring;
                old.retire_after_secs = Some(retire_after_secs);
                state::put(state, k, &old)?;
            }
        }
    }
    state::put(state, keys::signing_key(&key.kid), key)?;
    state.credentials_changed();
    Ok(Outcome::Done)
}

pub fn purge_signing_keys(state: &mut impl StateWrite, now_secs: i64) -> Result<Outcome, StateError> {
    for k in state.keys(keys::SIGNING_KEY.as_bytes())? {
        let retired = state::get::<SigningKey>(state, &k)?.is_some_and(|key| {
            key.status == KeyStatus::Retiring && key.retire_after_secs.is_some_and(|t| t < now_secs)
        });
        if retired {
            state.delete(k);
        }
    }
    state.credentials_changed();
    Ok(Outcome::Done)
}

pub fn revoke_token(state: &mut impl StateWrite, jti: &str, exp_secs: i64) -> Result<Outcome, StateError> {
    let keyer = try_reject!(keyer(state));
    state::put(state, keyer.revoked_jti(jti), &exp_secs)?;
    state.credentials_changed();
    Ok(Outcome::Done)
}

/// Drops revoked token ids whose tokens have expired anyway.
pub fn purge_revocations(state: &mut impl StateWrite, before_secs: i64) -> Result<Outcome, StateError> {
    for (key, value) in state.scan_raw(keys::REVOKED_JTI.as_bytes())? {
        if serde_json::from_slice::<i64>(&value).is_ok_and(|exp| exp < before_secs) {
            state.delete(key);
        }
    }
    Ok(Outcome::Done)
}

pub fn store_refresh(state: &mut impl StateWrite, token: &str, record: &RefreshRecord) -> Result<Outcome, StateError> {
    let keyer = try_reject!(keyer(state));
    let key = keyer.refresh_token(token);
    if state::exists(state, &key)? {
        return rejected(Rejection::AlreadyExists(Entity::Client));
    }
    state::put(state, key, record)?;
    Ok(Outcome::Done)
}

/// Rotates a refresh token. Presenting one already rotated is reuse: the family is revoked, and
/// with it every access token issued from the family (they carry its id).
pub fn rotate_refresh(
    state: &mut impl StateWrite,
    old: &str,
    new: &str,
    record: &RefreshRecord,
) -> Result<Outcome, StateError> {
    let keyer = try_reject!(keyer(state));
    let old_key = keyer.refresh_token(old);
    let Some(mut old_record) = state::get::<RefreshRecord>(state, &old_key)? else {
        return rejected(Rejection::RefreshReused);
    };
    if old_record.rotated || state::exists(state, &keys::revoked_family(&old_record.family))? {
        state::put(state, keys::revoked_family(&old_record.family), &0i64)?;
        state.credentials_changed();
        return rejected(Rejection::RefreshReused);
    }
    old_record.rotated = true;
    state::put(state, old_key, &old_record)?;
    state::put(state, keyer.refresh_token(new), record)?;
    Ok(Outcome::Done)
}
