//! Integration tests of the RocksDB store: openraft's own storage suite, atomic apply across a
//! restart, and encryption at rest (no plaintext marker anywhere in the data directory).

#![allow(clippy::unwrap_used, clippy::result_large_err)]

use std::path::Path;
use std::sync::Arc;

use dermagate_storage::model::{Attestation, Command, OrgStatus, Organization, Request};
use dermagate_storage::types::TypeConfig;
use dermagate_storage::{Kek, LogStore, StateMachineStore, Store};
use openraft::storage::{RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{Entry, EntryPayload, LogId, RaftSnapshotBuilder, StorageError};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let kek = Kek::from_hex(&Kek::generate_hex()).expect("kek");
        let (_, log, sm) = dermagate_storage::open(dir.path(), &kek).expect("open");
        Ok((dir, log, sm))
    }
}

#[test]
fn t10_openraft_storage_suite() -> Result<(), StorageError<u64>> {
    Suite::test_all(RocksBuilder)
}

const MARKER: &str = "ZZ-MARKER-Hospital-Clinic-Sant-Pau-7391";

fn org_request(i: u32) -> Request {
    let org = Organization {
        id: uuid::Uuid::from_u128(i as u128 + 1),
        name: format!("{MARKER}-{i}"),
        status: OrgStatus::Active,
        attestation: Attestation {
            contract_reference: format!("{MARKER}-contract"),
            attested_by: format!("{MARKER}-attester"),
            attested_at: 1,
        },
        created_at: 1,
    };
    Request::new(1_700_000_000_000, Command::CreateOrganization(org))
}

fn entry(index: u64, req: Request) -> Entry<TypeConfig> {
    Entry { log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Normal(req) }
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for e in walk(dir) {
        let bytes = std::fs::read(&e).unwrap_or_default();
        if bytes.windows(needle.len()).any(|w| w == needle) {
            hits.push(e.display().to_string());
        }
    }
    hits
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn t20_no_plaintext_marker_in_logs_state_or_snapshots() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kek = Kek::from_hex(&Kek::generate_hex())?;
    {
        let (store, mut log, mut sm) = dermagate_storage::open(dir.path(), &kek)?;
        let entries: Vec<_> = (1..=50).map(|i| entry(i as u64, org_request(i))).collect();
        log.blocking_append(entries.clone()).await?;
        sm.apply(entries).await?;
        sm.build_snapshot().await?;
        assert_eq!(store.organizations()?.len(), 50, "records readable through the public view");
        store.flush()?;
    }
    let hits = files_containing(dir.path(), MARKER.as_bytes());
    assert!(hits.is_empty(), "plaintext marker found in {hits:?}");
    assert!(!walk(dir.path()).is_empty());
    Ok(())
}

#[tokio::test]
async fn t30_apply_is_atomic_and_survives_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kek = Kek::from_hex(&Kek::generate_hex())?;
    {
        let (_, _, mut sm) = dermagate_storage::open(dir.path(), &kek)?;
        let responses = sm.apply(vec![entry(1, org_request(1)), entry(2, org_request(1))]).await?;
        assert!(responses[0].is_ok());
        assert!(!responses[1].is_ok(), "duplicate id within one batch must conflict");
    }
    let store: Arc<Store> = Store::open(dir.path(), &kek)?;
    let mut sm = StateMachineStore::open(store.clone())?;
    let (applied, _) = sm.applied_state().await?;
    assert_eq!(applied.map(|l| l.index), Some(2));
    assert_eq!(store.organizations()?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn t40_snapshot_round_trip_to_another_node() -> anyhow::Result<()> {
    let kek = Kek::from_hex(&Kek::generate_hex())?;
    let a = tempfile::tempdir()?;
    let b = tempfile::tempdir()?;
    let (_, _, mut sm_a) = dermagate_storage::open(a.path(), &kek)?;
    sm_a.apply((1..=20).map(|i| entry(i, org_request(i as u32))).collect::<Vec<_>>()).await?;
    let snap = sm_a.build_snapshot().await?;
    let (store_b, _, mut sm_b) = dermagate_storage::open(b.path(), &kek)?;
    sm_b.install_snapshot(&snap.meta, snap.snapshot).await?;
    assert_eq!(store_b.organizations()?.len(), 20);
    let (applied, _) = sm_b.applied_state().await?;
    assert_eq!(applied.map(|l| l.index), Some(20));
    let current = sm_b.get_current_snapshot().await?.expect("snapshot kept");
    assert_eq!(current.meta.last_log_id.map(|l| l.index), Some(20));
    Ok(())
}

#[test]
fn t50_wrong_kek_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = Kek::from_hex(&Kek::generate_hex()).expect("kek");
    drop(dermagate_storage::open(dir.path(), &kek).expect("open"));
    let other = Kek::from_hex(&Kek::generate_hex()).expect("kek");
    assert!(dermagate_storage::open(dir.path(), &other).is_err());
}
