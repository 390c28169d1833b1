//! The typed records of the replicated state, one concept per file.

pub mod audit;
pub mod client;
pub mod console_session;
pub mod idempotency;
pub mod invitation;
pub mod organization;
pub mod refresh_token;
pub mod report;
pub mod sign_in;
pub mod signing_key;
pub mod user;

pub use audit::{AuditEvent, AuditRecord};
pub use client::{Client, ClientSecret};
pub use console_session::ConsoleSession;
pub use idempotency::{IdempotencyRecord, IdempotencyState};
pub use invitation::Invitation;
pub use organization::{Attestation, OrgStatus, Organization, PLATFORM_ORG_ID};
pub use refresh_token::RefreshRecord;
pub use report::{Report, StoredImage, StoredReport};
pub use sign_in::{FailureCount, ThrottlePolicy};
pub use signing_key::{KeyStatus, SigningKey};
pub use user::{Role, Totp, User, UserStatus};
