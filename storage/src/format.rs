//! The on-disk format version of a data directory. A directory written by a version with another
//! format is refused at start with a clear error, never misread: format 2 (this version) keeps
//! Raft entries in a binary encoding, keys under the cluster secret's keyed hashes and image
//! bytes outside the log; format 1 directories (dermagate before the domain layer) must be
//! restored from a backup into a new cluster.

use std::io::Write;
use std::path::Path;

use crate::error::StoreError;

pub const FORMAT: u32 = 2;
const FILE: &str = "FORMAT";

/// Checks the directory's format, or records this version's format in a new directory.
pub fn check_or_create(dir: &Path) -> Result<(), StoreError> {
    let marker = dir.join(FILE);
    match std::fs::read_to_string(&marker) {
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(FORMAT) => Ok(()),
            Ok(other) => Err(refused(dir, &other.to_string())),
            Err(_) => Err(refused(dir, text.trim())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir.join("rocksdb").exists() {
                return Err(refused(dir, "1 (no FORMAT file)"));
            }
            let mut f = std::fs::File::create(&marker)?;
            f.write_all(format!("{FORMAT}\n").as_bytes())?;
            f.sync_all()?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn refused(dir: &Path, found: &str) -> StoreError {
    StoreError::Format(format!(
        "the data directory {} has storage format {found}; this dermagate reads format {FORMAT} only. \
         Restore a backup of that cluster into a new one (`dermagate restore`) instead of reusing the directory",
        dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_data_directory_is_refused_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        check_or_create(dir.path()).unwrap();
        check_or_create(dir.path()).unwrap();
        let old = tempfile::tempdir().unwrap();
        std::fs::create_dir(old.path().join("rocksdb")).unwrap();
        let e = check_or_create(old.path()).unwrap_err().to_string();
        assert!(e.contains("format 1") && e.contains("dermagate restore"), "{e}");
        std::fs::write(dir.path().join(FILE), "3\n").unwrap();
        assert!(check_or_create(dir.path()).unwrap_err().to_string().contains("format 3"));
    }
}
