//! Typed reads of the replicated state, over any [`StateRead`] (the node's store, or a batch in
//! the middle of an apply).

use uuid::Uuid;

use crate::command::PlatformSettings;
use crate::keys::{self, Keyer};
use crate::records::{
    AuditRecord, Client, Invitation, Organization, RefreshRecord, SigningKey, StoredImage, StoredReport, User,
};
use crate::state::{self, StateError, StateRead};

/// The keyer of the cluster secret, once the bootstrap recorded it.
pub fn keyer(view: &(impl StateRead + ?Sized)) -> Result<Option<Keyer>, StateError> {
    Ok(state::get::<Vec<u8>>(view, keys::CLUSTER_SECRET)?.map(|s| Keyer::new(&s)))
}

/// The cluster secret itself (for keys derived from it, such as the shared blob key).
pub fn cluster_secret(view: &(impl StateRead + ?Sized)) -> Result<Option<Vec<u8>>, StateError> {
    state::get(view, keys::CLUSTER_SECRET)
}

pub fn platform_settings(view: &(impl StateRead + ?Sized)) -> Result<PlatformSettings, StateError> {
    Ok(state::get(view, keys::PLATFORM_SETTINGS)?.unwrap_or_default())
}

pub fn organization(view: &(impl StateRead + ?Sized), id: &Uuid) -> Result<Option<Organization>, StateError> {
    state::get(view, &keys::org(id))
}

pub fn organizations(view: &(impl StateRead + ?Sized)) -> Result<Vec<Organization>, StateError> {
    state::scan(view, keys::ORG)
}

pub fn user(view: &(impl StateRead + ?Sized), id: &Uuid) -> Result<Option<User>, StateError> {
    state::get(view, &keys::user(id))
}

pub fn user_by_username(
    view: &(impl StateRead + ?Sized),
    keyer: &Keyer,
    username: &str,
) -> Result<Option<User>, StateError> {
    match state::get::<Uuid>(view, &keyer.username(username))? {
        Some(id) => user(view, &id),
        None => Ok(None),
    }
}

pub fn users(view: &(impl StateRead + ?Sized)) -> Result<Vec<User>, StateError> {
    state::scan(view, keys::USER)
}

pub fn client(view: &(impl StateRead + ?Sized), keyer: &Keyer, client_id: &str) -> Result<Option<Client>, StateError> {
    state::get(view, &keyer.client(client_id))
}

pub fn clients(view: &(impl StateRead + ?Sized)) -> Result<Vec<Client>, StateError> {
    state::scan(view, keys::CLIENT)
}

/// The client whose secret hashes to `secret_hash` (a static API key), if any.
pub fn client_by_secret_hash(
    view: &(impl StateRead + ?Sized),
    keyer: &Keyer,
    secret_hash: &str,
) -> Result<Option<Client>, StateError> {
    match state::get::<String>(view, &keys::client_secret(secret_hash))? {
        Some(client_id) => client(view, keyer, &client_id),
        None => Ok(None),
    }
}

pub fn signing_keys(view: &(impl StateRead + ?Sized)) -> Result<Vec<SigningKey>, StateError> {
    state::scan(view, keys::SIGNING_KEY)
}

pub fn is_jti_revoked(view: &(impl StateRead + ?Sized), keyer: &Keyer, jti: &str) -> Result<bool, StateError> {
    state::exists(view, &keyer.revoked_jti(jti))
}

pub fn is_family_revoked(view: &(impl StateRead + ?Sized), family: &Uuid) -> Result<bool, StateError> {
    state::exists(view, &keys::revoked_family(family))
}

pub fn refresh_record(
    view: &(impl StateRead + ?Sized),
    keyer: &Keyer,
    token: &str,
) -> Result<Option<RefreshRecord>, StateError> {
    state::get(view, &keyer.refresh_token(token))
}

pub fn invitation(
    view: &(impl StateRead + ?Sized),
    keyer: &Keyer,
    token: &str,
) -> Result<Option<Invitation>, StateError> {
    state::get(view, &keyer.invitation(token))
}

pub fn report(view: &(impl StateRead + ?Sized), id: &Uuid) -> Result<Option<StoredReport>, StateError> {
    state::get(view, &keys::report(id))
}

/// A subject's reports in time-series order (by issue time, then id).
pub fn subject_reports(
    view: &(impl StateRead + ?Sized),
    keyer: &Keyer,
    org_id: &Uuid,
    subject: &str,
) -> Result<Vec<StoredReport>, StateError> {
    let mut out = Vec::new();
    for id in state::scan::<Uuid>(view, &keyer.subject_prefix(org_id, subject))? {
        // An index entry whose report is missing cannot happen (both change in one apply);
        // skipping is still safer than failing the listing.
        if let Some(r) = report(view, &id)? {
            out.push(r);
        }
    }
    Ok(out)
}

pub fn report_image(
    view: &(impl StateRead + ?Sized),
    report: &Uuid,
    index: u32,
) -> Result<Option<StoredImage>, StateError> {
    state::get(view, &keys::image(report, index))
}

pub fn report_images(view: &(impl StateRead + ?Sized), report: &Uuid) -> Result<Vec<StoredImage>, StateError> {
    state::scan(view, &keys::image_prefix(report))
}

/// Every stored image of every report (the blob keeper's full scan).
pub fn all_stored_images(view: &(impl StateRead + ?Sized)) -> Result<Vec<StoredImage>, StateError> {
    state::scan(view, keys::IMAGE)
}

pub fn blob_is_referenced(view: &(impl StateRead + ?Sized), digest: &str) -> Result<bool, StateError> {
    Ok(!view.keys(keys::blob_ref_prefix(digest).as_bytes())?.is_empty())
}

pub fn blob_is_gone(view: &(impl StateRead + ?Sized), digest: &str) -> Result<bool, StateError> {
    state::exists(view, &keys::blob_gone(digest))
}

/// An organisation's audit trail, in order.
pub fn audit_trail(view: &(impl StateRead + ?Sized), org_id: &Uuid) -> Result<Vec<AuditRecord>, StateError> {
    state::scan(view, &keys::audit_prefix(org_id))
}

/// The organisations that have an audit trail.
pub fn audited_organizations(view: &(impl StateRead + ?Sized)) -> Result<Vec<Uuid>, StateError> {
    Ok(view
        .scan_raw(keys::AUDIT_HEAD.as_bytes())?
        .into_iter()
        .filter_map(|(k, _)| std::str::from_utf8(&k[keys::AUDIT_HEAD.len()..]).ok()?.parse().ok())
        .collect())
}
