//! The services the HTTP layer calls: each decides one kind of request from the replicated state
//! and commits what it decided through a [`Replicator`]. They know nothing of HTTP or Raft: the
//! Raft node implements the replicator, the store implements the state view, the API maps
//! [`ServiceError`]'s code to a status.

pub mod analyses;
pub mod audit;
pub mod bootstrap;
pub mod console;
pub mod credentials;
pub mod identity;
pub mod maintenance;
pub mod organizations;
pub mod passwords;
pub mod tokens;
pub mod totp;
pub mod validate;

use std::sync::Arc;

use crate::command::{Command, Outcome, Request};
use crate::error::{Entity, ErrorCode, Rejection};
use crate::keys::Keyer;
use crate::state::{StateError, StateRead};

/// The replicated state as services read it (the node's store).
pub trait StateView: StateRead + Send + Sync + 'static {
    /// Bumped after every applied batch that changed credentials.
    fn credentials_epoch(&self) -> u64;
    /// The keyer of the cluster secret, once the bootstrap recorded it.
    fn keyer(&self) -> Result<Option<Keyer>, StateError>;
}

/// How services change the replicated state (implemented by the Raft node).
#[async_trait::async_trait]
pub trait Replicator: Send + Sync + 'static {
    /// Commits `req` through the leader and returns its outcome once this node applied it.
    /// A revocation is returned only after every member applied it or the staleness bound passed.
    async fn commit(&self, req: Request) -> Result<Outcome, ServiceError>;
    /// Brings this node up to the leader's read index: the next read is linearizable.
    async fn linearize(&self) -> Result<(), ServiceError>;
    /// Whether this node may authenticate now (fails closed when not proven current).
    fn readiness(&self) -> Result<(), ServiceError>;
}

/// Image bytes for reports: stored on a quorum before a report names them, read back verified.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + 'static {
    async fn store(&self, digest: &str, bytes: Vec<u8>) -> Result<(), ServiceError>;
    async fn fetch(&self, digest: &str) -> Result<Vec<u8>, ServiceError>;
}

/// Everything a service needs, shared by all of them.
#[derive(Clone)]
pub struct Context {
    pub state: Arc<dyn StateView>,
    pub replicator: Arc<dyn Replicator>,
    pub blobs: Arc<dyn BlobStore>,
}

impl Context {
    /// Commits `command` on behalf of `actor`, stamped with the current time; a rejection
    /// becomes an error.
    pub async fn commit(&self, actor: &str, command: Command) -> Result<(), ServiceError> {
        let outcome = self.replicator.commit(Request::new(now_ms(), actor, command)).await?;
        outcome.into_result().map_err(ServiceError::from)
    }

    /// Like [`Context::commit`], returning the outcome as it is (for callers that branch on it).
    pub async fn commit_outcome(&self, actor: &str, command: Command) -> Result<Outcome, ServiceError> {
        self.replicator.commit(Request::new(now_ms(), actor, command)).await
    }

    pub fn keyer(&self) -> Result<Keyer, ServiceError> {
        self.state.keyer()?.ok_or_else(|| ServiceError::from(Rejection::NotBootstrapped))
    }

    /// Reads with `read`; on a miss, catches up with the leader and reads again, so a record
    /// written through another node a moment ago is found here too.
    pub async fn read_fresh<T>(
        &self,
        read: impl Fn() -> Result<Option<T>, ServiceError>,
    ) -> Result<Option<T>, ServiceError> {
        if let Some(found) = read()? {
            return Ok(Some(found));
        }
        if let Err(e) = self.replicator.linearize().await {
            tracing::debug!(error = %e, "could not catch up with the leader; answering from local state");
        }
        read()
    }
}

/// The wall clock services stamp into commands (apply itself never reads a clock).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub fn now_secs() -> i64 {
    now_ms() / 1000
}

/// A refusal or failure of a service, typed by its [`ErrorCode`] (boxed: errors are rare, and
/// results stay small on the happy path).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.detail)]
pub struct ServiceError(Box<ErrorDetail>);

#[derive(Debug, Clone)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub detail: String,
    /// For validation errors: the field and the rule it broke.
    pub field: Option<String>,
    pub rule: Option<String>,
    /// For 401: the RFC 6750 error code (`invalid_token`, `invalid_request`...).
    pub auth_error: Option<&'static str>,
    /// When a retry may succeed (429, 503, in-flight).
    pub retry_after_secs: Option<u64>,
    /// The rejection this error came from, when it came from applying a command.
    pub rejection: Option<Rejection>,
}

impl std::ops::Deref for ServiceError {
    type Target = ErrorDetail;
    fn deref(&self) -> &ErrorDetail {
        &self.0
    }
}

impl std::ops::DerefMut for ServiceError {
    fn deref_mut(&mut self) -> &mut ErrorDetail {
        &mut self.0
    }
}

impl ServiceError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> ServiceError {
        ServiceError(Box::new(ErrorDetail {
            code,
            detail: detail.into(),
            field: None,
            rule: None,
            auth_error: None,
            retry_after_secs: None,
            rejection: None,
        }))
    }

    /// The details, owned.
    pub fn into_detail(self) -> ErrorDetail {
        *self.0
    }

    pub fn validation(field: impl Into<String>, rule: impl Into<String>, detail: impl Into<String>) -> ServiceError {
        let mut e = ServiceError::new(ErrorCode::Validation, detail);
        e.field = Some(field.into());
        e.rule = Some(rule.into());
        e
    }

    pub fn unauthorized(error: &'static str, detail: impl Into<String>) -> ServiceError {
        let mut e = ServiceError::new(ErrorCode::Unauthorized, detail);
        e.auth_error = Some(error);
        e
    }

    pub fn invalid_token(detail: impl Into<String>) -> ServiceError {
        ServiceError::unauthorized("invalid_token", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorCode::Forbidden, detail)
    }

    pub fn not_found(what: Entity) -> ServiceError {
        ServiceError::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn unavailable(detail: impl Into<String>, retry_after_secs: u64) -> ServiceError {
        ServiceError::new(ErrorCode::Unavailable, detail).with_retry_after(retry_after_secs)
    }

    pub fn internal(cause: impl std::fmt::Display) -> ServiceError {
        ServiceError::new(ErrorCode::Internal, cause.to_string())
    }

    pub fn with_retry_after(mut self, secs: u64) -> ServiceError {
        self.retry_after_secs = Some(secs);
        self
    }
}

impl From<Rejection> for ServiceError {
    fn from(r: Rejection) -> Self {
        let mut e = ServiceError::new(r.code(), r.to_string());
        match &r {
            Rejection::PreviousNotInSeries | Rejection::PreviousHasSuccessor { .. } => {
                e.field = Some("previousReportId".into());
                e.rule = Some(
                    if matches!(r, Rejection::PreviousNotInSeries) { "same_subject" } else { "single_successor" }
                        .into(),
                );
            }
            Rejection::InvitationInvalid => {
                e.field = Some("invitation".into());
                e.rule = Some("valid_invitation".into());
            }
            Rejection::SignInThrottled { retry_after_secs } => e.retry_after_secs = Some(*retry_after_secs),
            Rejection::IdempotencyInFlight => e.retry_after_secs = Some(1),
            Rejection::BadCredentials | Rejection::RefreshReused | Rejection::SecondFactorInvalid => {
                e.auth_error = Some("invalid_grant");
            }
            Rejection::NotBootstrapped => e.retry_after_secs = Some(1),
            _ => {}
        }
        e.rejection = Some(r);
        e
    }
}

impl From<StateError> for ServiceError {
    fn from(e: StateError) -> Self {
        ServiceError::internal(e)
    }
}
