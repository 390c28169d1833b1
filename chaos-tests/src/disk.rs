//! A small disk for one node: its data directory moved onto a tmpfs of a fixed size, which the
//! nemesis fills up (leaving less than the node's reserve) and frees again. Unmounted when
//! dropped; the node must be stopped first (the runner drops the cluster before this).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

pub struct SmallDisk {
    mount: PathBuf,
    filler: PathBuf,
}

impl SmallDisk {
    /// Moves `data_dir` (of a stopped node) onto a new tmpfs of `size_mib` MiB at the same path.
    pub fn mount_over(data_dir: &Path, size_mib: u64) -> anyhow::Result<SmallDisk> {
        let saved = data_dir.with_extension("before-tmpfs");
        std::fs::rename(data_dir, &saved).context("moving the data directory aside")?;
        std::fs::create_dir_all(data_dir)?;
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size_mib}m,mode=0700"))
            .arg("tmpfs")
            .arg(data_dir))
        .context("mounting a tmpfs (needs root)")?;
        let disk = SmallDisk { mount: data_dir.to_path_buf(), filler: data_dir.join("chaos-filler") };
        run(Command::new("cp").arg("-a").arg(format!("{}/.", saved.display())).arg(data_dir))?;
        std::fs::remove_dir_all(&saved)?;
        Ok(disk)
    }

    /// Free bytes on the tmpfs.
    pub fn free_bytes(&self) -> anyhow::Result<u64> {
        let s = nix::sys::statvfs::statvfs(&self.mount)?;
        Ok(s.blocks_available() * s.fragment_size())
    }

    /// Shrinks the tmpfs so that only about `leave` bytes stay free (what is written stays);
    /// returns the free bytes.
    pub fn shrink_leaving(&self, leave: u64) -> anyhow::Result<u64> {
        let s = nix::sys::statvfs::statvfs(&self.mount)?;
        let used = (s.blocks() - s.blocks_free()) * s.fragment_size();
        self.resize(used + leave)?;
        self.free_bytes()
    }

    /// Gives the tmpfs `bytes` of room (rounded up to MiB).
    pub fn resize(&self, bytes: u64) -> anyhow::Result<()> {
        run(Command::new("mount").arg("-o").arg(format!("remount,size={}m", bytes.div_ceil(1 << 20))).arg(&self.mount))
    }

    /// Writes a filler file until only about `leave` bytes are free; returns the free bytes.
    pub fn fill_leaving(&self, leave: u64) -> anyhow::Result<u64> {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.filler)?;
        let chunk = vec![0u8; 1 << 20];
        while self.free_bytes()? > leave + chunk.len() as u64 {
            if f.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = f.sync_all();
        self.free_bytes()
    }

    /// Deletes the filler.
    pub fn free(&self) -> anyhow::Result<u64> {
        if self.filler.exists() {
            std::fs::remove_file(&self.filler)?;
        }
        self.free_bytes()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).output();
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
