//! The replicated data model: the records kept in the state machine and the typed commands that
//! change them. Commands carry every time and id they need (stamped by the proposing node), so
//! applying them is deterministic on every node.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version of the command encoding; a node refuses to propose commands of a newer schema.
pub const SCHEMA_VERSION: u16 = 1;

/// One replicated write: a command plus the time the proposer stamped on it (unix ms) and a
/// unique id. **The state machine applies one request id once**: a request proposed again after
/// an attempt whose outcome was unknown (a leader lost mid-flight) answers with the outcome of
/// the first application, so the write path may retry any write on the next leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub schema: u16,
    /// Nil for requests that need no deduplication (internal entries, old logs).
    #[serde(default)]
    pub id: Uuid,
    pub at_ms: i64,
    pub command: Command,
}

impl Command {
    /// Commands that take a credential away; they are acknowledged only once every reachable
    /// node has applied them.
    pub fn is_revocation(&self) -> bool {
        matches!(
            self,
            Command::SetOrganizationStatus { .. }
                | Command::UpdateUser(_)
                | Command::DeleteUser { .. }
                | Command::UpdateClient(_)
                | Command::DeleteClient { .. }
                | Command::RevokeToken { .. }
                | Command::SignOutEverywhere { .. }
                | Command::RevokeRefreshFamily { .. }
                | Command::RotateRefreshToken { .. }
                | Command::RecordSignInFailure { .. }
                // Erasure: once acknowledged, no reachable node may still serve the subject.
                | Command::EraseSubject { .. }
        )
    }
}

impl Request {
    pub fn new(at_ms: i64, command: Command) -> Request {
        Request { schema: SCHEMA_VERSION, id: Uuid::new_v4(), at_ms, command }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Does nothing; used to probe that the cluster can commit (readiness, benchmarks).
    Noop,
    CreateOrganization(Organization),
    SetOrganizationStatus {
        id: Uuid,
        status: OrgStatus,
    },
    CreateUser(User),
    /// Replaces a user record; the username and organisation of an existing user never change.
    UpdateUser(User),
    DeleteUser {
        org_id: Uuid,
        id: Uuid,
    },
    CreateClient(Client),
    UpdateClient(Client),
    DeleteClient {
        org_id: Uuid,
        client_id: String,
    },
    PutSigningKey(SigningKey),
    RevokeToken {
        jti: String,
        exp: i64,
    },
    /// Drops revoked token ids whose tokens have expired anyway.
    PurgeRevocations {
        before: i64,
    },
    /// Counts a failed sign-in for a username (existing or not) under the given policy.
    RecordSignInFailure {
        username: String,
        policy: LockoutPolicy,
    },
    /// Clears the failure count after a successful sign-in or an administrator's unlock.
    ResetSignInFailures {
        username: String,
    },
    /// Sets a user's `tokens_valid_after_ms` to the request time: every earlier token is refused.
    SignOutEverywhere {
        user_id: Uuid,
    },
    /// Rotates a refresh token: the old one is marked used and the new one stored, atomically.
    /// Presenting an already-rotated token is reuse: the whole family is revoked (RFC 9700).
    RotateRefreshToken {
        old: String,
        new: String,
        record: serde_json::Value,
    },
    /// Makes `key` the active signing key; every other active key starts retiring and stops
    /// verifying after `retire_after` (unix seconds), when the last token it signed has expired.
    RotateSigningKey {
        key: SigningKey,
        retire_after: i64,
    },
    /// Drops signing keys that have retired.
    PurgeSigningKeys {
        now_secs: i64,
    },
    /// Self-service registration: creates `user` from a single-use, unexpired invitation of its
    /// organisation, and uses the invitation up, atomically.
    RedeemInvitation {
        invitation: String,
        user: User,
    },
    /// Marks a refresh token family revoked (reuse of a rotated refresh token, or sign-out).
    RevokeRefreshFamily {
        family: Uuid,
    },
    /// Restores records from a backup (keys and JSON values as the backup holds them).
    ImportRecords {
        records: Vec<(String, String)>,
    },
    /// Stores an opaque, already-validated record in a named collection (reports, idempotency).
    PutRecord {
        collection: Collection,
        id: String,
        value: serde_json::Value,
        unique: bool,
    },
    DeleteRecord {
        collection: Collection,
        id: String,
    },
    /// Sets an organisation's data-handling choices (image storage opt-in).
    SetOrganizationSettings {
        id: Uuid,
        store_images: bool,
    },
    /// Renames an organisation (its display name; the id never changes).
    RenameOrganization {
        id: Uuid,
        name: String,
    },
    /// Reserves an idempotency key for a request in flight. Refused (`Conflict`) while another
    /// request holds the key or a completed request's record has not expired.
    ClaimIdempotencyKey {
        scoped_key: String,
        record: IdempotencyRecord,
    },
    /// Frees a key whose request failed before it produced a report, so the client may retry.
    ReleaseIdempotencyKey {
        scoped_key: String,
        fingerprint: String,
    },
    /// Adds an immutable report to its subject's time series (with its stored images, if any),
    /// and completes the idempotency key it was computed under, atomically.
    StoreReport {
        report: StoredReport,
        images: Vec<StoredImage>,
    },
    /// Erases every report, image and idempotency record of a subject (GDPR art. 17) and writes
    /// an audit entry, atomically.
    EraseSubject {
        org_id: Uuid,
        subject: String,
        audit: AuditEntry,
    },
    /// Writes an audit entry on its own (exports of personal data).
    Audit(AuditEntry),
    /// Drops idempotency records that have expired.
    PurgeIdempotencyKeys {
        now_ms: i64,
    },
    /// Forgets the ids of requests applied before `before_ms` (retries happen within seconds).
    PurgeAppliedRequests {
        before_ms: i64,
    },
}

/// The outcome of an applied request, kept under its id for as long as a retry may arrive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedRequest {
    pub response: Response,
}

impl Command {
    /// The command's name as it is encoded (`type`), for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Noop => "noop",
            Command::CreateOrganization(..) => "create_organization",
            Command::SetOrganizationStatus { .. } => "set_organization_status",
            Command::CreateUser(..) => "create_user",
            Command::UpdateUser(..) => "update_user",
            Command::DeleteUser { .. } => "delete_user",
            Command::CreateClient(..) => "create_client",
            Command::UpdateClient(..) => "update_client",
            Command::DeleteClient { .. } => "delete_client",
            Command::PutSigningKey(..) => "put_signing_key",
            Command::RevokeToken { .. } => "revoke_token",
            Command::PurgeRevocations { .. } => "purge_revocations",
            Command::RecordSignInFailure { .. } => "record_sign_in_failure",
            Command::ResetSignInFailures { .. } => "reset_sign_in_failures",
            Command::SignOutEverywhere { .. } => "sign_out_everywhere",
            Command::RotateRefreshToken { .. } => "rotate_refresh_token",
            Command::RotateSigningKey { .. } => "rotate_signing_key",
            Command::PurgeSigningKeys { .. } => "purge_signing_keys",
            Command::RedeemInvitation { .. } => "redeem_invitation",
            Command::RevokeRefreshFamily { .. } => "revoke_refresh_family",
            Command::ImportRecords { .. } => "import_records",
            Command::PutRecord { .. } => "put_record",
            Command::DeleteRecord { .. } => "delete_record",
            Command::SetOrganizationSettings { .. } => "set_organization_settings",
            Command::RenameOrganization { .. } => "rename_organization",
            Command::ClaimIdempotencyKey { .. } => "claim_idempotency_key",
            Command::ReleaseIdempotencyKey { .. } => "release_idempotency_key",
            Command::StoreReport { .. } => "store_report",
            Command::EraseSubject { .. } => "erase_subject",
            Command::Audit(..) => "audit",
            Command::PurgeIdempotencyKeys { .. } => "purge_idempotency_keys",
            Command::PurgeAppliedRequests { .. } => "purge_applied_requests",
        }
    }
}

/// What applying a command produced; errors here are business outcomes, identical on all nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Response {
    Ok,
    Conflict { reason: String },
    NotFound { what: String },
    Rejected { reason: String },
}

impl Response {
    pub fn is_ok(&self) -> bool {
        matches!(self, Response::Ok)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Collection {
    Report,
    Idempotency,
    Invitation,
    Audit,
    RefreshToken,
}

impl Collection {
    pub fn prefix(self) -> &'static str {
        match self {
            Collection::Report => "rep/",
            Collection::Idempotency => "idem/",
            Collection::Invitation => "inv/",
            Collection::Audit => "aud/",
            Collection::RefreshToken => "rt/",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    pub status: OrgStatus,
    pub attestation: Attestation,
    pub created_at: i64,
    /// Opt-in: keep the analysed images (re-encoded, metadata stripped) with the reports.
    #[serde(default)]
    pub store_images: bool,
}

/// The contract clause in which the customer declares it is a licensed healthcare provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    pub contract_reference: String,
    pub attested_by: String,
    pub attested_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgStatus {
    Active,
    Suspended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    PlatformAdmin,
    OrgAdmin,
    Clinician,
    Auditor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Disabled,
    /// Locked after repeated temporary lockouts, until an administrator unlocks it.
    Locked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub org_id: Uuid,
    pub username: String,
    pub roles: Vec<Role>,
    /// argon2id PHC string; the plaintext password is never stored.
    pub password_hash: String,
    pub status: UserStatus,
    /// Tokens issued before this instant (unix milliseconds) are refused.
    pub tokens_valid_after_ms: i64,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSecret {
    /// SHA-256 of a 256-bit random secret, hex; the secret itself is shown once and never stored.
    pub hash: String,
    /// After a rotation the old secret keeps working until this instant (unix seconds).
    pub valid_until: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    pub client_id: String,
    pub org_id: Uuid,
    pub name: String,
    pub scopes: Vec<String>,
    pub secrets: Vec<ClientSecret>,
    pub revoked: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    /// Still verifies tokens it signed, signs nothing new.
    Retiring,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    /// Ed25519 private key, PKCS#8 DER in base64 (sealed at rest like every stored value).
    pub private_pkcs8: String,
    /// Ed25519 public key, base64url (the JWK `x`).
    pub public_x: String,
    pub status: KeyStatus,
    pub created_at: i64,
    /// When a retiring key stops verifying (unix seconds).
    pub retire_after: Option<i64>,
}

/// A single-use, expiring invitation to register in an organisation with given roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    pub org_id: Uuid,
    pub roles: Vec<Role>,
    pub expires_at_ms: i64,
    pub used: bool,
    pub created_by: String,
}

/// Keycloak-like brute-force protection, carried in the command so apply stays deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutPolicy {
    /// Failures before a temporary lock.
    pub max_failures: u32,
    /// Each temporary lock waits this much longer than the previous one (ms).
    pub wait_increment_ms: i64,
    pub max_wait_ms: i64,
    /// Failures older than this are forgotten (ms).
    pub failure_reset_ms: i64,
    /// After this many temporary locks the account is locked until an administrator unlocks it.
    pub permanent_after: u32,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            max_failures: 5,
            wait_increment_ms: 60_000,
            max_wait_ms: 15 * 60_000,
            failure_reset_ms: 12 * 3_600_000,
            permanent_after: 5,
        }
    }
}

/// Failed sign-ins of one username.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInState {
    pub failures: u32,
    pub last_failure_ms: i64,
    pub locked_until_ms: i64,
    pub temporary_locks: u32,
    pub permanently_locked: bool,
}

impl SignInState {
    pub fn is_locked(&self, now_ms: i64) -> bool {
        self.permanently_locked || now_ms < self.locked_until_ms
    }
}

/// A diagnostic report in its subject's time series. **Reports are immutable**: a new analysis
/// of the same lesion adds a point linked by `previous_report_id`, it never overwrites one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredReport {
    pub id: Uuid,
    pub org_id: Uuid,
    /// The care provider's pseudonymous identifier of the subject (never a name).
    pub subject: String,
    pub issued_ms: i64,
    /// When the request that produced the report arrived (unix ms): an analysis requested
    /// before its subject's erasure is not stored, however long it ran.
    #[serde(default)]
    pub requested_ms: i64,
    pub previous_report_id: Option<Uuid>,
    /// The organisation-scoped idempotency key this report completes, if any.
    pub idempotency_key: Option<String>,
    /// The fingerprint of the request under that key: a key since claimed by a different
    /// request (after this one's lease lapsed) is not completed by this report.
    #[serde(default)]
    pub idempotency_fingerprint: Option<String>,
    /// The report as the API returns it.
    pub body: serde_json::Value,
}

/// An analysed image kept with its report (organisations that opted in); re-encoded, so it
/// carries no EXIF or other metadata of the upload. **Only its digest and size cross the Raft
/// log**: the bytes are a blob (`crate::blobs`), stored on a quorum before the report is proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredImage {
    pub report_id: Uuid,
    pub index: u32,
    pub content_type: String,
    /// SHA-256 of the image bytes (lowercase hex): the blob's name.
    pub digest: String,
    pub size: u64,
}

/// What an `Idempotency-Key` is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// SHA-256 of the canonical request: the same key with another body is refused.
    pub fingerprint: String,
    pub state: IdempotencyState,
    /// After this instant (unix ms) the key is forgotten.
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum IdempotencyState {
    /// A request holds the key until `lease_until_ms` (after which a crashed holder is presumed).
    InFlight {
        lease_until_ms: i64,
    },
    Done {
        report_id: Uuid,
    },
}

impl IdempotencyRecord {
    pub fn is_live(&self, now_ms: i64) -> bool {
        match self.state {
            IdempotencyState::InFlight { lease_until_ms } => now_ms < lease_until_ms && now_ms < self.expires_at_ms,
            IdempotencyState::Done { .. } => now_ms < self.expires_at_ms,
        }
    }
}

/// An entry of the audit trail of personal-data operations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: Uuid,
    pub at_ms: i64,
    pub action: String,
    pub actor: String,
    pub org_id: Uuid,
    /// SHA-256 of the subject identifier: the trail proves the erasure without keeping the id.
    pub subject_hash: String,
    /// Filled in by apply (how many reports were affected).
    #[serde(default)]
    pub reports: u64,
}

/// RocksDB keys of the state machine. **Keys carry ids and hashes only, never personal data.**
pub mod keys {
    use sha2::{Digest, Sha256};
    use uuid::Uuid;

    pub const ORG: &str = "org/";
    pub const USER: &str = "usr/";
    pub const USERNAME: &str = "uname/";
    pub const CLIENT: &str = "cli/";
    pub const SIGNING_KEY: &str = "skey/";
    pub const REVOKED_JTI: &str = "rjti/";
    pub const CLIENT_SECRET: &str = "csec/";
    pub const SIGN_IN: &str = "signin/";

    pub fn org(id: &Uuid) -> Vec<u8> {
        format!("{ORG}{id}").into_bytes()
    }
    pub fn user(id: &Uuid) -> Vec<u8> {
        format!("{USER}{id}").into_bytes()
    }
    /// Usernames are indexed by a hash so the key does not reveal them.
    pub fn username(name: &str) -> Vec<u8> {
        format!("{USERNAME}{}", hash_hex(&name.to_lowercase())).into_bytes()
    }
    pub fn client(client_id: &str) -> Vec<u8> {
        format!("{CLIENT}{}", hash_hex(client_id)).into_bytes()
    }
    pub fn signing_key(kid: &str) -> Vec<u8> {
        format!("{SIGNING_KEY}{kid}").into_bytes()
    }
    pub fn revoked_jti(jti: &str) -> Vec<u8> {
        format!("{REVOKED_JTI}{}", hash_hex(jti)).into_bytes()
    }
    /// Index from a client secret's hash to its client, so a static API key finds its client.
    pub fn client_secret(secret_hash: &str) -> Vec<u8> {
        format!("{CLIENT_SECRET}{secret_hash}").into_bytes()
    }
    /// Sign-in failure state, by username hash: kept for unknown usernames too, so lockout
    /// behaves the same whether or not the user exists.
    pub fn sign_in(username: &str) -> Vec<u8> {
        format!("{SIGN_IN}{}", hash_hex(&username.to_lowercase())).into_bytes()
    }
    pub fn revoked_family(family: &Uuid) -> Vec<u8> {
        format!("rfam/{family}").into_bytes()
    }
    pub const SUBJECT: &str = "subj/";
    pub const IMAGE: &str = "img/";

    /// Prefix of one subject's time-series index: `subj/<hash(org, subject)>/`.
    pub fn subject_prefix(org_id: &Uuid, subject: &str) -> String {
        format!("{SUBJECT}{}/", hash_hex(&format!("{org_id}/{subject}")))
    }
    /// Index entry ordered by issue time, then id: a scan of the prefix is the time series.
    pub fn subject_entry(org_id: &Uuid, subject: &str, issued_ms: i64, report: &Uuid) -> Vec<u8> {
        format!("{}{:016x}/{report}", subject_prefix(org_id, subject), issued_ms.max(0)).into_bytes()
    }
    pub fn image_prefix(report: &Uuid) -> String {
        format!("{IMAGE}{report}/")
    }
    /// When a subject was last erased (unix ms): an analysis issued before it is not stored.
    pub fn subject_erased(org_id: &Uuid, subject: &str) -> Vec<u8> {
        format!("subjx/{}", hash_hex(&format!("{org_id}/{subject}"))).into_bytes()
    }
    /// One reference from a report to a blob: a blob with no reference left is garbage.
    pub fn blob_ref(digest: &str, report: &Uuid) -> Vec<u8> {
        format!("{}{report}", blob_ref_prefix(digest)).into_bytes()
    }
    pub fn blob_ref_prefix(digest: &str) -> String {
        format!("bref/{digest}/")
    }
    /// A blob whose last reference was erased: every node deletes it (also one that was away).
    pub const BLOB_GONE: &str = "bgone/";
    pub fn blob_gone(digest: &str) -> Vec<u8> {
        format!("{BLOB_GONE}{digest}").into_bytes()
    }
    pub fn image(report: &Uuid, index: u32) -> Vec<u8> {
        format!("{}{index:02}", image_prefix(report)).into_bytes()
    }
    pub const APPLIED_REQUEST: &str = "areq/";

    /// The outcome of an applied request, ordered by the request's time so that forgetting old
    /// ones is one range deletion.
    pub fn applied_request(at_ms: i64, id: &Uuid) -> Vec<u8> {
        format!("{APPLIED_REQUEST}{:016x}/{id}", at_ms.max(0)).into_bytes()
    }

    pub fn record(collection: super::Collection, id: &str) -> Vec<u8> {
        format!("{}{}", collection.prefix(), hash_hex(id)).into_bytes()
    }

    pub fn hash_hex(s: &str) -> String {
        hex::encode(Sha256::digest(s.as_bytes()))
    }
}
