//! **A node's data is its own**: the data directory is 0700 and every file in it 0600. The
//! process creates files with umask 0077 from the moment storage is opened (RocksDB, blobs and
//! snapshots create files of their own), and a directory written by an older version is brought
//! to these modes when it is opened.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Once;

/// Sets the umask for every file this process creates from now on (process-wide, once).
fn private_umask() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    });
}

/// Creates `dir` if needed and makes it and everything under it private.
pub fn make_private(dir: &Path) -> std::io::Result<()> {
    private_umask();
    std::fs::create_dir_all(dir)?;
    restrict(dir)
}

fn restrict(path: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let wanted = if meta.is_dir() { 0o700 } else { 0o600 };
    if meta.permissions().mode() & 0o777 != wanted {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted))?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            restrict(&entry?.path())?;
        }
    }
    Ok(())
}
