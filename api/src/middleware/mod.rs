//! What runs around every handler: bodies read up front, security headers, metrics, and the
//! conversion of every error answer to problem+json (`crate::error::problems_everywhere`).

pub mod body;
pub mod headers;
pub mod metrics;
