//! Applying organisation, platform and restore commands.

use uuid::Uuid;

use super::rejected;
use crate::command::Outcome;
use crate::error::{Entity, Rejection};
use crate::keys;
use crate::records::{OrgStatus, Organization, PLATFORM_ORG_ID};
use crate::state::{self, StateError, StateWrite};

pub fn ensure_cluster_secret(state: &mut impl StateWrite, secret: &[u8]) -> Result<Outcome, StateError> {
    if secret.len() != 32 {
        return rejected(Rejection::InvalidCommand("a cluster secret is 32 bytes".into()));
    }
    if !state::exists(state, keys::CLUSTER_SECRET)? {
        state::put(state, keys::CLUSTER_SECRET.to_vec(), &secret.to_vec())?;
    }
    Ok(Outcome::Done)
}

pub fn create(state: &mut impl StateWrite, org: &Organization) -> Result<Outcome, StateError> {
    let key = keys::org(&org.id);
    if state::exists(state, &key)? {
        return rejected(Rejection::AlreadyExists(Entity::Organization));
    }
    state::put(state, key, org)?;
    state.credentials_changed();
    Ok(Outcome::Done)
}

pub fn set_status(state: &mut impl StateWrite, id: &Uuid, status: OrgStatus) -> Result<Outcome, StateError> {
    if *id == PLATFORM_ORG_ID && status == OrgStatus::Suspended {
        // Suspending it would revoke every platform administrator, with no way back.
        return rejected(Rejection::PlatformOrganizationProtected);
    }
    let key = keys::org(id);
    let Some(mut org) = state::get::<Organization>(state, &key)? else {
        return rejected(Rejection::NotFound(Entity::Organization));
    };
    org.status = status;
    state::put(state, key, &org)?;
    state.credentials_changed();
    Ok(Outcome::Done)
}

pub fn update(
    state: &mut impl StateWrite,
    id: &Uuid,
    name: Option<&str>,
    store_images: Option<bool>,
) -> Result<Outcome, StateError> {
    let key = keys::org(id);
    let Some(mut org) = state::get::<Organization>(state, &key)? else {
        return rejected(Rejection::NotFound(Entity::Organization));
    };
    if let Some(name) = name {
        org.name = name.to_string();
    }
    if let Some(store) = store_images {
        org.store_images = store;
    }
    state::put(state, key, &org)?;
    Ok(Outcome::Done)
}

/// Restores backed-up records: every key must be of a kind this version knows and every value
/// must parse as JSON, or nothing is restored.
pub fn restore_records(
    state: &mut impl StateWrite,
    records: &[(Vec<u8>, Vec<u8>)],
    replace: bool,
    into_new_cluster: bool,
) -> Result<Outcome, StateError> {
    if into_new_cluster && crate::reads::organizations(state)?.iter().any(|o| o.id != crate::records::PLATFORM_ORG_ID) {
        return rejected(Rejection::RestoreNeedsNewCluster);
    }
    const KINDS: [&str; 21] = [
        keys::ORG,
        keys::USER,
        keys::USERNAME,
        keys::CLIENT,
        keys::CLIENT_SECRET,
        keys::SIGNING_KEY,
        keys::REVOKED_JTI,
        keys::REVOKED_FAMILY,
        keys::REFRESH_TOKEN,
        keys::INVITATION,
        keys::SIGN_IN,
        keys::REPORT,
        keys::SUBJECT,
        keys::SUBJECT_ERASED,
        keys::IMAGE,
        keys::IDEMPOTENCY,
        keys::AUDIT,
        keys::AUDIT_HEAD,
        keys::BLOB_GONE,
        "bref/",
        "cluster/",
    ];
    for (key, value) in records {
        let known = KINDS.iter().any(|k| key.starts_with(k.as_bytes()));
        if !known || serde_json::from_slice::<serde_json::Value>(value).is_err() {
            return rejected(Rejection::InvalidCommand(
                "the backup holds a record of an unknown kind or an invalid value".into(),
            ));
        }
    }
    if replace {
        // Every data key is printable ASCII, so [0x00, 0x7f) covers the whole state.
        state.delete_range(vec![0], vec![0x7f]);
    }
    for (key, value) in records {
        state.put_raw(key.clone(), value.clone());
    }
    state.credentials_changed();
    Ok(Outcome::Done)
}
