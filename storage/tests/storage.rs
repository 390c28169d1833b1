//! Integration tests of the RocksDB store: openraft's own storage suite, atomic apply across a
//! restart, and encryption at rest (no plaintext marker anywhere in the data directory).

#![allow(clippy::unwrap_used, clippy::result_large_err)]

use std::path::Path;
use std::sync::Arc;

use dermagate_storage::model::{
    Attestation, AuditEntry, Collection, Command, IdempotencyRecord, IdempotencyState, OrgStatus, Organization,
    Request, Response, StoredImage, StoredReport,
};
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
        store_images: false,
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

fn report(org: u128, subject: &str, issued_ms: i64, previous: Option<uuid::Uuid>, key: Option<&str>) -> StoredReport {
    StoredReport {
        id: uuid::Uuid::new_v4(),
        org_id: uuid::Uuid::from_u128(org),
        subject: subject.into(),
        issued_ms,
        requested_ms: issued_ms - 100,
        previous_report_id: previous,
        idempotency_key: key.map(String::from),
        idempotency_fingerprint: key.map(|_| "fp".to_string()),
        body: serde_json::json!({ "issued": issued_ms }),
    }
}

/// The blob a test report's image is named by: one per subject, so reports of a subject share it.
fn image_digest(report: &StoredReport) -> String {
    dermagate_storage::blobs::digest_of(format!("{}/{}", report.org_id, report.subject).as_bytes())
}

fn store_report(report: &StoredReport) -> Request {
    let image = StoredImage {
        report_id: report.id,
        index: 0,
        content_type: "image/jpeg".into(),
        digest: image_digest(report),
        size: 4,
    };
    Request::new(report.issued_ms, Command::StoreReport { report: report.clone(), images: vec![image] })
}

#[tokio::test]
async fn t60_time_series_is_ordered_linked_and_erased_atomically() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kek = Kek::from_hex(&Kek::generate_hex())?;
    let (store, _, mut sm) = dermagate_storage::open(dir.path(), &kek)?;
    let first = report(1, "subj-1", 2_000, None, None);
    let second = report(1, "subj-1", 3_000, Some(first.id), None);
    let other_org = report(2, "subj-1", 2_500, None, None);
    // Issued out of order: the series is ordered by `issued`, not by arrival.
    let wrong_link = report(1, "subj-1", 4_000, Some(other_org.id), None);
    let r = sm
        .apply(vec![
            entry(1, store_report(&second_without_link(&second))),
            entry(2, store_report(&first)),
            entry(3, store_report(&other_org)),
            entry(4, store_report(&wrong_link)),
            entry(5, store_report(&first)),
        ])
        .await?;
    assert!(r[0].is_ok() && r[1].is_ok() && r[2].is_ok());
    assert!(matches!(r[3], Response::Rejected { .. }), "a link to another organisation's report is refused");
    assert!(matches!(r[4], Response::Conflict { .. }), "a report is never overwritten");
    let series: Vec<i64> = store.subject_reports(&first.org_id, "subj-1")?.iter().map(|r| r.issued_ms).collect();
    assert_eq!(series, vec![2_000, 3_000]);
    assert_eq!(store.subject_reports(&other_org.org_id, "subj-1")?.len(), 1, "subjects are scoped by organisation");

    let audit = AuditEntry {
        id: uuid::Uuid::new_v4(),
        at_ms: 5_000,
        action: "subject_erased".into(),
        actor: "tester".into(),
        org_id: first.org_id,
        subject_hash: "h".into(),
        reports: 0,
    };
    let digest = image_digest(&first);
    assert!(store.blob_is_referenced(&digest)? && !store.blob_is_gone(&digest)?);
    let erase = Command::EraseSubject { org_id: first.org_id, subject: "subj-1".into(), audit: audit.clone() };
    assert!(sm.apply(vec![entry(6, Request::new(5_000, erase))]).await?[0].is_ok());
    assert!(!store.blob_is_referenced(&digest)?, "no reference to an erased subject's images is left");
    assert!(store.blob_is_gone(&digest)?, "every node is told to delete the blob");
    assert!(store.blob_is_referenced(&image_digest(&other_org))?, "another organisation's images stay");
    assert!(store.subject_reports(&first.org_id, "subj-1")?.is_empty());
    assert!(store.report(&first.id)?.is_none() && store.report_images(&first.id)?.is_empty());
    assert_eq!(store.subject_reports(&other_org.org_id, "subj-1")?.len(), 1, "erasure stays in its organisation");
    let logged: AuditEntry = store.record(Collection::Audit, &audit.id.to_string())?.unwrap();
    assert_eq!(logged.reports, 2);
    // An analysis that began before the erasure (issued earlier) must not bring the subject back;
    // one issued after it starts a new series.
    let late = report(1, "subj-1", 4_500, None, None);
    // Requested before the erasure, finished after it: still not stored.
    let slow = StoredReport { requested_ms: 4_900, issued_ms: 5_500, ..report(1, "subj-1", 5_500, None, None) };
    let fresh = report(1, "subj-1", 6_000, None, None);
    let r = sm
        .apply(vec![entry(7, store_report(&late)), entry(8, store_report(&slow)), entry(9, store_report(&fresh))])
        .await?;
    assert!(matches!(&r[0], Response::Conflict { reason } if reason.contains("erased")));
    assert!(matches!(&r[1], Response::Conflict { reason } if reason.contains("erased")));
    assert!(r[2].is_ok());
    assert_eq!(store.subject_reports(&first.org_id, "subj-1")?.len(), 1);
    Ok(())
}

fn second_without_link(r: &StoredReport) -> StoredReport {
    // Applied before the report it links to exists, the link would be refused; this test is about
    // ordering, so the second point is stored unlinked.
    StoredReport { previous_report_id: None, ..r.clone() }
}

#[tokio::test]
async fn t70_idempotency_keys_bind_one_request_and_expire() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kek = Kek::from_hex(&Kek::generate_hex())?;
    let (store, _, mut sm) = dermagate_storage::open(dir.path(), &kek)?;
    let claim = |at: i64| {
        let record = IdempotencyRecord {
            fingerprint: "fp".into(),
            state: IdempotencyState::InFlight { lease_until_ms: at + 1_000 },
            expires_at_ms: at + 10_000,
        };
        Request::new(at, Command::ClaimIdempotencyKey { scoped_key: "org/k".into(), record })
    };
    let done = report(1, "s", 100, None, Some("org/k"));
    let late = report(1, "s", 200, None, Some("org/k"));
    let r = sm
        .apply(vec![
            entry(1, claim(0)),
            entry(2, claim(10)),
            entry(3, store_report(&done)),
            entry(4, claim(2_000)),
            entry(5, store_report(&late)),
            entry(6, claim(20_000)),
        ])
        .await?;
    assert!(r[0].is_ok());
    assert!(matches!(&r[1], Response::Conflict { reason } if reason.contains("in_flight")));
    assert!(r[2].is_ok());
    assert!(matches!(&r[3], Response::Conflict { reason } if reason.contains("done")), "done keys stay bound");
    assert!(matches!(r[4], Response::Conflict { .. }), "a racing retry adds no second point");
    assert_eq!(store.subject_reports(&done.org_id, "s")?.len(), 1);
    assert!(r[5].is_ok(), "an expired key may be used again");
    let purge = Request::new(40_000, Command::PurgeIdempotencyKeys { now_ms: 40_000 });
    assert!(sm.apply(vec![entry(7, purge)]).await?[0].is_ok());
    assert!(store.record::<IdempotencyRecord>(Collection::Idempotency, "org/k")?.is_none(), "expired keys are purged");
    Ok(())
}

#[tokio::test]
async fn t80_a_request_proposed_twice_is_applied_once_and_answers_its_first_outcome() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kek = Kek::from_hex(&Kek::generate_hex())?;
    let (store, _, mut sm) = dermagate_storage::open(dir.path(), &kek)?;
    // The same request twice (a retry on a new leader after an unknown outcome), in two batches
    // and within one batch; a different request with the same content conflicts as usual.
    let first = org_request(7);
    let responses = sm.apply(vec![entry(1, first.clone()), entry(2, first.clone())]).await?;
    assert_eq!(responses, vec![Response::Ok, Response::Ok], "a retried request answers its first outcome");
    let again = sm.apply(vec![entry(3, first.clone())]).await?;
    assert_eq!(again, vec![Response::Ok]);
    let other = org_request(7);
    assert!(!sm.apply(vec![entry(4, other)]).await?[0].is_ok(), "another request creating the same id conflicts");
    assert_eq!(store.organizations()?.len(), 1);

    // Outcomes are forgotten after the retention: purging drops them in one range deletion.
    let purge = Request::new(first.at_ms + 1, Command::PurgeAppliedRequests { before_ms: first.at_ms + 1 });
    assert!(sm.apply(vec![entry(5, purge)]).await?[0].is_ok());
    let after_purge = sm.apply(vec![entry(6, first)]).await?;
    assert!(!after_purge[0].is_ok(), "once forgotten, the request is applied again (and conflicts)");
    Ok(())
}
