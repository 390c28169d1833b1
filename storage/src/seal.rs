//! Encryption at rest: every value dermagate writes to RocksDB is sealed with AES-256-GCM under
//! a node-local data key, and the data keys are themselves wrapped by a key-encryption key (KEK)
//! that the operator gives the node as a file. The key id inside each sealed value lets old data
//! keys keep opening old values after a rotation.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::StoreError;

/// Format tag of a sealed value; bump it if the layout below ever changes.
const SEALED_V1: u8 = 0xA1;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
const KEYRING_FILE: &str = "keyring.json";

/// The key-encryption key: 32 bytes, read from a file holding 64 hex characters.
pub struct Kek(Zeroizing<[u8; 32]>);

impl Kek {
    pub fn from_file(path: &Path) -> Result<Kek, StoreError> {
        let text = Zeroizing::new(
            fs::read_to_string(path).map_err(|e| StoreError::Kek(format!("cannot read {}: {e}", path.display())))?,
        );
        Kek::from_hex(text.trim())
    }

    pub fn from_hex(hex_text: &str) -> Result<Kek, StoreError> {
        let bytes = Zeroizing::new(
            hex::decode(hex_text).map_err(|_| StoreError::Kek("expected 64 hexadecimal characters".into()))?,
        );
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Kek(format!("expected 32 bytes, found {}", bytes.len())))?;
        Ok(Kek(Zeroizing::new(key)))
    }

    /// A fresh random KEK in its file form (hex), for `certs init` and `local up`.
    pub fn generate_hex() -> String {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(key.as_mut());
        hex::encode(key.as_ref())
    }

    /// A short public fingerprint so a node refuses to start with the wrong KEK, with a clear error.
    fn fingerprint(&self) -> String {
        hex::encode(&Sha256::digest(self.0.as_ref())[..8])
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(self.0.as_ref()).expect("32-byte key")
    }
}

#[derive(Serialize, Deserialize)]
struct KeyringFile {
    kek_fingerprint: String,
    active: u32,
    keys: BTreeMap<u32, String>,
}

/// Seals and opens values with the node's data keys.
pub struct Sealer {
    keys: BTreeMap<u32, Aes256Gcm>,
    active: u32,
}

impl Sealer {
    /// Loads the keyring of `dir`, creating it with one fresh data key on first start.
    pub fn load_or_create(dir: &Path, kek: &Kek) -> Result<Sealer, StoreError> {
        let path = dir.join(KEYRING_FILE);
        if !path.exists() {
            let file = KeyringFile { kek_fingerprint: kek.fingerprint(), active: 1, keys: BTreeMap::new() };
            write_keyring(&path, &with_new_key(file, kek)?)?;
        }
        let file: KeyringFile = serde_json::from_slice(&fs::read(&path)?)?;
        if file.kek_fingerprint != kek.fingerprint() {
            return Err(StoreError::Kek(format!(
                "the key-encryption key does not match the one this data directory was created with ({})",
                path.display()
            )));
        }
        Sealer::from_file(&file, kek)
    }

    /// Adds a new data key and makes it the active one; older keys keep opening older values.
    pub fn rotate(dir: &Path, kek: &Kek) -> Result<u32, StoreError> {
        let path = dir.join(KEYRING_FILE);
        let file: KeyringFile = serde_json::from_slice(&fs::read(&path)?)?;
        let file = with_new_key(file, kek)?;
        write_keyring(&path, &file)?;
        Ok(file.active)
    }

    fn from_file(file: &KeyringFile, kek: &Kek) -> Result<Sealer, StoreError> {
        let wrapper = kek.cipher();
        let mut keys = BTreeMap::new();
        for (id, wrapped) in &file.keys {
            let blob = base64::engine::general_purpose::STANDARD
                .decode(wrapped)
                .map_err(|e| StoreError::Keyring(e.to_string()))?;
            let raw = Zeroizing::new(open_with(&wrapper, &dek_aad(*id), &blob, *id)?);
            let cipher = Aes256Gcm::new_from_slice(&raw).map_err(|e| StoreError::Keyring(e.to_string()))?;
            keys.insert(*id, cipher);
        }
        if !keys.contains_key(&file.active) {
            return Err(StoreError::Keyring(format!("active key {} is missing", file.active)));
        }
        Ok(Sealer { keys, active: file.active })
    }

    /// A sealer whose one key is derived from a secret every node holds (the replicated cluster
    /// secret) for `purpose`, so values one node seals, any node can open (a shared object store).
    pub fn derived(secret: &[u8], purpose: &str) -> Sealer {
        use hmac::Mac;
        let mut mac = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        let raw = Zeroizing::new(mac.finalize().into_bytes().to_vec());
        let cipher = Aes256Gcm::new_from_slice(&raw).expect("32-byte key");
        Sealer { keys: BTreeMap::from([(1, cipher)]), active: 1 }
    }

    /// A sealer with one random in-memory key, for tests.
    pub fn ephemeral() -> Sealer {
        let mut raw = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(raw.as_mut());
        let cipher = Aes256Gcm::new_from_slice(raw.as_ref()).expect("32-byte key");
        Sealer { keys: BTreeMap::from([(1, cipher)]), active: 1 }
    }

    /// Seals `plaintext`, binding it to `aad` (the RocksDB key) so a value moved under another key
    /// fails to open instead of being silently accepted.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let cipher = &self.keys[&self.active];
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(HEADER_LEN + ct.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&self.active.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        if sealed.len() < HEADER_LEN || sealed[0] != SEALED_V1 {
            return Err(StoreError::Unseal("not a sealed value".into()));
        }
        let id = u32::from_be_bytes(sealed[1..5].try_into().expect("4 bytes"));
        let cipher = self.keys.get(&id).ok_or_else(|| StoreError::Unseal(format!("unknown data key {id}")))?;
        cipher
            .decrypt(Nonce::from_slice(&sealed[5..HEADER_LEN]), Payload { msg: &sealed[HEADER_LEN..], aad })
            .map_err(|_| StoreError::Unseal(format!("authentication failed under data key {id}")))
    }

    pub fn active_key_id(&self) -> u32 {
        self.active
    }
}

fn dek_aad(id: u32) -> Vec<u8> {
    format!("dermagate-data-key-{id}").into_bytes()
}

fn open_with(cipher: &Aes256Gcm, aad: &[u8], blob: &[u8], id: u32) -> Result<Vec<u8>, StoreError> {
    if blob.len() < NONCE_LEN {
        return Err(StoreError::Keyring(format!("wrapped key {id} is truncated")));
    }
    cipher
        .decrypt(Nonce::from_slice(&blob[..NONCE_LEN]), Payload { msg: &blob[NONCE_LEN..], aad })
        .map_err(|_| StoreError::Keyring(format!("data key {id} cannot be unwrapped with this key-encryption key")))
}

fn with_new_key(mut file: KeyringFile, kek: &Kek) -> Result<KeyringFile, StoreError> {
    let id = file.keys.keys().next_back().map_or(1, |last| last + 1);
    let mut raw = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(raw.as_mut());
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let ct = kek
        .cipher()
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: raw.as_ref(), aad: &dek_aad(id) })
        .map_err(|e| StoreError::Keyring(e.to_string()))?;
    let mut blob = nonce.to_vec();
    blob.extend_from_slice(&ct);
    file.keys.insert(id, base64::engine::general_purpose::STANDARD.encode(blob));
    file.active = id;
    Ok(file)
}

/// Writes the keyring durably: temp file, fsync, rename, so a crash never leaves half a keyring.
fn write_keyring(path: &Path, file: &KeyringFile) -> Result<(), StoreError> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = open_private(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(file)?)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    // traces: R-13
    #[test]
    fn sealed_values_open_only_with_the_same_aad() {
        let s = Sealer::ephemeral();
        let sealed = s.seal(b"k1", b"secret marker");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(s.open(b"k1", &sealed).unwrap(), b"secret marker");
        assert!(s.open(b"k2", &sealed).is_err());
    }

    #[test]
    fn rotation_keeps_old_values_readable() {
        let dir = tempfile::tempdir().unwrap();
        let kek = Kek::from_hex(&Kek::generate_hex()).unwrap();
        let s1 = Sealer::load_or_create(dir.path(), &kek).unwrap();
        let old = s1.seal(b"a", b"old");
        assert_eq!(Sealer::rotate(dir.path(), &kek).unwrap(), 2);
        let s2 = Sealer::load_or_create(dir.path(), &kek).unwrap();
        assert_eq!(s2.active_key_id(), 2);
        assert_eq!(s2.open(b"a", &old).unwrap(), b"old");
    }

    // traces: R-13
    #[test]
    fn wrong_kek_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let kek = Kek::from_hex(&Kek::generate_hex()).unwrap();
        Sealer::load_or_create(dir.path(), &kek).unwrap();
        let other = Kek::from_hex(&Kek::generate_hex()).unwrap();
        assert!(matches!(Sealer::load_or_create(dir.path(), &other), Err(StoreError::Kek(_))));
    }
}
