//! The binary's command line and configuration: bad input gives a clear message naming the
//! problem and a non-zero exit (64 for configuration), before any port is bound.

#![allow(clippy::unwrap_used, clippy::result_large_err)]

use std::path::Path;
use std::process::{Command, Output};

fn dermagate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dermagate")).args(args).output().expect("run dermagate")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A valid configuration with real certificates and KEK in `dir`, and a free API port.
fn valid_config(dir: &Path) -> (String, u16) {
    let certs = dir.join("certs");
    assert!(dermagate(&["certs", "init", "--nodes", "1", "--out", certs.to_str().unwrap()]).status.success());
    let kek = dir.join("kek.key");
    assert!(dermagate(&["kek", "--out", kek.to_str().unwrap()]).status.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "version = 1\nnode_id = 1\ndata_dir = \"{d}\"\n[api]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"https://127.0.0.1:{port}\"\n\
         [raft]\nlisten = \"127.0.0.1:0\"\nadvertise = \"127.0.0.1:1\"\n[tls]\nca_file = \"{c}/ca.pem\"\ncert_file = \"{c}/node1.pem\"\nkey_file = \"{c}/node1.key\"\n\
         [storage]\nkek_file = \"{k}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        d = dir.join("data").display(),
        c = certs.display(),
        k = kek.display(),
    );
    (config, port)
}

fn serve_with(dir: &Path, config: &str, env: &[(&str, &str)]) -> Output {
    let path = dir.join("node.toml");
    std::fs::write(&path, config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_dermagate"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .envs(env.iter().copied())
        .output()
        .expect("run serve")
}

// traces: R-08
#[test]
fn t10_unknown_config_key_exits_64_naming_it_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let (config, port) = valid_config(dir.path());
    let out = serve_with(dir.path(), &config.replace("[raft]\n", "[raft]\nelection_timout_ms = 5\n"), &[]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("election_timout_ms"), "{}", stderr(&out));
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "the API port was bound");
}

// traces: R-08
#[test]
fn t20_bad_values_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = valid_config(dir.path());
    let cases = [
        (config.replace("version = 1", "version = 7"), "version"),
        (config.replace("node_id = 1", "node_id = 0"), "node_id"),
        (config.replace("node_id = 1", "node_id = \"one\""), "node_id"),
        (config.replace("public_url = \"https://", "public_url = \"http://"), "api.public_url"),
        (config.replace("kek.key", "missing.key"), "storage.kek_file"),
        (config.replace("listen = \"127.0.0.1:0\"\nadvertise", "listen = \"nowhere\"\nadvertise"), "raft.listen"),
    ];
    for (bad, key) in cases {
        let out = serve_with(dir.path(), &bad, &[]);
        assert_eq!(out.status.code(), Some(64), "{key}: {}", stderr(&out));
        assert!(stderr(&out).contains(key), "{key} not named in: {}", stderr(&out));
    }
}

// traces: R-08
#[test]
fn t30_environment_overrides_are_validated_too() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = valid_config(dir.path());
    let out = serve_with(dir.path(), &config, &[("DERMAGATE_RAFT__HEARTBEAT_MS", "10000")]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("raft.heartbeat_ms"), "{}", stderr(&out));
    let out = serve_with(dir.path(), &config, &[("DERMAGATE_API__LISTN", "127.0.0.1:1")]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("listn"), "{}", stderr(&out));
}

// traces: R-08
#[test]
fn t40_missing_config_file_and_bad_commands_fail_clearly() {
    let out = dermagate(&["serve", "--config", "/nonexistent/node.toml"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("/nonexistent/node.toml"));
    let out = dermagate(&["launch-rockets"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("launch-rockets"));
    let out = dermagate(&["certs", "init", "--nodes", "0", "--out", "/tmp/never"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("--nodes"));
    let out = dermagate(&["local", "down", "--dir", "/nonexistent-cluster"]);
    assert_ne!(out.status.code(), Some(0));
}

// traces: FM-01, R-13
#[test]
fn t50_certs_and_keys_are_private_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("c");
    assert!(dermagate(&["certs", "init", "--nodes", "2", "--out", certs.to_str().unwrap()]).status.success());
    for f in ["ca.key", "node1.key", "node2.key"] {
        let mode = std::fs::metadata(certs.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    assert!(dermagate(&["certs", "issue", "--node-id", "3", "--dir", certs.to_str().unwrap()]).status.success());
    assert!(certs.join("node3.pem").is_file());
}

// traces, REQ-5.5
#[test]
fn t60_a_model_whose_manifest_and_graph_disagree_stops_the_node_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let (config, port) = valid_config(dir.path());
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    let demo = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../inference/models/demo");
    std::fs::copy(demo.join("model.onnx"), model.join("model.onnx")).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(demo.join("manifest.json")).unwrap()).unwrap();
    manifest["labels"].as_array_mut().unwrap().pop();
    std::fs::write(model.join("manifest.json"), manifest.to_string()).unwrap();
    let with_model = format!("{config}[inference]\nmodel_dir = \"{}\"\n", model.display());
    let out = serve_with(dir.path(), &with_model, &[]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("inference.model_dir") && stderr(&out).contains("disagree"), "{}", stderr(&out));
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "the API port was bound");
    assert!(!dir.path().join("data").exists(), "no data directory was created");

    std::fs::remove_file(model.join("model.onnx")).unwrap();
    let out = serve_with(dir.path(), &with_model, &[]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("inference.model_dir"), "{}", stderr(&out));
}

/// Writes audited commands into a store the way Raft applies them, then closes it.
fn store_with_trail(data: &Path, kek: &dermagate_storage::Kek) {
    use dermagate_domain::command::Command;
    use dermagate_domain::records::{AuditEvent, PLATFORM_ORG_ID};
    use openraft::storage::RaftStateMachine;
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let (store, _, mut sm) = dermagate_storage::open(data, kek).unwrap();
        let mut commands = vec![Command::EnsureClusterSecret { secret: vec![3; 32] }];
        for i in 0..5 {
            commands.push(Command::Audit(AuditEvent {
                action: "backup_exported".into(),
                actor: "platform:tester".into(),
                org_id: PLATFORM_ORG_ID,
                target: format!("cluster-{i}"),
                outcome: "done".into(),
                detail: String::new(),
            }));
        }
        let entries: Vec<_> = commands
            .into_iter()
            .enumerate()
            .map(|(i, c)| openraft::Entry {
                log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), i as u64 + 1),
                payload: openraft::EntryPayload::Normal(dermagate_domain::Request::new(1_000 + i as i64, "tester", c)),
            })
            .collect();
        sm.apply(entries).await.unwrap();
        store.flush().unwrap();
    });
}

// traces: R-13, REQ-5.5
#[test]
fn t70_audit_verify_detects_an_altered_or_removed_record() {
    use dermagate_domain::keys;
    use dermagate_domain::records::{AuditRecord, PLATFORM_ORG_ID};
    let dir = tempfile::tempdir().unwrap();
    let kek_file = dir.path().join("kek.key");
    assert!(dermagate(&["kek", "--out", kek_file.to_str().unwrap()]).status.success());
    let kek = dermagate_storage::Kek::from_file(&kek_file).unwrap();
    let data = dir.path().join("data");
    store_with_trail(&data, &kek);
    let verify = || {
        dermagate(&["audit", "verify", "--data-dir", data.to_str().unwrap(), "--kek-file", kek_file.to_str().unwrap()])
    };
    let out = verify();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("chain intact"));

    // Someone with the key edits record 3 (its contents, keeping its hash).
    {
        let store = dermagate_storage::Store::open(&data, &kek).unwrap();
        let key = keys::audit(&PLATFORM_ORG_ID, 3);
        let mut record: AuditRecord = store.get_json(dermagate_storage::db::CF_SM_DATA, &key).unwrap().unwrap();
        record.event.target = "something else".into();
        store.overwrite_record_offline(&key, &serde_json::to_vec(&record).unwrap()).unwrap();
        store.flush().unwrap();
    }
    let out = verify();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("BROKEN at record 3") && text.contains("altered"), "{text}");
}
