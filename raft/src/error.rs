//! Errors of the Raft layer as the API sees them: a write either succeeded, certainly failed, or
//! has an unknown outcome, and the last is never reported as success.

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No leader is known (election in progress or quorum lost); nothing was proposed.
    #[error("no leader is available to accept the write")]
    NoLeader,
    /// The write may or may not have been committed (timeout, leader lost mid-flight).
    #[error("the outcome of the write is unknown: {0}")]
    OutcomeUnknown(String),
    /// The node is shutting down or its Raft core stopped.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The command would make a Raft entry larger than the limit; nothing was proposed.
    #[error("the write is {bytes} bytes, more than the {limit} bytes one replicated entry may hold")]
    TooLarge { bytes: usize, limit: usize },
    #[error("internal: {0}")]
    Internal(String),
}

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("{0}")]
    Invalid(String),
    #[error("node {0} is not a member")]
    UnknownNode(u64),
    #[error("another membership change is in progress")]
    InProgress,
    #[error(transparent)]
    Write(#[from] WriteError),
}
