//! First start of a new cluster: the bootstrap node creates the platform operator organisation,
//! the initial platform administrator and the first signing key. Every step checks the
//! replicated state first, so running it again (a restart) changes nothing.

use dermagate_storage::model::{Attestation, Command, OrgStatus, Organization, Role, User, UserStatus};
use uuid::Uuid;

use crate::auth::tokens::generate_signing_key;
use crate::error::ApiError;
use crate::state::{now_ms, AppState};

/// Fixed id of the platform operator's own organisation.
pub const PLATFORM_ORG_ID: Uuid = Uuid::from_u128(0x6465_726d_6167_6174_6500_0000_0000_0001);

pub async fn ensure_bootstrap(state: &AppState, admin: Option<(String, String)>) -> Result<(), ApiError> {
    let now = now_ms();
    if state.store.signing_keys()?.is_empty() {
        state.commit(Command::PutSigningKey(generate_signing_key(now / 1000)?)).await?;
        tracing::info!("initial signing key created");
    }
    if state.store.organization(&PLATFORM_ORG_ID)?.is_none() {
        let org = Organization {
            id: PLATFORM_ORG_ID,
            name: "dermagate platform operator".into(),
            status: OrgStatus::Active,
            attestation: Attestation {
                contract_reference: "platform-operator".into(),
                attested_by: "dermagate bootstrap".into(),
                attested_at: now,
            },
            created_at: now,
            store_images: false,
        };
        state.commit(Command::CreateOrganization(org)).await?;
    }
    let Some((admin_username, admin_password)) = admin else {
        return Ok(());
    };
    if state.store.user_by_username(&admin_username)?.is_none() {
        let user = User {
            id: Uuid::new_v4(),
            org_id: PLATFORM_ORG_ID,
            username: admin_username.clone(),
            roles: vec![Role::PlatformAdmin],
            password_hash: state.passwords.hash(admin_password).await?,
            status: UserStatus::Active,
            tokens_valid_after_ms: 0,
            created_at: now,
        };
        state.commit(Command::CreateUser(user)).await?;
        tracing::info!(username = %admin_username, "initial platform administrator created");
    }
    Ok(())
}
