//! First start of a new cluster: the bootstrap node creates the cluster secret, the platform
//! operator organisation, the initial platform administrator and the first signing key. Every
//! step checks the replicated state first, so running it again (a restart) changes nothing.

use uuid::Uuid;

use super::identity::Identity;
use super::tokens::generate_signing_key;
use super::{now_ms, ServiceError};
use crate::command::Command;
use crate::reads;
use crate::records::{Attestation, OrgStatus, Organization, Role, User, UserStatus, PLATFORM_ORG_ID};

const ACTOR: &str = "system:bootstrap";

pub async fn ensure(identity: &Identity, admin: Option<(String, String)>) -> Result<(), ServiceError> {
    let ctx = &identity.ctx;
    let now = now_ms();
    if ctx.state.keyer()?.is_none() {
        let mut secret = vec![0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
        ctx.commit(ACTOR, Command::EnsureClusterSecret { secret }).await?;
        tracing::info!("cluster secret created");
    }
    if reads::signing_keys(ctx.state.as_ref())?.is_empty() {
        ctx.commit(ACTOR, Command::PutSigningKey(generate_signing_key(now / 1000)?)).await?;
        tracing::info!("initial signing key created");
    }
    if reads::organization(ctx.state.as_ref(), &PLATFORM_ORG_ID)?.is_none() {
        let org = Organization {
            id: PLATFORM_ORG_ID,
            name: "dermagate platform operator".into(),
            status: OrgStatus::Active,
            attestation: Attestation {
                contract_reference: "platform-operator".into(),
                attested_by: "dermagate bootstrap".into(),
                attested_at_ms: now,
            },
            created_at_ms: now,
            store_images: false,
        };
        ctx.commit(ACTOR, Command::CreateOrganization(org)).await?;
    }
    let Some((username, password)) = admin else { return Ok(()) };
    let keyer = ctx.keyer()?;
    if reads::user_by_username(ctx.state.as_ref(), &keyer, &username)?.is_none() {
        let user = User {
            id: Uuid::new_v4(),
            org_id: PLATFORM_ORG_ID,
            username: username.clone(),
            roles: vec![Role::PlatformAdmin],
            password_hash: identity.passwords.hash(password).await?,
            status: UserStatus::Active,
            tokens_valid_after_ms: 0,
            created_at_ms: now,
            totp: None,
        };
        ctx.commit(ACTOR, Command::CreateUser(user)).await?;
        tracing::info!("initial platform administrator created");
    }
    Ok(())
}
