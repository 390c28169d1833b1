//! The one table of error codes, and the typed errors of the domain. Every refusal the product
//! makes has an [`ErrorCode`]; `api` maps each code once to an HTTP status and problem type, and
//! `raft` once to a gRPC status, so the meaning of an error never depends on its wording.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What kind of refusal an error is. The HTTP status and problem type of each live in
/// `api/src/error.rs` (`status_of`), the gRPC code in `raft/src/error.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// A field breaks a rule (400, names the field and the rule).
    Validation,
    /// Missing or invalid credentials (401).
    Unauthorized,
    /// Authenticated, but not allowed (403).
    Forbidden,
    /// Absent, or another organisation's (404, so ids are not confirmed).
    NotFound,
    /// The state does not allow it (409).
    Conflict,
    /// A request with the same idempotency key is still running (409, retry later).
    InFlight,
    /// Understood but refused (422).
    Unprocessable,
    /// Too many requests or sign-in attempts (429, retry later).
    TooManyRequests,
    /// Larger than allowed (413).
    PayloadTooLarge,
    /// This node cannot serve now: no leader, not current, shutting down (503).
    Unavailable,
    /// The node's disk is (almost) full (507).
    InsufficientStorage,
    /// A write whose outcome is unknown (504): it may or may not have been applied.
    OutcomeUnknown,
    /// A fault of the node (500; details logged, never sent).
    Internal,
}

/// A business outcome of applying a command: the same on every node, decided by the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("{0} not found")]
    NotFound(Entity),
    #[error("{0} already exists")]
    AlreadyExists(Entity),
    #[error("the username is taken")]
    UsernameTaken,
    #[error("the organization is not active")]
    OrganizationInactive,
    #[error("the platform operator organization cannot be suspended")]
    PlatformOrganizationProtected,
    #[error("this Idempotency-Key already produced report {report_id}")]
    IdempotencyDone { report_id: Uuid },
    #[error("a request with this Idempotency-Key is still in flight; retry after the indicated delay")]
    IdempotencyInFlight,
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyMismatch,
    #[error("the subject was erased while this analysis ran; send it again to start a new series")]
    SubjectErased,
    #[error("previousReportId must be a report of the same subject in your organisation")]
    PreviousNotInSeries,
    #[error("report {previous} already has a successor, {next}; link to the latest report of the series")]
    PreviousHasSuccessor { previous: Uuid, next: Uuid },
    #[error("the invitation is invalid, used or expired")]
    InvitationInvalid,
    #[error("the refresh token was used before: its family is revoked")]
    RefreshReused,
    #[error("too many failed sign-ins; retry after {retry_after_secs} s")]
    SignInThrottled { retry_after_secs: u64 },
    #[error("invalid username or password")]
    BadCredentials,
    #[error("the second-factor code is invalid or was used before")]
    SecondFactorInvalid,
    #[error("the cluster secret is not set yet (bootstrap not complete)")]
    NotBootstrapped,
    #[error("a backup is restored only into a new cluster; this one already holds organisations")]
    RestoreNeedsNewCluster,
    #[error("unsupported command schema {0}")]
    UnsupportedSchema(u16),
    #[error("invalid command: {0}")]
    InvalidCommand(String),
}

/// The things a rejection can be about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entity {
    Organization,
    User,
    Client,
    Report,
    Invitation,
    SigningKey,
    Subject,
    StoredImage,
    Node,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Entity::Organization => "organization",
            Entity::User => "user",
            Entity::Client => "client",
            Entity::Report => "report",
            Entity::Invitation => "invitation",
            Entity::SigningKey => "signing key",
            Entity::Subject => "subject",
            Entity::StoredImage => "stored image",
            Entity::Node => "node",
        })
    }
}

impl Rejection {
    pub fn code(&self) -> ErrorCode {
        match self {
            Rejection::NotFound(_) => ErrorCode::NotFound,
            Rejection::AlreadyExists(_)
            | Rejection::UsernameTaken
            | Rejection::SubjectErased
            | Rejection::RestoreNeedsNewCluster
            | Rejection::PreviousHasSuccessor { .. }
            | Rejection::IdempotencyDone { .. } => ErrorCode::Conflict,
            Rejection::IdempotencyInFlight => ErrorCode::InFlight,
            Rejection::OrganizationInactive
            | Rejection::PlatformOrganizationProtected
            | Rejection::IdempotencyMismatch
            | Rejection::UnsupportedSchema(_)
            | Rejection::InvalidCommand(_) => ErrorCode::Unprocessable,
            Rejection::PreviousNotInSeries => ErrorCode::Validation,
            Rejection::InvitationInvalid => ErrorCode::Validation,
            Rejection::RefreshReused | Rejection::BadCredentials | Rejection::SecondFactorInvalid => {
                ErrorCode::Unauthorized
            }
            Rejection::SignInThrottled { .. } => ErrorCode::TooManyRequests,
            Rejection::NotBootstrapped => ErrorCode::Unavailable,
        }
    }
}
