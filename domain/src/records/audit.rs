//! The audit trail: security-relevant events appended through Raft as a hash chain. Each record
//! holds the hash of the previous one, so removing, reordering or editing any record breaks
//! every hash after it (`dermagate audit verify`). No secret, image, password or subject
//! identifier is ever in the trail (subjects appear as keyed hashes).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: u64,
    pub at_ms: i64,
    pub event: AuditEvent,
    /// Hash of the previous record (all zeros for the first).
    pub prev_hash: String,
    /// SHA-256 over `seq`, `at_ms`, the event and `prev_hash`.
    pub hash: String,
}

/// What happened, by whom, to what. `org_id` is the organisation whose trail shows it (the
/// platform's own for platform events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub action: String,
    /// A user id, a client id, `system`, or `anonymous` (a failed sign-in).
    pub actor: String,
    pub org_id: Uuid,
    /// What the action was about (a user id, client id, node id, keyed subject hash...).
    pub target: String,
    pub outcome: String,
    /// Counts and flags only (never a secret or a personal identifier).
    pub detail: String,
}

impl AuditRecord {
    /// The hash a record with these contents must carry.
    /// Chains are per organisation, so an organisation can verify its own trail.
    pub fn compute_hash(seq: u64, at_ms: i64, event: &AuditEvent, prev_hash: &str) -> String {
        let mut h = Sha256::new();
        for part in [
            seq.to_string().as_str(),
            at_ms.to_string().as_str(),
            &event.action,
            &event.actor,
            &event.org_id.to_string(),
            &event.target,
            &event.outcome,
            &event.detail,
            prev_hash,
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }

    pub fn first_prev_hash() -> String {
        "0".repeat(64)
    }
}

/// Checks a chain in order: every record's hash is its contents' hash and links to the one
/// before. Returns the sequence number of the first bad record.
pub fn verify_chain<'a>(records: impl IntoIterator<Item = &'a AuditRecord>) -> Result<u64, (u64, String)> {
    let mut prev = AuditRecord::first_prev_hash();
    let mut expected_seq = 1;
    for r in records {
        if r.seq != expected_seq {
            return Err((
                r.seq,
                format!("record {} found where {expected_seq} was expected (a record is missing)", r.seq),
            ));
        }
        if r.prev_hash != prev {
            return Err((r.seq, format!("record {} does not link to the record before it", r.seq)));
        }
        if r.hash != AuditRecord::compute_hash(r.seq, r.at_ms, &r.event, &r.prev_hash) {
            return Err((r.seq, format!("record {} was altered (its hash does not match its contents)", r.seq)));
        }
        prev = r.hash.clone();
        expected_seq += 1;
    }
    Ok(expected_seq - 1)
}
