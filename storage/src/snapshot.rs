//! The snapshot format: the state machine's records as length-prefixed (key, value) frames.
//! In memory and on the wire (inside mutual TLS) a snapshot is plaintext; on disk it is kept as
//! sealed chunks so that no snapshot byte reaches the disk unencrypted.

use crate::error::StoreError;

const MAGIC: &[u8; 8] = b"DGSNAP01";
/// Size of the sealed chunks a snapshot is stored as.
pub const CHUNK_SIZE: usize = 1 << 20;

pub fn encode(pairs: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(&k);
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(&v);
    }
    out
}

pub fn decode(data: &[u8]) -> Result<crate::db::Pairs, StoreError> {
    let rest = data.strip_prefix(MAGIC.as_slice()).ok_or_else(|| StoreError::Corrupt("snapshot magic".into()))?;
    let mut pairs = Vec::new();
    let mut pos = 0;
    while pos < rest.len() {
        let k = frame(rest, &mut pos)?;
        let v = frame(rest, &mut pos)?;
        pairs.push((k.to_vec(), v.to_vec()));
    }
    Ok(pairs)
}

fn frame<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a [u8], StoreError> {
    let truncated = || StoreError::Corrupt("snapshot frame truncated".into());
    let len_bytes: [u8; 4] = buf.get(*pos..*pos + 4).ok_or_else(truncated)?.try_into().map_err(|_| truncated())?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let start = *pos + 4;
    let slice = buf.get(start..start + len).ok_or_else(truncated)?;
    *pos = start + len;
    Ok(slice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let pairs = vec![(b"a".to_vec(), b"1".to_vec()), (b"bb".to_vec(), vec![])];
        let data = encode(pairs.clone());
        assert_eq!(decode(&data).unwrap(), pairs);
        assert!(decode(&data[..data.len() - 1]).is_err());
        assert!(decode(b"nope").is_err());
    }
}
