//! The backup format: a consistent export of the replicated records plus the image blobs they
//! name, as length-prefixed frames after a magic tag. What a backup leaves out on purpose: the
//! token-signing keys (never exported; a restored cluster signs with new keys, so every token
//! issued before the backup is void), console sessions, and the outcomes of recently applied requests.
//! Encryption to the operator's recipient key is the API's job (`api/src/cluster.rs`).

use dermagate_domain::keys;

use crate::db::Store;
use crate::error::StoreError;

const MAGIC: &[u8; 8] = b"DGBACK02";
/// The key of a blob frame (`blob:<sha256 hex>`, the bytes as the value).
pub const BLOB_PREFIX: &str = "blob:";

/// Records a backup carries: everything but signing keys, applied-request outcomes and console
/// sessions (a restored cluster starts with nobody signed in).
fn kept(key: &[u8]) -> bool {
    !key.starts_with(keys::SIGNING_KEY.as_bytes())
        && !key.starts_with(keys::APPLIED_REQUEST.as_bytes())
        && !key.starts_with(keys::CONSOLE_SESSION.as_bytes())
}

/// The records of one consistent RocksDB snapshot (with the log id they are current as of).
pub fn export_records(store: &Store) -> Result<(Option<u64>, dermagate_domain::state::Pairs), StoreError> {
    let (applied, pairs) = crate::state_machine::export_pairs(store)?;
    Ok((applied.map(|l| l.index), pairs.into_iter().filter(|(k, _)| kept(k)).collect()))
}

/// Frames records and blobs into one backup.
pub fn encode(records: &[(Vec<u8>, Vec<u8>)], blobs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    let blob_frames = blobs.iter().map(|(d, b)| (format!("{BLOB_PREFIX}{d}").into_bytes(), b.clone()));
    for (k, v) in records.iter().cloned().chain(blob_frames) {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(&k);
        out.extend_from_slice(&(v.len() as u64).to_be_bytes());
        out.extend_from_slice(&v);
    }
    out
}

/// What a backup holds: records, and blobs each verified against its digest.
#[derive(Debug)]
pub struct Decoded {
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
    pub blobs: Vec<(String, Vec<u8>)>,
}

pub fn decode(data: &[u8]) -> Result<Decoded, StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("not a dermagate backup (format 2): {what}"));
    let rest = data.strip_prefix(MAGIC.as_slice()).ok_or_else(|| bad("missing magic"))?;
    let mut pos = 0usize;
    let mut out = Decoded { records: Vec::new(), blobs: Vec::new() };
    let take = |pos: &mut usize, n: usize| -> Result<&[u8], StoreError> {
        let slice = rest.get(*pos..*pos + n).ok_or_else(|| bad("truncated"))?;
        *pos += n;
        Ok(slice)
    };
    while pos < rest.len() {
        let klen = u32::from_be_bytes(take(&mut pos, 4)?.try_into().map_err(|_| bad("frame"))?) as usize;
        let key = take(&mut pos, klen)?.to_vec();
        let vlen = u64::from_be_bytes(take(&mut pos, 8)?.try_into().map_err(|_| bad("frame"))?) as usize;
        let value = take(&mut pos, vlen)?.to_vec();
        match key.strip_prefix(BLOB_PREFIX.as_bytes()) {
            Some(digest) => {
                let digest = String::from_utf8(digest.to_vec()).map_err(|_| bad("blob name"))?;
                if !crate::blobs::is_digest(&digest) || crate::blobs::verify(&digest, &value).is_err() {
                    return Err(StoreError::Corrupt(format!(
                        "the backup is damaged: image blob {digest} does not match its digest"
                    )));
                }
                out.blobs.push((digest, value));
            }
            None => out.records.push((key, value)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_round_trips_and_a_damaged_blob_is_refused() {
        let blob = b"image bytes".to_vec();
        let digest = crate::blobs::digest_of(&blob);
        let data = encode(&[(b"org/1".to_vec(), b"{}".to_vec())], &[(digest.clone(), blob.clone())]);
        let d = decode(&data).unwrap();
        assert_eq!(d.records, vec![(b"org/1".to_vec(), b"{}".to_vec())]);
        assert_eq!(d.blobs, vec![(digest.clone(), blob)]);
        let damaged = encode(&[], &[(digest, b"other bytes".to_vec())]);
        assert!(decode(&damaged).unwrap_err().to_string().contains("does not match its digest"));
        assert!(decode(&data[..data.len() - 1]).is_err());
        assert!(decode(b"DGSNAP01").is_err());
    }
}
