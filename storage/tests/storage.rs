//! Integration tests of the RocksDB store: openraft's own storage suite, atomic apply across a
//! restart, snapshots, encryption at rest (no plaintext marker anywhere in the data directory,
//! no guessable key), and requests applied once across batches and restarts. The business rules
//! of apply are tested on the domain's in-memory state (`domain/src/apply/tests.rs`).

#![allow(clippy::unwrap_used, clippy::result_large_err)]

use std::path::Path;
use std::sync::Arc;

use dermagate_domain::command::{Command, Outcome, Request};
use dermagate_domain::reads;
use dermagate_domain::records::{Attestation, OrgStatus, Organization, Role, User, UserStatus};
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

/// openraft's storage suite, run in a child process: the suite keeps some of the stores it builds
/// open until the process exits, and RocksDB's exit-time destructors then occasionally abort
/// ("pthread lock: Invalid argument") after every test has passed. The verdict is read from the
/// child's own test report, so a failing suite still fails here.
// traces: R-04
#[test]
fn t10_openraft_storage_suite() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "openraft_suite_in_child", "--ignored", "--test-threads", "1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("test openraft_suite_in_child ... ok") && stdout.contains("1 passed; 0 failed"),
        "openraft's storage suite failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "run by t10_openraft_storage_suite in a child process"]
fn openraft_suite_in_child() -> Result<(), StorageError<u64>> {
    Suite::test_all(RocksBuilder)
}

const MARKER: &str = "ZZ-MARKER-Hospital-Clinic-Sant-Pau-7391";
const T0: i64 = 1_700_000_000_000;

fn org_request(i: u32) -> Request {
    let org = Organization {
        id: uuid::Uuid::from_u128(i as u128 + 1),
        name: format!("{MARKER}-{i}"),
        status: OrgStatus::Active,
        attestation: Attestation {
            contract_reference: format!("{MARKER}-contract"),
            attested_by: format!("{MARKER}-attester"),
            attested_at_ms: 1,
        },
        created_at_ms: 1,
        store_images: false,
    };
    Request::new(T0, "tester", Command::CreateOrganization(org))
}

fn secret_request() -> Request {
    Request::new(T0, "bootstrap", Command::EnsureClusterSecret { secret: vec![9; 32] })
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

// traces: R-13
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
        assert_eq!(reads::organizations(store.as_ref())?.len(), 50, "records readable through the public view");
        store.flush()?;
    }
    let hits = files_containing(dir.path(), MARKER.as_bytes());
    assert!(hits.is_empty(), "plaintext marker found in {hits:?}");
    assert!(!walk(dir.path()).is_empty());
    Ok(())
}

/// Keys are keyed hashes under the sealed cluster secret: a username cannot be confirmed by
/// hashing a guess and looking for it in the files.
// traces: FM-07, R-13, REQ-5.4
#[tokio::test]
async fn t25_keys_do_not_confirm_guessed_usernames() -> anyhow::Result<()> {
    use sha2::Digest;
    let dir = tempfile::tempdir()?;
    let kek = Kek::from_hex(&Kek::generate_hex())?;
    let username = "dr.guessable-name";
    {
        let (store, _, mut sm) = dermagate_storage::open(dir.path(), &kek)?;
        let org = org_request(1);
        let Command::CreateOrganization(o) = &org.command else { unreachable!() };
        let user = User {
            id: uuid::Uuid::new_v4(),
            org_id: o.id,
            username: username.into(),
            roles: vec![Role::Clinician],
            password_hash: "$argon2id$x".into(),
            status: UserStatus::Active,
            tokens_valid_after_ms: 0,
            created_at_ms: T0,
            totp: None,
        };
        let create = Request::new(T0, "tester", Command::CreateUser(user));
        let out = sm.apply(vec![entry(1, secret_request()), entry(2, org), entry(3, create)]).await?;
        assert!(out.iter().all(Outcome::is_done), "{out:?}");
        let keyer = reads::keyer(store.as_ref())?.expect("cluster secret");
        assert!(reads::user_by_username(store.as_ref(), &keyer, username)?.is_some());
        store.flush()?;
    }
    for guess in [hex::encode(sha2::Sha256::digest(username.as_bytes())), username.to_string()] {
        let hits = files_containing(dir.path(), guess.as_bytes());
        assert!(hits.is_empty(), "{guess} found in {hits:?}");
    }
    Ok(())
}

// traces: FM-05, R-04
#[tokio::test]
async fn t30_apply_is_atomic_and_survives_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kek = Kek::from_hex(&Kek::generate_hex())?;
    {
        let (_, _, mut sm) = dermagate_storage::open(dir.path(), &kek)?;
        let mut second = org_request(1);
        second.id = uuid::Uuid::new_v4();
        let responses = sm.apply(vec![entry(1, org_request(1)), entry(2, second)]).await?;
        assert!(responses[0].is_done());
        assert!(!responses[1].is_done(), "a second organisation with the same id within one batch is refused");
    }
    let store: Arc<Store> = Store::open(dir.path(), &kek)?;
    let mut sm = StateMachineStore::open(store.clone())?;
    let (applied, _) = sm.applied_state().await?;
    assert_eq!(applied.map(|l| l.index), Some(2));
    assert_eq!(reads::organizations(store.as_ref())?.len(), 1);
    Ok(())
}

// traces
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
    assert_eq!(reads::organizations(store_b.as_ref())?.len(), 20);
    let (applied, _) = sm_b.applied_state().await?;
    assert_eq!(applied.map(|l| l.index), Some(20));
    let current = sm_b.get_current_snapshot().await?.expect("snapshot kept");
    assert_eq!(current.meta.last_log_id.map(|l| l.index), Some(20));
    Ok(())
}

// traces: R-13
#[test]
fn t50_wrong_kek_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = Kek::from_hex(&Kek::generate_hex()).expect("kek");
    drop(dermagate_storage::open(dir.path(), &kek).expect("open"));
    let other = Kek::from_hex(&Kek::generate_hex()).expect("kek");
    assert!(dermagate_storage::open(dir.path(), &other).is_err());
}

/// Data directories and their files are the node's alone (0700 / 0600).
// traces: R-13
#[cfg(unix)]
#[test]
fn t55_data_is_private_to_the_node() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let kek = Kek::from_hex(&Kek::generate_hex()).expect("kek");
    let (store, _, _) = dermagate_storage::open(&data, &kek).expect("open");
    store.flush().expect("flush");
    for path in std::iter::once(data.clone()).chain(walk(&data)) {
        let mode = std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        let allowed = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode & !allowed, 0, "{} is {mode:o}", path.display());
    }
}

// traces: FM-03, FM-05
#[tokio::test]
async fn t80_a_request_proposed_twice_is_applied_once_and_answers_its_first_outcome() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kek = Kek::from_hex(&Kek::generate_hex())?;
    let first = org_request(7);
    {
        let (store, _, mut sm) = dermagate_storage::open(dir.path(), &kek)?;
        // The same request twice (a retry on a new leader after an unknown outcome), within one
        // batch and in another; a different request with the same content is refused as usual.
        let responses = sm.apply(vec![entry(1, first.clone()), entry(2, first.clone())]).await?;
        assert_eq!(responses, vec![Outcome::Done, Outcome::Done], "a retried request answers its first outcome");
        let mut other = first.clone();
        other.id = uuid::Uuid::new_v4();
        assert!(
            !sm.apply(vec![entry(3, other)]).await?[0].is_done(),
            "another request creating the same id is refused"
        );
        assert_eq!(reads::organizations(store.as_ref())?.len(), 1);
    }
    // After a restart the outcome is still remembered.
    let (store, _, mut sm) = dermagate_storage::open(dir.path(), &kek)?;
    assert_eq!(sm.apply(vec![entry(4, first.clone())]).await?, vec![Outcome::Done]);
    assert_eq!(reads::organizations(store.as_ref())?.len(), 1);
    // Outcomes are forgotten after the retention: purging drops them in one range deletion.
    let purge =
        Request::new(first.at_ms + 1, "maintenance", Command::PurgeAppliedRequests { before_ms: first.at_ms + 1 });
    assert!(sm.apply(vec![entry(5, purge)]).await?[0].is_done());
    let after_purge = sm.apply(vec![entry(6, first)]).await?;
    assert!(!after_purge[0].is_done(), "once forgotten, the request is applied again (and refused)");
    Ok(())
}
