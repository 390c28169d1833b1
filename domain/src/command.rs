//! The replicated writes: a typed [`Command`] in a [`Request`] envelope that carries everything
//! applying it needs (the time, a unique id, the actor), so **applying a log entry is
//! deterministic** — no clock, no randomness, no I/O but the state itself. Commands say what is
//! meant (set a user's roles), not how to overwrite a record, so concurrent changes of different
//! fields cannot undo each other. On the wire and in the Raft log a request is encoded with
//! postcard (compact binary); see [`Request::encode`].

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Rejection;
use crate::records::{
    AuditEvent, Client, ConsoleSession, IdempotencyRecord, Invitation, OrgStatus, Organization, RefreshRecord, Role,
    SigningKey, StoredImage, StoredReport, ThrottlePolicy, User, UserStatus,
};

/// Version of the command encoding; a node refuses to apply commands of a newer schema.
pub const SCHEMA_VERSION: u16 = 2;

/// One replicated write. **The state machine applies one request id once**: a request proposed
/// again (a retry on a new leader after an unknown outcome) answers with its first outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub schema: u16,
    /// Unique per request; nil for internal entries that need no deduplication.
    pub id: Uuid,
    /// The proposer's clock (unix ms), the only time apply knows.
    pub at_ms: i64,
    /// Who asked (a user id, a client id, `system`): recorded in the audit trail.
    pub actor: String,
    pub command: Command,
}

impl Request {
    pub fn new(at_ms: i64, actor: impl Into<String>, command: Command) -> Request {
        Request { schema: SCHEMA_VERSION, id: Uuid::new_v4(), at_ms, actor: actor.into(), command }
    }

    /// Compact binary encoding (postcard): Raft entries, forwarded writes.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("encoding a request into memory cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<Request, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Does nothing; used to probe that the cluster can commit.
    Noop,
    /// Records the cluster secret (32 random bytes) if none exists yet; the first one stays.
    EnsureClusterSecret {
        secret: Vec<u8>,
    },
    /// Platform-wide policy (the second factor for administrators).
    SetPlatformSettings(PlatformSettings),

    CreateOrganization(Organization),
    SetOrganizationStatus {
        id: Uuid,
        status: OrgStatus,
    },
    UpdateOrganization {
        id: Uuid,
        name: Option<String>,
        store_images: Option<bool>,
    },

    /// Creates a user; refused when the username is taken or the organisation is not active.
    CreateUser(User),
    SetUserRoles {
        org_id: Uuid,
        user_id: Uuid,
        roles: Vec<Role>,
    },
    SetUserStatus {
        org_id: Uuid,
        user_id: Uuid,
        status: UserStatus,
    },
    /// A new password; every earlier token of the user stops working.
    SetUserPassword {
        org_id: Uuid,
        user_id: Uuid,
        password_hash: String,
    },
    DeleteUser {
        org_id: Uuid,
        user_id: Uuid,
    },
    /// Sets the user's `tokens_valid_after` to the request time.
    SignOutEverywhere {
        user_id: Uuid,
    },
    /// Starts (or restarts) enrolment of a second factor; unconfirmed until a first code.
    EnrollTotp {
        user_id: Uuid,
        secret: Vec<u8>,
        recovery_code_hashes: Vec<String>,
    },
    /// Accepts a TOTP code's time step (confirming an enrolment): refused if the step is not
    /// newer than the last one accepted, so a code is never accepted twice.
    UseTotpStep {
        user_id: Uuid,
        step: u64,
        confirm: bool,
    },
    /// Uses up one recovery code (its hash).
    UseRecoveryCode {
        user_id: Uuid,
        code_hash: String,
    },
    DisableTotp {
        user_id: Uuid,
    },

    /// A sign-in attempt whose password the proposer checked: applying it decides, in log order,
    /// whether it is allowed (throttling counts and waits are part of the state).
    SignInAttempt {
        username: String,
        source: String,
        user_id: Option<Uuid>,
        password_ok: bool,
        policy: ThrottlePolicy,
    },
    /// Clears every throttle of a username (an administrator's unlock).
    ClearSignInThrottle {
        username: String,
    },

    CreateClient(Client),
    RotateClientSecret {
        org_id: Uuid,
        client_id: String,
        new_secret_hash: String,
        old_valid_until_secs: i64,
    },
    RevokeClient {
        org_id: Uuid,
        client_id: String,
    },

    PutSigningKey(SigningKey),
    /// Makes `key` the active signing key; every other active key retires after `retire_after`.
    RotateSigningKey {
        key: SigningKey,
        retire_after_secs: i64,
    },
    PurgeSigningKeys {
        now_secs: i64,
    },

    RevokeToken {
        jti: String,
        exp_secs: i64,
        org_id: Uuid,
    },
    PurgeRevocations {
        before_secs: i64,
    },
    StoreRefreshToken {
        token: String,
        record: RefreshRecord,
    },
    /// Rotates a refresh token; presenting an already-rotated one revokes its whole family.
    RotateRefreshToken {
        old: String,
        new: String,
        record: RefreshRecord,
    },
    RevokeRefreshFamily {
        family: Uuid,
    },

    CreateInvitation {
        token: String,
        invitation: Invitation,
    },
    /// Registers `user` from a single-use, unexpired invitation whose issuer may still grant
    /// its roles, and uses the invitation up, atomically.
    RedeemInvitation {
        token: String,
        user: User,
    },

    /// Reserves an idempotency key for a request in flight.
    ClaimIdempotencyKey {
        scoped_key: String,
        record: IdempotencyRecord,
    },
    /// Frees a key whose request failed before it produced a report.
    ReleaseIdempotencyKey {
        scoped_key: String,
        fingerprint: String,
    },
    PurgeIdempotencyKeys {
        now_ms: i64,
    },
    /// Adds an immutable report to its subject's series (with its stored images' digests),
    /// links it as the successor of its previous report, and completes its idempotency key.
    StoreReport {
        report: Box<StoredReport>,
        images: Vec<StoredImage>,
    },
    /// Erases every report, image and idempotency record of a subject (GDPR art. 17).
    EraseSubject {
        org_id: Uuid,
        subject: String,
    },

    /// Appends an event to the audit trail on its own (reads and exports of personal data,
    /// backups, membership changes).
    Audit(AuditEvent),
    /// Forgets the outcomes of requests applied before `before_ms`.
    PurgeAppliedRequests {
        before_ms: i64,
    },
    /// Restores records of a backup (validated: every key is of a known kind, every value
    /// parses). The first chunk of a restore (`replace`) drops the whole state first: a restored
    /// cluster holds exactly the backup (its accounts, its cluster secret).
    RestoreRecords {
        records: Vec<(Vec<u8>, Vec<u8>)>,
        replace: bool,
        /// The first part of a restore: refused unless the cluster holds no organisation but the
        /// platform's (a backup is restored into a new cluster, never over tenants' data).
        into_new_cluster: bool,
    },

    // New variants go last: postcard encodes a variant by its index, so entries already in a
    // Raft log keep their meaning.
    /// Opens a console session (keyed by the SHA-256 of its id) for an active user of an active
    /// organisation.
    CreateConsoleSession {
        id_hash: String,
        session: ConsoleSession,
    },
    /// Ends a console session on every node (sign-out from the console).
    EndConsoleSession {
        id_hash: String,
        /// Whose session it was (for the organisation's audit trail).
        org_id: Uuid,
        user_id: Uuid,
    },
    /// Forgets console sessions that expired before `now_ms`.
    PurgeConsoleSessions {
        now_ms: i64,
    },
}

/// Policy that applies to the whole platform.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformSettings {
    /// Platform and organisation administrators must sign in with a second factor.
    pub require_admin_mfa: bool,
}

/// What applying a request produced. **Business outcomes are the same on every node.**
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Done,
    Rejected(Rejection),
}

impl Outcome {
    pub fn is_done(&self) -> bool {
        matches!(self, Outcome::Done)
    }

    pub fn into_result(self) -> Result<(), Rejection> {
        match self {
            Outcome::Done => Ok(()),
            Outcome::Rejected(r) => Err(r),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("encoding an outcome into memory cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<Outcome, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

impl Command {
    /// Commands that take a credential away; they are acknowledged only once every member has
    /// applied them (or the staleness bound passed).
    pub fn is_revocation(&self) -> bool {
        matches!(
            self,
            Command::SetOrganizationStatus { .. }
                | Command::SetUserRoles { .. }
                | Command::SetUserStatus { .. }
                | Command::SetUserPassword { .. }
                | Command::DeleteUser { .. }
                | Command::RevokeClient { .. }
                | Command::RevokeToken { .. }
                | Command::SignOutEverywhere { .. }
                | Command::RevokeRefreshFamily { .. }
                | Command::RotateRefreshToken { .. }
                | Command::DisableTotp { .. }
                | Command::EraseSubject { .. }
                | Command::EndConsoleSession { .. }
        )
    }

    /// The command's name, for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Noop => "noop",
            Command::EnsureClusterSecret { .. } => "ensure_cluster_secret",
            Command::SetPlatformSettings(_) => "set_platform_settings",
            Command::CreateOrganization(_) => "create_organization",
            Command::SetOrganizationStatus { .. } => "set_organization_status",
            Command::UpdateOrganization { .. } => "update_organization",
            Command::CreateUser(_) => "create_user",
            Command::SetUserRoles { .. } => "set_user_roles",
            Command::SetUserStatus { .. } => "set_user_status",
            Command::SetUserPassword { .. } => "set_user_password",
            Command::DeleteUser { .. } => "delete_user",
            Command::SignOutEverywhere { .. } => "sign_out_everywhere",
            Command::EnrollTotp { .. } => "enroll_totp",
            Command::UseTotpStep { .. } => "use_totp_step",
            Command::UseRecoveryCode { .. } => "use_recovery_code",
            Command::DisableTotp { .. } => "disable_totp",
            Command::SignInAttempt { .. } => "sign_in_attempt",
            Command::ClearSignInThrottle { .. } => "clear_sign_in_throttle",
            Command::CreateClient(_) => "create_client",
            Command::RotateClientSecret { .. } => "rotate_client_secret",
            Command::RevokeClient { .. } => "revoke_client",
            Command::PutSigningKey(_) => "put_signing_key",
            Command::RotateSigningKey { .. } => "rotate_signing_key",
            Command::PurgeSigningKeys { .. } => "purge_signing_keys",
            Command::RevokeToken { .. } => "revoke_token",
            Command::PurgeRevocations { .. } => "purge_revocations",
            Command::StoreRefreshToken { .. } => "store_refresh_token",
            Command::RotateRefreshToken { .. } => "rotate_refresh_token",
            Command::RevokeRefreshFamily { .. } => "revoke_refresh_family",
            Command::CreateInvitation { .. } => "create_invitation",
            Command::RedeemInvitation { .. } => "redeem_invitation",
            Command::ClaimIdempotencyKey { .. } => "claim_idempotency_key",
            Command::ReleaseIdempotencyKey { .. } => "release_idempotency_key",
            Command::PurgeIdempotencyKeys { .. } => "purge_idempotency_keys",
            Command::StoreReport { .. } => "store_report",
            Command::EraseSubject { .. } => "erase_subject",
            Command::CreateConsoleSession { .. } => "create_console_session",
            Command::EndConsoleSession { .. } => "end_console_session",
            Command::PurgeConsoleSessions { .. } => "purge_console_sessions",
            Command::Audit(_) => "audit",
            Command::PurgeAppliedRequests { .. } => "purge_applied_requests",
            Command::RestoreRecords { .. } => "restore_records",
        }
    }
}
