//! The business rules of apply, tested on an in-memory state: no RocksDB, no cluster.

#![allow(clippy::unwrap_used)]

use uuid::Uuid;

use super::apply;
use crate::command::{Command, Outcome, Request};
use crate::error::Rejection;
use crate::memory::MemoryState;
use crate::reads;
use crate::records::report::{BodySiteRef, IdempotencyBinding, ModelRef};
use crate::records::*;

const T0: i64 = 1_800_000_000_000;

fn bootstrapped() -> MemoryState {
    let mut s = MemoryState::default();
    run(&mut s, T0, Command::EnsureClusterSecret { secret: vec![7; 32] });
    s
}

fn run(s: &mut MemoryState, at: i64, command: Command) -> Outcome {
    apply(s, &Request::new(at, "tester", command)).unwrap()
}

fn org(s: &mut MemoryState) -> Uuid {
    let id = Uuid::new_v4();
    let org = Organization {
        id,
        name: "clinic".into(),
        status: OrgStatus::Active,
        attestation: Attestation { contract_reference: "c".into(), attested_by: "a".into(), attested_at_ms: T0 },
        created_at_ms: T0,
        store_images: true,
    };
    assert_eq!(run(s, T0, Command::CreateOrganization(org)), Outcome::Done);
    id
}

fn user(org_id: Uuid, name: &str, roles: Vec<Role>) -> User {
    User {
        id: Uuid::new_v4(),
        org_id,
        username: name.into(),
        roles,
        password_hash: "$argon2id$...".into(),
        status: UserStatus::Active,
        tokens_valid_after_ms: 0,
        created_at_ms: T0,
        totp: None,
    }
}

fn attempt(s: &mut MemoryState, at: i64, source: &str, user: Option<Uuid>, ok: bool) -> Outcome {
    let policy = ThrottlePolicy::default();
    run(
        s,
        at,
        Command::SignInAttempt {
            username: "alice".into(),
            source: source.into(),
            user_id: user,
            password_ok: ok,
            policy,
        },
    )
}

// traces: FM-03, FM-05
#[test]
fn a_request_proposed_twice_is_applied_once() {
    let mut s = bootstrapped();
    let o = org(&mut s);
    let req = Request::new(T0, "tester", Command::CreateUser(user(o, "bob", vec![Role::Clinician])));
    assert_eq!(apply(&mut s, &req).unwrap(), Outcome::Done);
    assert_eq!(apply(&mut s, &req).unwrap(), Outcome::Done, "the retry answers the first outcome");
    // The same record under another request id (a proposal repeated by a path that lost the
    // first id) is still the same creation: the chaos soak saw a client told 409 for its own user.
    let same_record = Request { id: Uuid::new_v4(), ..req.clone() };
    assert_eq!(apply(&mut s, &same_record).unwrap(), Outcome::Done, "the same user record is the same creation");
    let other = Request::new(T0, "tester", Command::CreateUser(user(o, "bob", vec![Role::Clinician])));
    assert_eq!(
        apply(&mut s, &other).unwrap(),
        Outcome::Rejected(Rejection::UsernameTaken),
        "another user with the same name is refused"
    );
}

// traces: FM-07
#[test]
fn guesses_slow_the_guesser_not_the_user() {
    let mut s = bootstrapped();
    let o = org(&mut s);
    let alice = user(o, "alice", vec![Role::Clinician]);
    run(&mut s, T0, Command::CreateUser(alice.clone()));
    for i in 0..5 {
        assert_eq!(attempt(&mut s, T0 + i, "attacker", None, false), Outcome::Rejected(Rejection::BadCredentials));
    }
    // The attacker's address must now wait, even with the right password...
    assert!(matches!(
        attempt(&mut s, T0 + 10, "attacker", Some(alice.id), true),
        Outcome::Rejected(Rejection::SignInThrottled { .. })
    ));
    // ...but Alice, from her own address, signs in.
    assert_eq!(attempt(&mut s, T0 + 11, "alice-laptop", Some(alice.id), true), Outcome::Done);
    // Nothing is permanent: after the (doubled) wait the attacker's address may try again.
    assert_eq!(attempt(&mut s, T0 + 20 * 60_000, "attacker", Some(alice.id), true), Outcome::Done);
}

// traces: FM-07
#[test]
fn concurrent_wrong_guesses_are_judged_in_log_order_before_a_right_one() {
    let mut s = bootstrapped();
    let o = org(&mut s);
    let alice = user(o, "alice", vec![Role::Clinician]);
    run(&mut s, T0, Command::CreateUser(alice.clone()));
    // 24 wrong and 1 right sent at once from one address: whichever order the log has, the
    // right one after 5 wrong ones is refused.
    for i in 0..24 {
        attempt(&mut s, T0 + i, "botnet", None, false);
    }
    assert!(matches!(
        attempt(&mut s, T0 + 30, "botnet", Some(alice.id), true),
        Outcome::Rejected(Rejection::SignInThrottled { .. })
    ));
}

// traces: FM-07
#[test]
fn distributed_guessing_hits_a_short_per_username_wait() {
    let mut s = bootstrapped();
    let o = org(&mut s);
    let alice = user(o, "alice", vec![Role::Clinician]);
    run(&mut s, T0, Command::CreateUser(alice.clone()));
    for i in 0..50 {
        attempt(&mut s, T0 + i, &format!("source-{i}"), None, false);
    }
    let refused = attempt(&mut s, T0 + 100, "alice-laptop", Some(alice.id), true);
    let Outcome::Rejected(Rejection::SignInThrottled { retry_after_secs }) = refused else { panic!("{refused:?}") };
    assert!(retry_after_secs <= 60, "the per-username wait stays short: {retry_after_secs}");
    assert_eq!(attempt(&mut s, T0 + 70_000, "alice-laptop", Some(alice.id), true), Outcome::Done);
}

// traces: FM-10, FM-13
#[test]
fn an_invitation_dies_with_its_issuer_rights() {
    let mut s = bootstrapped();
    let o = org(&mut s);
    let admin = user(o, "admin", vec![Role::OrgAdmin]);
    run(&mut s, T0, Command::CreateUser(admin.clone()));
    let inv = Invitation {
        org_id: o,
        roles: vec![Role::OrgAdmin],
        expires_at_ms: T0 + 60_000,
        used: false,
        created_by: admin.id,
    };
    assert_eq!(run(&mut s, T0, Command::CreateInvitation { token: "dgi_1".into(), invitation: inv }), Outcome::Done);
    run(&mut s, T0, Command::DeleteUser { org_id: o, user_id: admin.id });
    let newcomer = user(o, "newcomer", vec![Role::OrgAdmin]);
    let redeem = run(&mut s, T0 + 1, Command::RedeemInvitation { token: "dgi_1".into(), user: newcomer });
    assert_eq!(redeem, Outcome::Rejected(Rejection::InvitationInvalid));
}

// traces: FM-06, FM-10
#[test]
fn a_role_change_is_in_the_record_at_once() {
    let mut s = bootstrapped();
    let o = org(&mut s);
    let admin = user(o, "admin", vec![Role::OrgAdmin]);
    run(&mut s, T0, Command::CreateUser(admin.clone()));
    run(&mut s, T0, Command::SetUserRoles { org_id: o, user_id: admin.id, roles: vec![Role::Clinician] });
    assert_eq!(reads::user(&s, &admin.id).unwrap().unwrap().roles, vec![Role::Clinician]);
    let other_org = Uuid::new_v4();
    let r =
        run(&mut s, T0, Command::SetUserRoles { org_id: other_org, user_id: admin.id, roles: vec![Role::OrgAdmin] });
    assert_eq!(
        r,
        Outcome::Rejected(Rejection::NotFound(crate::Entity::User)),
        "another organisation's user is not found"
    );
}

fn report(org_id: Uuid, subject: &str, issued_ms: i64, previous: Option<Uuid>, key: Option<&str>) -> StoredReport {
    StoredReport {
        report: Report {
            id: Uuid::new_v4(),
            status: "final".into(),
            issued: String::new(),
            analysis_duration: 0.1,
            subject: subject.into(),
            body_site: BodySiteRef { code: "ARM_LEFT".into(), display: "Left arm".into() },
            known_condition: None,
            previous_report_id: previous,
            next_report_id: None,
            organization_id: org_id,
            requested_by: "tester".into(),
            model: ModelRef { name: "m".into(), version: "1".into(), demonstration: true, intended_use: "demo".into() },
            demonstration: true,
            notice: None,
            outcome: "diagnosis".into(),
            imaging_study_series: vec![],
            conclusions: vec![],
            clinical_indicators: None,
            entropy: None,
            normalized_entropy: None,
        },
        org_id,
        subject: subject.into(),
        issued_ms,
        requested_ms: issued_ms,
        idempotency: key.map(|k| IdempotencyBinding { scoped_key: k.into(), fingerprint: "fp".into() }),
    }
}

// traces: R-15
#[test]
fn a_series_links_forward_and_a_report_has_one_successor() {
    let mut s = bootstrapped();
    let o = org(&mut s);
    let first = report(o, "subj", T0, None, None);
    let second = report(o, "subj", T0 + 1, Some(first.id()), None);
    let rival = report(o, "subj", T0 + 2, Some(first.id()), None);
    let store = |s: &mut MemoryState, r: &StoredReport| {
        run(s, r.issued_ms, Command::StoreReport { report: Box::new(r.clone()), images: vec![] })
    };
    assert_eq!(store(&mut s, &first), Outcome::Done);
    assert_eq!(store(&mut s, &second), Outcome::Done);
    let linked = reads::report(&s, &first.id()).unwrap().unwrap();
    assert_eq!(linked.report.next_report_id, Some(second.id()), "the predecessor names its successor");
    assert_eq!(
        store(&mut s, &rival),
        Outcome::Rejected(Rejection::PreviousHasSuccessor { previous: first.id(), next: second.id() })
    );
    let other_org = report(Uuid::new_v4(), "subj", T0 + 3, Some(first.id()), None);
    assert_eq!(store(&mut s, &other_org), Outcome::Rejected(Rejection::PreviousNotInSeries));
}

// traces, REQ-5.4
#[test]
fn erasure_frees_only_the_blobs_no_one_else_names_and_is_audited() {
    let mut s = bootstrapped();
    let o = org(&mut s);
    let shared = "a".repeat(64);
    let own = "b".repeat(64);
    let mine = report(o, "erased", T0, None, None);
    let theirs = report(o, "kept", T0, None, None);
    let img = |r: &StoredReport, i: u32, d: &str| StoredImage {
        report_id: r.id(),
        index: i,
        content_type: "image/jpeg".into(),
        digest: d.into(),
        size: 1,
    };
    run(
        &mut s,
        T0,
        Command::StoreReport {
            report: Box::new(mine.clone()),
            images: vec![img(&mine, 0, &shared), img(&mine, 1, &own)],
        },
    );
    run(&mut s, T0, Command::StoreReport { report: Box::new(theirs.clone()), images: vec![img(&theirs, 0, &shared)] });
    s.freed_blobs.clear();
    assert_eq!(run(&mut s, T0 + 5, Command::EraseSubject { org_id: o, subject: "erased".into() }), Outcome::Done);
    assert_eq!(s.freed_blobs, vec![own.clone()], "a blob another report names stays");
    assert!(reads::blob_is_gone(&s, &own).unwrap() && !reads::blob_is_gone(&s, &shared).unwrap());
    let keyer = reads::keyer(&s).unwrap().unwrap();
    assert!(reads::subject_reports(&s, &keyer, &o, "erased").unwrap().is_empty());
    // An analysis requested before the erasure does not bring the subject back.
    let late = report(o, "erased", T0 + 4, None, None);
    assert_eq!(
        run(&mut s, T0 + 6, Command::StoreReport { report: Box::new(late), images: vec![] }),
        Outcome::Rejected(Rejection::SubjectErased)
    );
    let trail = reads::audit_trail(&s, &o).unwrap();
    let erased = trail.iter().find(|r| r.event.action == "subject_erased").unwrap();
    assert_eq!(erased.event.detail, "reports=1");
    assert!(!erased.event.target.contains("erased"), "the trail names the subject by a keyed hash only");
}

// traces: R-13
#[test]
fn the_audit_chain_detects_removal_and_alteration() {
    let mut s = bootstrapped();
    let o = org(&mut s);
    for name in ["a1", "a2", "a3"] {
        run(&mut s, T0, Command::CreateUser(user(o, name, vec![Role::Clinician])));
    }
    let trail = reads::audit_trail(&s, &o).unwrap();
    assert_eq!(crate::records::audit::verify_chain(&trail), Ok(trail.len() as u64));
    let mut altered = trail.clone();
    altered[1].event.detail = "roles=[PlatformAdmin]".into();
    assert!(crate::records::audit::verify_chain(&altered).is_err());
    let mut removed = trail.clone();
    removed.remove(1);
    assert!(crate::records::audit::verify_chain(&removed).is_err());
}

// traces: FM-09, FM-10
#[test]
fn reusing_a_rotated_refresh_token_revokes_its_family() {
    let mut s = bootstrapped();
    let family = Uuid::new_v4();
    let rec = RefreshRecord {
        family,
        user_id: Uuid::new_v4(),
        issued_at_ms: T0,
        expires_at_secs: T0 / 1000 + 3600,
        rotated: false,
        mfa: false,
    };
    run(&mut s, T0, Command::StoreRefreshToken { token: "r1".into(), record: rec.clone() });
    assert_eq!(
        run(&mut s, T0, Command::RotateRefreshToken { old: "r1".into(), new: "r2".into(), record: rec.clone() }),
        Outcome::Done
    );
    assert_eq!(
        run(&mut s, T0, Command::RotateRefreshToken { old: "r1".into(), new: "r3".into(), record: rec }),
        Outcome::Rejected(Rejection::RefreshReused)
    );
    assert!(reads::is_family_revoked(&s, &family).unwrap(), "the successor's tokens die with the family");
}

// traces: FM-05, R-15
#[test]
fn idempotency_keys_bind_one_request() {
    let mut s = bootstrapped();
    let record = |fp: &str| IdempotencyRecord {
        fingerprint: fp.into(),
        state: IdempotencyState::InFlight { lease_until_ms: T0 + 1000 },
        expires_at_ms: T0 + 100_000,
    };
    assert_eq!(
        run(&mut s, T0, Command::ClaimIdempotencyKey { scoped_key: "k".into(), record: record("fp") }),
        Outcome::Done
    );
    assert_eq!(
        run(&mut s, T0, Command::ClaimIdempotencyKey { scoped_key: "k".into(), record: record("fp") }),
        Outcome::Rejected(Rejection::IdempotencyInFlight)
    );
    assert_eq!(
        run(&mut s, T0, Command::ClaimIdempotencyKey { scoped_key: "k".into(), record: record("other") }),
        Outcome::Rejected(Rejection::IdempotencyMismatch)
    );
    let o = org(&mut s);
    let r = report(o, "subj", T0, None, Some("k"));
    run(&mut s, T0, Command::StoreReport { report: Box::new(r.clone()), images: vec![] });
    assert_eq!(
        run(&mut s, T0, Command::ClaimIdempotencyKey { scoped_key: "k".into(), record: record("fp") }),
        Outcome::Rejected(Rejection::IdempotencyDone { report_id: r.id() })
    );
}

// traces: R-13
#[test]
fn nothing_keyed_before_the_cluster_secret() {
    let mut s = MemoryState::default();
    let o = Uuid::new_v4();
    assert_eq!(
        run(&mut s, T0, Command::CreateUser(user(o, "x", vec![Role::Clinician]))),
        Outcome::Rejected(Rejection::NotBootstrapped)
    );
}

// traces: R-13
#[test]
fn a_backup_is_restored_only_into_a_new_cluster() {
    let mut s = bootstrapped();
    let records = vec![(crate::keys::org(&Uuid::from_u128(9)), b"{}".to_vec())];
    let restore = |first| Command::RestoreRecords { records: records.clone(), replace: false, into_new_cluster: first };
    assert_eq!(run(&mut s, T0, restore(true)), Outcome::Done, "an empty cluster takes a backup");
    let mut used = bootstrapped();
    org(&mut used);
    assert_eq!(run(&mut used, T0, restore(true)), Outcome::Rejected(Rejection::RestoreNeedsNewCluster));
    assert_eq!(run(&mut used, T0, restore(false)), Outcome::Done, "later parts of the same restore follow the first");
}

// traces: FM-10
#[test]
fn console_sessions_open_for_active_users_end_everywhere_and_are_audited() {
    let mut s = bootstrapped();
    let o = org(&mut s);
    let alice = user(o, "alice", vec![Role::Clinician]);
    run(&mut s, T0, Command::CreateUser(alice.clone()));
    let session = ConsoleSession {
        user_id: alice.id,
        org_id: o,
        created_at_ms: T0 + 1,
        expires_at_ms: T0 + 1000,
        csrf_secret: vec![7; 32],
        mfa: false,
    };
    let open = |id: &str| Command::CreateConsoleSession { id_hash: id.into(), session: session.clone() };
    assert_eq!(run(&mut s, T0 + 1, open("h1")), Outcome::Done);
    assert!(crate::state::exists(&s, &crate::keys::console_session("h1")).unwrap());
    // Another organisation's id for the same user is refused.
    let foreign = ConsoleSession { org_id: Uuid::new_v4(), ..session.clone() };
    let cmd = Command::CreateConsoleSession { id_hash: "h2".into(), session: foreign };
    assert!(matches!(run(&mut s, T0 + 2, cmd), Outcome::Rejected(_)));
    let end = Command::EndConsoleSession { id_hash: "h1".into(), org_id: o, user_id: alice.id };
    assert_eq!(run(&mut s, T0 + 3, end), Outcome::Done);
    assert!(!crate::state::exists(&s, &crate::keys::console_session("h1")).unwrap());
    let actions: Vec<String> = reads::audit_trail(&s, &o).unwrap().into_iter().map(|r| r.event.action).collect();
    assert!(actions.contains(&"console_session_started".to_string()), "{actions:?}");
    assert!(actions.contains(&"console_session_ended".to_string()), "{actions:?}");
    // Disabling ends every earlier credential, also after the account is enabled again.
    run(&mut s, T0 + 5, Command::SetUserStatus { org_id: o, user_id: alice.id, status: UserStatus::Disabled });
    assert!(matches!(run(&mut s, T0 + 6, open("h3")), Outcome::Rejected(_)), "no session for a disabled user");
    run(&mut s, T0 + 7, Command::SetUserStatus { org_id: o, user_id: alice.id, status: UserStatus::Active });
    assert_eq!(reads::user(&s, &alice.id).unwrap().unwrap().tokens_valid_after_ms, T0 + 5);
    // Expired sessions are forgotten.
    assert_eq!(run(&mut s, T0 + 8, open("h4")), Outcome::Done);
    run(&mut s, T0 + 2000, Command::PurgeConsoleSessions { now_ms: T0 + 2000 });
    assert!(!crate::state::exists(&s, &crate::keys::console_session("h4")).unwrap());
}

// traces: R-15
#[test]
fn command_variants_keep_their_wire_index() {
    // postcard encodes a variant by its index: a variant inserted in the middle would change the
    // meaning of entries already in a Raft log.
    let index = |c: Command| postcard::to_stdvec(&c).unwrap()[0];
    assert_eq!(index(Command::Noop), 0);
    assert_eq!(index(Command::PurgeAppliedRequests { before_ms: 0 }), 37);
    assert_eq!(index(Command::PurgeConsoleSessions { now_ms: 0 }), 41);
}
