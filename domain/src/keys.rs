//! The key layout of the replicated state. **Keys carry ids and keyed hashes only, never personal
//! data**: a username, a subject identifier, a token or an idempotency key appears in a key only as
//! an HMAC under the cluster secret (`Keyer`), so that a copy of the data directory cannot be
//! searched for a guessed name without that secret (which is sealed like every value).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// Computes keyed hashes under the cluster secret.
#[derive(Clone)]
pub struct Keyer {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Keyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyer(..)")
    }
}

impl Keyer {
    pub fn new(cluster_secret: &[u8]) -> Keyer {
        Keyer { mac: <Hmac<Sha256> as Mac>::new_from_slice(cluster_secret).expect("HMAC takes any key length") }
    }

    /// The keyed hash of `value` for one `purpose` (so equal values of different kinds differ).
    pub fn hash(&self, purpose: &str, value: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    pub fn username(&self, username: &str) -> Vec<u8> {
        format!("{USERNAME}{}", self.hash("username", &username.to_lowercase())).into_bytes()
    }
    pub fn client(&self, client_id: &str) -> Vec<u8> {
        format!("{CLIENT}{}", self.hash("client", client_id)).into_bytes()
    }
    pub fn revoked_jti(&self, jti: &str) -> Vec<u8> {
        format!("{REVOKED_JTI}{}", self.hash("jti", jti)).into_bytes()
    }
    pub fn refresh_token(&self, token: &str) -> Vec<u8> {
        format!("{REFRESH_TOKEN}{}", self.hash("refresh", token)).into_bytes()
    }
    pub fn invitation(&self, token: &str) -> Vec<u8> {
        format!("{INVITATION}{}", self.hash("invitation", token)).into_bytes()
    }
    /// Sign-in failures of a username from all sources.
    pub fn sign_in_user(&self, username: &str) -> Vec<u8> {
        format!("{SIGN_IN}u/{}", self.hash("signin", &username.to_lowercase())).into_bytes()
    }
    /// Sign-in failures of a username from one source (a client address).
    pub fn sign_in_source(&self, username: &str, source: &str) -> Vec<u8> {
        format!("{SIGN_IN}s/{}", self.hash("signin-source", &format!("{}\0{source}", username.to_lowercase())))
            .into_bytes()
    }
    /// The keyed hash that stands for a subject (in keys, in the audit trail).
    pub fn subject(&self, org_id: &Uuid, subject: &str) -> String {
        self.hash("subject", &format!("{org_id}/{subject}"))
    }
    /// Prefix of one subject's time-series index: `subj/<keyed hash>/`.
    pub fn subject_prefix(&self, org_id: &Uuid, subject: &str) -> String {
        format!("{SUBJECT}{}/", self.subject(org_id, subject))
    }
    /// Index entry ordered by issue time, then id: a scan of the prefix is the time series.
    pub fn subject_entry(&self, org_id: &Uuid, subject: &str, issued_ms: i64, report: &Uuid) -> Vec<u8> {
        format!("{}{:016x}/{report}", self.subject_prefix(org_id, subject), issued_ms.max(0)).into_bytes()
    }
    /// When a subject was last erased (unix ms): an analysis requested before it is not stored.
    pub fn subject_erased(&self, org_id: &Uuid, subject: &str) -> Vec<u8> {
        format!("{SUBJECT_ERASED}{}", self.subject(org_id, subject)).into_bytes()
    }
    pub fn idempotency(&self, scoped_key: &str) -> Vec<u8> {
        format!("{IDEMPOTENCY}{}", self.hash("idempotency", scoped_key)).into_bytes()
    }
}

pub const ORG: &str = "org/";
pub const USER: &str = "usr/";
pub const USERNAME: &str = "uname/";
pub const CLIENT: &str = "cli/";
pub const CLIENT_SECRET: &str = "csec/";
pub const SIGNING_KEY: &str = "skey/";
pub const REVOKED_JTI: &str = "rjti/";
pub const REVOKED_FAMILY: &str = "rfam/";
pub const REFRESH_TOKEN: &str = "rt/";
pub const INVITATION: &str = "inv/";
pub const SIGN_IN: &str = "signin/";
pub const REPORT: &str = "rep/";
pub const SUBJECT: &str = "subj/";
pub const SUBJECT_ERASED: &str = "subjx/";
pub const IMAGE: &str = "img/";
pub const IDEMPOTENCY: &str = "idem/";
pub const AUDIT: &str = "aud/";
pub const AUDIT_HEAD: &str = "audhead/";
pub const APPLIED_REQUEST: &str = "areq/";
pub const BLOB_GONE: &str = "bgone/";
/// Console sessions by the SHA-256 of their id (itself 256 random bits, so no keyed hash is needed).
pub const CONSOLE_SESSION: &str = "csess/";
pub const CLUSTER_SECRET: &[u8] = b"cluster/secret";
pub const PLATFORM_SETTINGS: &[u8] = b"cluster/settings";

pub fn org(id: &Uuid) -> Vec<u8> {
    format!("{ORG}{id}").into_bytes()
}
pub fn user(id: &Uuid) -> Vec<u8> {
    format!("{USER}{id}").into_bytes()
}
/// Index from a client secret's hash (itself a SHA-256 of 256 random bits) to its client.
pub fn client_secret(secret_hash: &str) -> Vec<u8> {
    format!("{CLIENT_SECRET}{secret_hash}").into_bytes()
}
pub fn console_session(id_hash: &str) -> Vec<u8> {
    format!("{CONSOLE_SESSION}{id_hash}").into_bytes()
}
pub fn signing_key(kid: &str) -> Vec<u8> {
    format!("{SIGNING_KEY}{kid}").into_bytes()
}
pub fn revoked_family(family: &Uuid) -> Vec<u8> {
    format!("{REVOKED_FAMILY}{family}").into_bytes()
}
pub fn report(id: &Uuid) -> Vec<u8> {
    format!("{REPORT}{id}").into_bytes()
}
pub fn image_prefix(report: &Uuid) -> String {
    format!("{IMAGE}{report}/")
}
pub fn image(report: &Uuid, index: u32) -> Vec<u8> {
    format!("{}{index:02}", image_prefix(report)).into_bytes()
}
/// One reference from a report to a blob: a blob with no reference left is garbage.
pub fn blob_ref(digest: &str, report: &Uuid) -> Vec<u8> {
    format!("{}{report}", blob_ref_prefix(digest)).into_bytes()
}
pub fn blob_ref_prefix(digest: &str) -> String {
    format!("bref/{digest}/")
}
/// A blob whose last reference was erased: every node deletes it (also one that was away).
pub fn blob_gone(digest: &str) -> Vec<u8> {
    format!("{BLOB_GONE}{digest}").into_bytes()
}
/// One record of an organisation's audit chain, in order.
pub fn audit(org: &Uuid, seq: u64) -> Vec<u8> {
    format!("{}{seq:016x}", audit_prefix(org)).into_bytes()
}
pub fn audit_prefix(org: &Uuid) -> String {
    format!("{AUDIT}{org}/")
}
/// The last (seq, hash) of an organisation's audit chain.
pub fn audit_head(org: &Uuid) -> Vec<u8> {
    format!("{AUDIT_HEAD}{org}").into_bytes()
}
/// The outcome of an applied request, ordered by the request's time so that forgetting old ones
/// is one range deletion.
pub fn applied_request(at_ms: i64, id: &Uuid) -> Vec<u8> {
    format!("{APPLIED_REQUEST}{:016x}/{id}", at_ms.max(0)).into_bytes()
}
