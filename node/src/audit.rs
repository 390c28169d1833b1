//! `dermagate audit verify`: checks every organisation's audit hash chain in a node's data
//! directory (the node stopped: RocksDB allows one process). A removed, reordered or altered
//! record breaks the chain at that record; the command names it and exits 1.

use std::path::Path;

use anyhow::{anyhow, Context};
use dermagate_domain::services::audit::Audit;

/// Verifies the chains in `data_dir`, opened with the KEK in `kek_file`; `Ok(false)` if broken.
pub fn verify(data_dir: &Path, kek_file: &Path) -> anyhow::Result<bool> {
    let kek = dermagate_storage::Kek::from_file(kek_file).context("reading the key-encryption key")?;
    let store = dermagate_storage::Store::open(data_dir, &kek).with_context(|| {
        format!("opening {} (stop the node first: its store is locked while it runs)", data_dir.display())
    })?;
    let checks = Audit::verify_all(store.as_ref()).map_err(|e| anyhow!("{e}"))?;
    let mut intact = true;
    for c in &checks {
        match (&c.broken_at, &c.problem) {
            (None, _) => println!("organization {}: {} records, chain intact", c.org_id, c.records),
            (Some(seq), problem) => {
                intact = false;
                println!(
                    "organization {}: chain BROKEN at record {seq}: {}",
                    c.org_id,
                    problem.as_deref().unwrap_or("tampered")
                );
            }
        }
    }
    if checks.is_empty() {
        println!("no audit records");
    }
    Ok(intact)
}
