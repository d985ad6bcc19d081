//! Command table and cross-domain cases for `apply`, through `apply_entries` on an in-memory
//! database.

use rusqlite::Connection;
use sha2::{Digest, Sha256};

use super::apply_entries;
use super::audit_text::{audit_text, outcome_text};
use crate::codec::encode_batch;
use crate::error::StorageError;
use crate::model::{
    Command, Envelope, NodeRole, Outcome, RejectCode, Rejection, Response, Scope, TokenKind,
};
use crate::schema::migrate;

const NOW: i64 = 1_000;

fn sha(s: &str) -> String {
    hex::encode(Sha256::digest(s))
}

fn env(command: Command) -> Envelope {
    Envelope {
        at_ms: NOW,
        actor: "tester".into(),
        command,
    }
}

fn init() -> Command {
    Command::InitCluster {
        cluster_id: "c-1".into(),
        name: "plant".into(),
        ca_cert_pem: "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n".into(),
    }
}

fn add(id: u64, name: &str) -> Command {
    Command::AddNode {
        id,
        name: name.into(),
        api_addr: "10.0.0.1:7443".into(),
        peer_addr: "10.0.0.1:7444".into(),
        version: "0.1.0".into(),
    }
}

fn join(token: &str, secret: &str) -> Command {
    Command::JoinNode {
        token_id: token.into(),
        secret_sha256: sha(secret),
        name: "n".into(),
        api_addr: "a:1".into(),
        peer_addr: "a:2".into(),
        version: "0.1.0".into(),
    }
}

fn token(id: &str, kind: TokenKind, uses: Option<u32>) -> Command {
    Command::CreateToken {
        id: id.into(),
        kind,
        secret_sha256: sha("secret"),
        expires_at_ms: 10_000,
        uses,
        groups: vec!["lab".into()],
    }
}

fn set(scope: Scope, key: &str, value: &str) -> Command {
    Command::SetConfig {
        scope,
        key: key.into(),
        value: value.into(),
    }
}

fn upd(id: u64) -> Command {
    Command::UpdateNode {
        id,
        api_addr: Some("10.0.0.9:7443".into()),
        peer_addr: None,
        role: Some(NodeRole::Learner),
        version: None,
    }
}

/// Initialized cluster with node 1, node token t1 (1 use) and client token c1.
fn base() -> Vec<Command> {
    vec![
        init(),
        add(1, "first"),
        token("t1", TokenKind::Node, Some(1)),
        token("c1", TokenKind::Client, None),
    ]
}

fn fresh() -> Result<Connection, StorageError> {
    let mut conn = Connection::open_in_memory()?;
    migrate(&mut conn)?;
    Ok(conn)
}

fn run(conn: &mut Connection, envs: Vec<Envelope>) -> Result<Vec<Outcome>, StorageError> {
    let mut out = apply_entries(conn, vec![Some(encode_batch(&envs))], b"m")?.outcomes;
    Ok(out.pop().flatten().unwrap_or_default())
}

/// An apply says when it changed who may call a node (readers cache identity checks until
/// then): an admin revoked or a node added, also inside a request id; a config write does not.
#[test]
fn apply_says_when_identities_changed() -> Result<(), StorageError> {
    let mut conn = fresh()?;
    let mut changed = |command: Command| -> Result<bool, StorageError> {
        let batch = encode_batch(&[env(command)]);
        Ok(apply_entries(&mut conn, vec![Some(batch)], b"m")?.identities_changed)
    };
    assert!(changed(init())?);
    assert!(!changed(set(Scope::Global, "k", "v"))?);
    assert!(changed(add(2, "n2"))?);
    let revoke = Command::RevokeAdmin {
        name: "alice".into(),
    };
    assert!(changed(Command::Once {
        request_id: "r-1".into(),
        command: Box::new(revoke),
    })?);
    assert!(!changed(Command::Once {
        request_id: "r-2".into(),
        command: Box::new(set(Scope::Global, "k", "w")),
    })?);
    Ok(())
}

fn audit_count(conn: &Connection) -> Result<i64, rusqlite::Error> {
    conn.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
}

type Want = Result<Response, RejectCode>;

#[test]
fn command_table() -> Result<(), StorageError> {
    use Response::*;
    let g = |s: &str| Scope::Group(s.into());
    let cases: Vec<(&str, bool, Vec<Envelope>, Envelope, Want)> = vec![
        // (name, start from base()?, extra setup, command, expected)
        ("init", false, vec![], env(init()), Ok(Done)),
        (
            "init twice",
            true,
            vec![],
            env(init()),
            Err(RejectCode::AlreadyExists),
        ),
        (
            "init empty pem",
            false,
            vec![],
            env(Command::InitCluster {
                cluster_id: "c".into(),
                name: "n".into(),
                ca_cert_pem: " ".into(),
            }),
            Err(RejectCode::Invalid),
        ),
        (
            "init bad id",
            false,
            vec![],
            env(Command::InitCluster {
                cluster_id: "".into(),
                name: "n".into(),
                ca_cert_pem: "p".into(),
            }),
            Err(RejectCode::Invalid),
        ),
        (
            "add before init",
            false,
            vec![],
            env(add(1, "a")),
            Err(RejectCode::NotInitialized),
        ),
        (
            "set before init",
            false,
            vec![],
            env(set(Scope::Global, "k", "v")),
            Err(RejectCode::NotInitialized),
        ),
        ("add", true, vec![], env(add(2, "b")), Ok(Done)),
        (
            "add existing",
            true,
            vec![],
            env(add(1, "a")),
            Err(RejectCode::AlreadyExists),
        ),
        (
            "add id 0",
            true,
            vec![],
            env(add(0, "a")),
            Err(RejectCode::Invalid),
        ),
        (
            "add id too big",
            true,
            vec![],
            env(add(u64::MAX, "a")),
            Err(RejectCode::Invalid),
        ),
        (
            "add id i64::MAX rolls back",
            true,
            vec![],
            env(add(i64::MAX as u64, "a")),
            Err(RejectCode::Invalid),
        ),
        (
            "add below next id",
            true,
            vec![env(add(5, "e"))],
            env(add(3, "c")),
            Err(RejectCode::AlreadyExists),
        ),
        (
            "add empty name",
            true,
            vec![],
            env(add(2, " ")),
            Err(RejectCode::Invalid),
        ),
        (
            "join",
            true,
            vec![],
            env(join("t1", "secret")),
            Ok(NodeId(2)),
        ),
        (
            "join after add 7",
            true,
            vec![env(add(7, "x"))],
            env(join("t1", "secret")),
            Ok(NodeId(8)),
        ),
        (
            "join wrong secret",
            true,
            vec![],
            env(join("t1", "nope")),
            Err(RejectCode::TokenInvalid),
        ),
        (
            "join unknown token",
            true,
            vec![],
            env(join("zz", "secret")),
            Err(RejectCode::TokenInvalid),
        ),
        (
            "join with client token",
            true,
            vec![],
            env(join("c1", "secret")),
            Err(RejectCode::TokenInvalid),
        ),
        (
            "join revoked",
            true,
            vec![env(Command::RevokeToken { id: "t1".into() })],
            env(join("t1", "secret")),
            Err(RejectCode::TokenInvalid),
        ),
        (
            "join expired",
            true,
            vec![],
            Envelope {
                at_ms: 10_000,
                ..env(join("t1", "secret"))
            },
            Err(RejectCode::TokenExpired),
        ),
        (
            "join used up",
            true,
            vec![env(join("t1", "secret"))],
            env(join("t1", "secret")),
            Err(RejectCode::TokenUsedUp),
        ),
        (
            "join bad secret hex",
            true,
            vec![],
            env(Command::JoinNode {
                token_id: "t1".into(),
                secret_sha256: "xyz".into(),
                name: "n".into(),
                api_addr: "a".into(),
                peer_addr: "b".into(),
                version: "v".into(),
            }),
            Err(RejectCode::TokenInvalid),
        ),
        ("update", true, vec![], env(upd(1)), Ok(Done)),
        (
            "update missing",
            true,
            vec![],
            env(upd(9)),
            Err(RejectCode::NotFound),
        ),
        (
            "update nothing",
            true,
            vec![],
            env(Command::UpdateNode {
                id: 1,
                api_addr: None,
                peer_addr: None,
                role: None,
                version: None,
            }),
            Err(RejectCode::Invalid),
        ),
        (
            "update removed",
            true,
            vec![env(Command::RemoveNode { id: 1 })],
            env(upd(1)),
            Err(RejectCode::Invalid),
        ),
        (
            "remove",
            true,
            vec![],
            env(Command::RemoveNode { id: 1 }),
            Ok(Done),
        ),
        (
            "remove missing",
            true,
            vec![],
            env(Command::RemoveNode { id: 4 }),
            Err(RejectCode::NotFound),
        ),
        (
            "set",
            true,
            vec![],
            env(set(Scope::Global, "ntp", "10.0.0.1")),
            Ok(ConfigVersion(1)),
        ),
        (
            "set again",
            true,
            vec![env(set(g("lab"), "ntp", "a"))],
            env(set(g("lab"), "ntp", "b")),
            Ok(ConfigVersion(2)),
        ),
        (
            "set other scope",
            true,
            vec![env(set(g("lab"), "ntp", "a"))],
            env(set(g("ship"), "ntp", "b")),
            Ok(ConfigVersion(1)),
        ),
        (
            "set bad key",
            true,
            vec![],
            env(set(Scope::Global, "a\nb", "v")),
            Err(RejectCode::Invalid),
        ),
        (
            "set empty key",
            true,
            vec![],
            env(set(Scope::Global, "", "v")),
            Err(RejectCode::Invalid),
        ),
        (
            "set huge value",
            true,
            vec![],
            env(set(
                Scope::Global,
                "k",
                &"x".repeat(crate::rules::MAX_VALUE_BYTES + 1),
            )),
            Err(RejectCode::Invalid),
        ),
        (
            "set empty group",
            true,
            vec![],
            env(set(g(""), "k", "v")),
            Err(RejectCode::Invalid),
        ),
        (
            "delete",
            true,
            vec![env(set(Scope::Client("h".into()), "k", "v"))],
            env(Command::DeleteConfig {
                scope: Scope::Client("h".into()),
                key: "k".into(),
            }),
            Ok(Done),
        ),
        (
            "delete absent",
            true,
            vec![],
            env(Command::DeleteConfig {
                scope: Scope::Global,
                key: "k".into(),
            }),
            Err(RejectCode::NotFound),
        ),
        (
            "token",
            true,
            vec![],
            env(token("t2", TokenKind::Client, Some(3))),
            Ok(Done),
        ),
        (
            "token dup",
            true,
            vec![],
            env(token("t1", TokenKind::Node, None)),
            Err(RejectCode::AlreadyExists),
        ),
        (
            "token zero uses",
            true,
            vec![],
            env(token("t2", TokenKind::Node, Some(0))),
            Err(RejectCode::Invalid),
        ),
        (
            "token already expired",
            true,
            vec![],
            Envelope {
                at_ms: 10_000,
                ..env(token("t2", TokenKind::Node, None))
            },
            Err(RejectCode::Invalid),
        ),
        (
            "token bad hash",
            true,
            vec![],
            env(Command::CreateToken {
                id: "t2".into(),
                kind: TokenKind::Node,
                secret_sha256: "abc".into(),
                expires_at_ms: 10_000,
                uses: None,
                groups: vec![],
            }),
            Err(RejectCode::Invalid),
        ),
        (
            "token bad group",
            true,
            vec![],
            env(Command::CreateToken {
                id: "t2".into(),
                kind: TokenKind::Client,
                secret_sha256: sha("s"),
                expires_at_ms: 10_000,
                uses: None,
                groups: vec!["".into()],
            }),
            Err(RejectCode::Invalid),
        ),
        (
            "revoke",
            true,
            vec![],
            env(Command::RevokeToken { id: "c1".into() }),
            Ok(Done),
        ),
        (
            "revoke missing",
            true,
            vec![],
            env(Command::RevokeToken { id: "zz".into() }),
            Err(RejectCode::NotFound),
        ),
    ];
    for (name, with_base, extra, cmd, want) in cases {
        let mut conn = fresh()?;
        let mut setup: Vec<Envelope> = if with_base {
            base().into_iter().map(env).collect()
        } else {
            vec![]
        };
        setup.extend(extra);
        for (i, o) in run(&mut conn, setup)?.into_iter().enumerate() {
            assert!(o.is_ok(), "{name}: setup step {i} failed: {o:?}");
        }
        let before = audit_count(&conn)?;
        let dump_before = dump(&conn)?;
        let got = run(&mut conn, vec![cmd])?;
        assert_eq!(got.len(), 1, "{name}");
        let got = got.into_iter().next().unwrap_or_else(|| unreachable!());
        let outcome: String = conn.query_row(
            "SELECT outcome FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )?;
        assert_eq!(
            audit_count(&conn)?,
            before + 1,
            "{name}: one audit row per envelope"
        );
        match (&got, &want) {
            (Ok(r), Ok(w)) => {
                assert_eq!(r, w, "{name}");
                assert_eq!(outcome, "ok", "{name}");
            }
            (Err(rej), Err(code)) => {
                assert_eq!(rej.code, *code, "{name}: {}", rej.message);
                assert!(!rej.message.is_empty(), "{name}");
                assert_eq!(outcome, format!("rejected: {rej}"), "{name}");
                // A rejection changes nothing but the audit log.
                assert_eq!(
                    dump(&conn)?,
                    dump_before,
                    "{name}: rejected command left changes"
                );
            }
            _ => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
    Ok(())
}

/// Every table except audit and meta's audit_head/marker, as text.
fn dump(conn: &Connection) -> Result<Vec<String>, rusqlite::Error> {
    let mut out = Vec::new();
    for (table, order) in [
        ("cluster", "singleton"),
        ("nodes", "id"),
        ("config", "scope_kind, scope_id, key"),
        ("tokens", "id"),
        ("meta WHERE key = 'next_node_id'", "key"),
    ] {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))?;
        let n = stmt.column_count();
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let mut line = table.to_owned();
            for i in 0..n {
                line.push_str(&format!("|{:?}", r.get_ref(i)?));
            }
            out.push(line);
        }
    }
    Ok(out)
}

/// `ImportSignedBundle` is verified in apply whoever proposes it: no or a forged
/// signature, a stranger's key, a `created` far past the time floor, or a config payload
/// whose bytes differ from the manifest are refused and change nothing; the good one applies
/// its config; the very same bytes again are a no-op.
#[test]
fn signed_bundles_are_verified_in_apply() -> Result<(), StorageError> {
    use outpost_bundles::{
        BundleType as BT, Manifest, PayloadEntry, PayloadKind, PublicKey, SignatureDocument,
        SignatureEntry, SigningKey, TrustDocument, manifest_bytes, sign_manifest,
    };
    let release = SigningKey::from_bytes(&[7; 32]);
    let stranger = SigningKey::from_bytes(&[8; 32]);
    let trust = TrustDocument::initial(vec![PublicKey::of(&release)], 1).expect("trust");
    let config = b"[global]\nsite = \"a\"\n".to_vec();
    let now_s = NOW / 1000;
    let manifest = |created: i64| Manifest {
        format: 1,
        id: "ab".repeat(16),
        bundle_type: BT::Content,
        channel: Some("site".into()),
        version: 1,
        created,
        expires: created + 86_400 * 30,
        targets: vec!["any".into()],
        payloads: vec![PayloadEntry {
            name: "cfg".into(),
            kind: PayloadKind::Config,
            size: config.len() as u64,
            sha256: sha(std::str::from_utf8(&config).expect("utf8")),
        }],
        trust: None,
        channel_resets: Default::default(),
    };
    let cmd = |m: &Manifest, sig: Option<&SigningKey>, payload: Vec<u8>| {
        let bytes = manifest_bytes(m).expect("manifest");
        let entry = match sig {
            Some(k) => sign_manifest(k, m.bundle_type, &bytes),
            None => SignatureEntry {
                key_id: "nobody".into(),
                signature: "00".repeat(64),
            },
        };
        let sigs = SignatureDocument {
            format: 1,
            signatures: vec![entry],
        };
        Command::ImportSignedBundle(Box::new(crate::model::SignedBundle {
            manifest: bytes,
            signatures: serde_json::to_vec(&sigs).expect("json"),
            config_payloads: vec![payload],
            cluster_time: now_s,
            node_id: 1,
        }))
    };
    let mut conn = fresh()?;
    let mut envs: Vec<Envelope> = vec![init(), add(1, "n1")].into_iter().map(env).collect();
    envs.push(env(Command::SetBundleTrust {
        version: 1,
        trust_json: serde_json::to_string(&trust).expect("json"),
    }));
    for o in run(&mut conn, envs)? {
        o.expect("setup");
    }
    let good = manifest(now_s);
    let refused = [
        (
            "unsigned",
            cmd(&good, None, config.clone()),
            "bundle refused",
        ),
        (
            "stranger",
            cmd(&good, Some(&stranger), config.clone()),
            "bundle refused",
        ),
        (
            "future",
            cmd(
                &manifest(now_s + 2 * 86_400),
                Some(&release),
                config.clone(),
            ),
            "later than the cluster time floor",
        ),
        (
            "payload swapped",
            cmd(&good, Some(&release), b"[global]\nsite = \"b\"\n".to_vec()),
            "does not match its manifest entry",
        ),
    ];
    for (name, c, want) in refused {
        let before = dump(&conn)?;
        let out = run(&mut conn, vec![env(c)])?;
        match &out[0] {
            Err(r) => assert!(r.message.contains(want), "{name}: {}", r.message),
            Ok(v) => panic!("{name}: applied ({v:?})"),
        }
        assert_eq!(before, dump(&conn)?, "{name} changed the state");
        let bundles: i64 = conn.query_row("SELECT COUNT(*) FROM bundles", [], |r| r.get(0))?;
        assert_eq!(bundles, 0, "{name} left a bundle");
    }
    let out = run(
        &mut conn,
        vec![env(cmd(&good, Some(&release), config.clone()))],
    )?;
    assert_eq!(out[0], Ok(Response::Done));
    let site: String = conn.query_row(
        "SELECT value FROM config WHERE scope_kind = 'global' AND key = 'site'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(site, "a");
    let again = run(&mut conn, vec![env(cmd(&good, Some(&release), config))])?;
    assert_eq!(again[0], Ok(Response::Unchanged));
    Ok(())
}

#[test]
fn join_consumes_a_use_and_allocates_growing_ids() -> Result<(), StorageError> {
    let mut conn = fresh()?;
    let mut envs: Vec<Envelope> = base().into_iter().map(env).collect();
    envs.push(env(token("t3", TokenKind::Node, Some(3))));
    envs.push(env(join("t3", "secret")));
    envs.push(env(Command::RemoveNode { id: 2 }));
    envs.push(env(join("t3", "secret")));
    let out = run(&mut conn, envs)?;
    assert_eq!(out[5], Ok(Response::NodeId(2)));
    assert_eq!(
        out[7],
        Ok(Response::NodeId(3)),
        "removed id 2 is not reused"
    );
    let left: i64 = conn.query_row("SELECT uses_left FROM tokens WHERE id = 't3'", [], |r| {
        r.get(0)
    })?;
    assert_eq!(left, 1);
    let role: String = conn.query_row("SELECT role FROM nodes WHERE id = 3", [], |r| r.get(0))?;
    assert_eq!(role, "joining");
    Ok(())
}

#[test]
fn audit_text_table() {
    let ok_join: Outcome = Ok(Response::NodeId(4));
    let rejected: Outcome = Err(Rejection::new(RejectCode::TokenInvalid, "bad"));
    let cases = [
        (env(join("t1", "s")), ok_join.clone(), "node.join", "node:4"),
        (
            env(join("t1", "s")),
            rejected.clone(),
            "node.join",
            "token:t1",
        ),
        (
            env(set(Scope::Group("lab".into()), "k", "v")),
            Ok(Response::ConfigVersion(3)),
            "config.set",
            "config:group:lab/k",
        ),
        (
            env(Command::RevokeToken { id: "x".into() }),
            Ok(Response::Done),
            "token.revoke",
            "token:x",
        ),
    ];
    for (e, outcome, action, target) in cases {
        let t = audit_text(&e, &outcome);
        assert_eq!((t.action, t.target.as_str()), (action, target));
    }
    let t = audit_text(&env(join("t1", "s")), &ok_join);
    assert!(
        !t.detail.contains(&sha("s")),
        "secrets never reach the audit log"
    );
    let t = audit_text(
        &env(set(Scope::Global, "k", "v")),
        &Ok(Response::ConfigVersion(3)),
    );
    assert!(t.detail.contains("\"version\":3") && !t.detail.contains("\"v\""));
    assert_eq!(outcome_text(&rejected), "rejected: token_invalid: bad");
    assert_eq!(outcome_text(&Ok(Response::Done)), "ok");
}

/// What the rollouts' audit rows say: who is in the envelope's actor, why is the step's
/// reason; a report that halted its rollout says so, and a plain report reads as it always did.
#[test]
fn rollout_audit_texts() {
    use crate::model::{DeploymentStatus, RolloutStep};
    let label = Command::LabelClients {
        clients: vec!["c1".into()],
        add: vec!["line2".into()],
        remove: vec![],
    };
    let many = Command::LabelClients {
        clients: (0..30).map(|i| format!("c{i}")).collect(),
        add: vec![],
        remove: vec!["line2".into()],
    };
    let open = Command::RolloutStep {
        id: "d-1".into(),
        step: RolloutStep::OpenPhase(1),
        reason: "phase 1 soaked 30m, 0 failures (1 allowed)".into(),
    };
    let report = Command::ReportDeployment {
        deployment_id: "d-1".into(),
        client_id: "c1".into(),
        status: DeploymentStatus::Failed,
        detail: "exit 1".into(),
    };
    let halted: Outcome = Ok(Response::Halted {
        reason: "2 failures > 1 allowed: c1, c2".into(),
    });
    // (command, outcome, action, target, detail)
    let cases = [
        (
            label,
            Ok(Response::Done),
            "client.label",
            "client:c1",
            r#"{"add":["line2"],"clients":["c1"],"count":1,"remove":[]}"#,
        ),
        (
            open,
            Ok(Response::Done),
            "deployment.step",
            "deployment:d-1",
            r#"{"reason":"phase 1 soaked 30m, 0 failures (1 allowed)","step":"open phase 2"}"#,
        ),
        (
            report.clone(),
            Ok(Response::Done),
            "deployment.report",
            "deployment:d-1",
            r#"{"client":"c1","detail_bytes":6,"status":"failed"}"#,
        ),
        (
            report,
            halted,
            "deployment.report",
            "deployment:d-1",
            r#"{"client":"c1","detail_bytes":6,"halted":"2 failures > 1 allowed: c1, c2","status":"failed"}"#,
        ),
    ];
    for (command, outcome, action, target, detail) in cases {
        let t = audit_text(&env(command), &outcome);
        assert_eq!(
            (t.action, t.target.as_str(), t.detail.as_str()),
            (action, target, detail)
        );
    }
    let t = audit_text(&env(many), &Ok(Response::Done));
    assert_eq!(t.target, "clients:30");
    assert!(t.detail.contains("\"count\":30") && !t.detail.contains("\"c25\""));
}

/// A request applied once: the same `Once` in a later entry (a forwarding retry, or a retry
/// after a leader change) gets the first outcome back, changes nothing and is not audited
/// again; a rejected request's rejection is remembered the same way; another id applies.
#[test]
fn request_ids_apply_once() -> Result<(), StorageError> {
    let once = |id: &str, command: Command| Command::Once {
        request_id: id.into(),
        command: Box::new(command),
    };
    let mut conn = fresh()?;
    for o in run(&mut conn, base().into_iter().map(env).collect())? {
        o.expect("setup");
    }
    let audited = audit_count(&conn)?;
    let first = run(
        &mut conn,
        vec![env(once("r1", set(Scope::Global, "k", "v")))],
    )?;
    assert_eq!(first, vec![Ok(Response::ConfigVersion(1))]);
    let retried = run(
        &mut conn,
        vec![env(once("r1", set(Scope::Global, "k", "v")))],
    )?;
    assert_eq!(retried, first, "a duplicate gets the first outcome");
    assert_eq!(
        audit_count(&conn)?,
        audited + 1,
        "a duplicate is not audited"
    );
    let other = run(
        &mut conn,
        vec![env(once("r2", set(Scope::Global, "k", "v")))],
    )?;
    assert_eq!(other, vec![Ok(Response::ConfigVersion(2))]);

    let missing = || {
        once(
            "r3",
            Command::DeleteConfig {
                scope: Scope::Global,
                key: "absent".into(),
            },
        )
    };
    let refused = run(&mut conn, vec![env(missing())])?;
    assert!(
        matches!(&refused[0], Err(r) if r.code == RejectCode::NotFound),
        "{refused:?}"
    );
    assert_eq!(run(&mut conn, vec![env(missing())])?, refused);

    // Inside one batch too, and a request id cannot wrap another.
    let both = run(
        &mut conn,
        vec![
            env(once("r4", set(Scope::Global, "j", "1"))),
            env(once("r4", set(Scope::Global, "j", "1"))),
            env(once("r5", once("r6", set(Scope::Global, "j", "2")))),
        ],
    )?;
    assert_eq!(both[0], Ok(Response::ConfigVersion(1)));
    assert_eq!(both[1], both[0]);
    assert!(
        matches!(&both[2], Err(r) if r.code == RejectCode::Invalid),
        "{both:?}"
    );
    Ok(())
}

/// Whether the cluster is initialized is read once per apply and follows `InitCluster` inside
/// the same batch; a request id around `InitCluster` is refused before it.
#[test]
fn initialization_is_followed_within_one_batch() -> Result<(), StorageError> {
    let mut conn = fresh()?;
    let wrapped_init = Command::Once {
        request_id: "r0".into(),
        command: Box::new(init()),
    };
    let out = run(
        &mut conn,
        vec![
            env(set(Scope::Global, "k", "before")),
            env(wrapped_init),
            env(init()),
            env(set(Scope::Global, "k", "after")),
            env(init()),
        ],
    )?;
    let codes: Vec<Result<Response, RejectCode>> =
        out.into_iter().map(|o| o.map_err(|r| r.code)).collect();
    assert_eq!(
        codes,
        vec![
            Err(RejectCode::NotInitialized),
            Err(RejectCode::NotInitialized),
            Ok(Response::Done),
            Ok(Response::ConfigVersion(1)),
            Err(RejectCode::AlreadyExists),
        ]
    );
    Ok(())
}

/// A config version goes one up per set and stops at the largest SQLite integer instead of
/// overflowing (SQLite would turn `i64::MAX + 1` into a float).
#[test]
fn config_versions_count_up_and_saturate() -> Result<(), StorageError> {
    let mut conn = fresh()?;
    for o in run(&mut conn, base().into_iter().map(env).collect())? {
        o.expect("setup");
    }
    let sets = run(
        &mut conn,
        vec![
            env(set(Scope::Global, "k", "1")),
            env(set(Scope::Global, "k", "2")),
        ],
    )?;
    assert_eq!(
        sets,
        vec![
            Ok(Response::ConfigVersion(1)),
            Ok(Response::ConfigVersion(2))
        ]
    );
    conn.execute("UPDATE config SET version = ?1 WHERE key = 'k'", [i64::MAX])?;
    let top = run(&mut conn, vec![env(set(Scope::Global, "k", "3"))])?;
    assert_eq!(top, vec![Ok(Response::ConfigVersion(i64::MAX as u64))]);
    let (value, kind): (String, String) = conn.query_row(
        "SELECT value, typeof(version) FROM config WHERE key = 'k'",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    assert_eq!((value.as_str(), kind.as_str()), ("3", "integer"));
    Ok(())
}

/// Every node keeps the same `REQUEST_IDS_KEPT` newest request ids, whatever the batches they
/// came in: the oldest go first, in the order they were applied.
#[test]
fn the_newest_request_ids_are_kept() -> Result<(), StorageError> {
    let once = |n: usize| Command::Once {
        request_id: format!("r{n}"),
        command: Box::new(set(Scope::Global, &format!("k{}", n % 7), "v")),
    };
    let mut conn = fresh()?;
    for o in run(&mut conn, base().into_iter().map(env).collect())? {
        o.expect("setup");
    }
    let kept = super::REQUEST_IDS_KEPT as usize;
    let total = kept + 5;
    let mut n = 0;
    while n < total {
        let size = (total - n).min(997);
        let envs = (n..n + size).map(|i| env(once(i))).collect();
        for o in run(&mut conn, envs)? {
            o.expect("a new request applies");
        }
        n += size;
    }
    let (count, oldest): (i64, String) = conn.query_row(
        "SELECT COUNT(*), (SELECT request_id FROM request_ids ORDER BY seq LIMIT 1) FROM request_ids",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    assert_eq!((count, oldest.as_str()), (kept as i64, "r5"));
    // A kept id answers with its first outcome; a forgotten one applies again (and, being
    // remembered anew, makes the oldest kept id go).
    let audited = audit_count(&conn)?;
    run(&mut conn, vec![env(once(5)), env(once(4))])?;
    assert_eq!(audit_count(&conn)?, audited + 1);
    Ok(())
}

#[test]
fn reform_keeps_one_node_removes_the_rest_and_may_replace_the_ca() -> Result<(), StorageError> {
    let mut conn = fresh()?;
    let mut envs: Vec<Envelope> = base().into_iter().map(env).collect();
    envs.push(env(token("t3", TokenKind::Node, Some(3))));
    envs.push(env(join("t3", "secret")));
    envs.push(env(join("t3", "secret")));
    let reform = |keep, ca: Option<&str>, reason: &str| Command::ReformCluster {
        keep,
        ca_cert_pem: ca.map(str::to_owned),
        reason: reason.to_owned(),
    };
    envs.push(env(reform(9, None, "recover")));
    envs.push(env(reform(2, None, "cleanup")));
    envs.push(env(reform(2, None, "recover")));
    envs.push(env(reform(1, None, "recover")));
    let out = run(&mut conn, envs)?;
    let n = out.len();
    assert_eq!(
        out[n - 4].as_ref().map_err(|r| r.code),
        Err(RejectCode::NotFound)
    );
    assert_eq!(
        out[n - 3].as_ref().map_err(|r| r.code),
        Err(RejectCode::Invalid)
    );
    assert_eq!(out[n - 2], Ok(Response::Done));
    assert_eq!(
        out[n - 1].as_ref().map_err(|r| r.code),
        Err(RejectCode::Invalid),
        "node 1 was removed by the reform around node 2"
    );
    let roles: Vec<(i64, String)> = conn
        .prepare("SELECT id, role FROM nodes ORDER BY id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    assert_eq!(
        roles,
        vec![
            (1, "removed".to_owned()),
            (2, "joining".to_owned()),
            (3, "removed".to_owned())
        ]
    );
    let out = run(&mut conn, vec![env(reform(2, Some("NEW CA"), "restore"))])?;
    assert_eq!(out[0], Ok(Response::Done));
    let ca: String = conn.query_row("SELECT ca_cert_pem FROM cluster", [], |r| r.get(0))?;
    assert_eq!(ca, "NEW CA");
    let action: String = conn.query_row(
        "SELECT action FROM audit ORDER BY seq DESC LIMIT 1",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(action, "cluster.reform");
    Ok(())
}

#[test]
fn console_links_are_single_use_and_sessions_end() -> Result<(), StorageError> {
    use crate::model::SessionProof;
    let mut conn = fresh()?;
    run(&mut conn, base().into_iter().map(env).collect())?;
    let at = |at_ms: i64, command: Command| Envelope {
        at_ms,
        actor: "console:alice".into(),
        command,
    };
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
    let link = |id: &str, user: &str, expires_at_ms: i64| Command::CreateConsoleLogin {
        id: id.into(),
        secret_sha256: sha("link-secret"),
        user: user.into(),
        expires_at_ms,
    };
    let start = |id: &str, user: &str, proof: SessionProof| Command::StartConsoleSession {
        id: id.into(),
        user: user.into(),
        secret_sha256: sha("session-secret"),
        expires_at_ms: 100_000,
        proof,
    };
    let by_link = |id: &str, secret: &str| SessionProof::Link {
        id: id.into(),
        secret_sha256: sha(secret),
    };
    let cases: Vec<(&str, Envelope, Want)> = vec![
        (
            "user with a plain hash",
            at(
                NOW,
                Command::SetConsoleUser {
                    name: "bob".into(),
                    password_hash: "plain".into(),
                },
            ),
            Err(RejectCode::Invalid),
        ),
        (
            "user",
            at(
                NOW,
                Command::SetConsoleUser {
                    name: "alice".into(),
                    password_hash: hash.into(),
                },
            ),
            Ok(Response::Done),
        ),
        (
            "link",
            at(NOW, link("l1", "alice", 5_000)),
            Ok(Response::Done),
        ),
        (
            "link again",
            at(NOW, link("l1", "alice", 5_000)),
            Err(RejectCode::AlreadyExists),
        ),
        (
            "expired link",
            at(NOW, link("l2", "alice", NOW)),
            Err(RejectCode::Invalid),
        ),
        (
            "short link",
            at(NOW, link("l3", "ops", 2_000)),
            Ok(Response::Done),
        ),
        (
            "wrong secret",
            at(NOW, start("s0", "alice", by_link("l1", "guess"))),
            Err(RejectCode::TokenInvalid),
        ),
        (
            "someone else's link",
            at(NOW, start("s0", "mallory", by_link("l1", "link-secret"))),
            Err(RejectCode::TokenInvalid),
        ),
        (
            "link starts a session",
            at(NOW, start("s1", "alice", by_link("l1", "link-secret"))),
            Ok(Response::Done),
        ),
        (
            "used link",
            at(NOW + 1, start("s2", "alice", by_link("l1", "link-secret"))),
            Err(RejectCode::TokenUsedUp),
        ),
        (
            "link used after its end",
            at(2_000, start("s3", "ops", by_link("l3", "link-secret"))),
            Err(RejectCode::TokenExpired),
        ),
        (
            "unknown link",
            at(NOW, start("s4", "alice", by_link("nope", "link-secret"))),
            Err(RejectCode::TokenInvalid),
        ),
        (
            "password verified against the current hash",
            at(
                NOW,
                start(
                    "s5",
                    "alice",
                    SessionProof::Password {
                        hash_sha256: sha(hash),
                    },
                ),
            ),
            Ok(Response::Done),
        ),
        (
            "password verified against another hash",
            at(
                NOW,
                start(
                    "s6",
                    "alice",
                    SessionProof::Password {
                        hash_sha256: sha("old"),
                    },
                ),
            ),
            Err(RejectCode::TokenInvalid),
        ),
        (
            "end",
            at(NOW, Command::EndConsoleSession { id: "s1".into() }),
            Ok(Response::Done),
        ),
        (
            "end again",
            at(NOW, Command::EndConsoleSession { id: "s1".into() }),
            Ok(Response::Done),
        ),
        (
            "end unknown",
            at(NOW, Command::EndConsoleSession { id: "zz".into() }),
            Err(RejectCode::NotFound),
        ),
        (
            "touch",
            at(
                NOW,
                Command::TouchConsoleSessions {
                    node_id: 1,
                    seen: vec![("s5".into(), 7_000), ("s1".into(), 7_000), ("zz".into(), 1)],
                },
            ),
            Ok(Response::Done),
        ),
        (
            "remove user",
            at(
                8_000,
                Command::RemoveConsoleUser {
                    name: "alice".into(),
                },
            ),
            Ok(Response::Done),
        ),
        (
            "remove user again",
            at(
                8_000,
                Command::RemoveConsoleUser {
                    name: "alice".into(),
                },
            ),
            Err(RejectCode::NotFound),
        ),
    ];
    for (name, e, want) in cases {
        let got = run(&mut conn, vec![e])?.pop();
        let got = got.map(|o| o.map_err(|r| r.code));
        assert_eq!(got, Some(want), "{name}");
    }
    let sessions: Vec<(String, i64, Option<i64>)> = conn
        .prepare("SELECT id, last_seen_ms, ended_at_ms FROM console_sessions ORDER BY id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    // s1 ended before the touch (not moved); s5 touched, then ended with its user.
    assert_eq!(
        sessions,
        vec![
            ("s1".to_string(), NOW, Some(NOW)),
            ("s5".to_string(), 7_000, Some(8_000))
        ]
    );
    // No password hash, and no secret or its hash, in the audit log.
    let audit: Vec<String> = conn
        .prepare("SELECT action || ' ' || target || ' ' || detail FROM audit")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let text = audit.join("\n");
    for secret in [
        hash,
        "argon2",
        &sha("link-secret"),
        &sha("session-secret"),
        &sha(hash),
    ] {
        assert!(!text.contains(secret), "{secret} in the audit log:\n{text}");
    }
    assert!(
        text.contains("console.session.start console-session:s1"),
        "{text}"
    );
    Ok(())
}

#[test]
fn signin_locks_keep_the_later_end_count_strikes_and_are_forgotten_after_a_day()
-> Result<(), StorageError> {
    let mut conn = fresh()?;
    run(&mut conn, base().into_iter().map(env).collect())?;
    let day = 24 * 3600 * 1000;
    let lock = |at_ms: i64, key: &str, until_ms: i64| Envelope {
        at_ms,
        actor: "node:1".into(),
        command: Command::LockSignIn {
            key: key.into(),
            until_ms,
        },
    };
    let cases: Vec<(&str, Envelope, Want)> = vec![
        (
            "account",
            lock(NOW, "account:alice", NOW + 60_000),
            Ok(Response::Done),
        ),
        (
            "shorter again",
            lock(NOW + 1, "account:alice", NOW + 10),
            Ok(Response::Done),
        ),
        (
            "ipv4",
            lock(NOW, "addr:192.0.2.7", NOW + 60_000),
            Ok(Response::Done),
        ),
        (
            "ipv6 /64",
            lock(NOW, "net:2001:db8:1:2::/64", NOW + 60_000),
            Ok(Response::Done),
        ),
        (
            "ipv6 host",
            lock(NOW, "net:2001:db8:1:2::5/64", NOW + 1),
            Err(RejectCode::Invalid),
        ),
        (
            "mapped v4 as v6",
            lock(NOW, "net:::ffff:192.0.2.7/64", NOW + 1),
            Err(RejectCode::Invalid),
        ),
        (
            "not an address",
            lock(NOW, "addr:example", NOW + 1),
            Err(RejectCode::Invalid),
        ),
        (
            "bad account",
            lock(NOW, "account:a b", NOW + 1),
            Err(RejectCode::Invalid),
        ),
        (
            "no kind",
            lock(NOW, "alice", NOW + 1),
            Err(RejectCode::Invalid),
        ),
        (
            "ends before it starts",
            lock(NOW, "account:bob", NOW),
            Err(RejectCode::Invalid),
        ),
        (
            "longer than a day",
            lock(NOW, "account:bob", NOW + day + 1),
            Err(RejectCode::Invalid),
        ),
        // Two days later: the ended locks' rows go, this one starts at one strike.
        (
            "later",
            lock(NOW + 2 * day, "account:carol", NOW + 2 * day + 5),
            Ok(Response::Done),
        ),
    ];
    let rows = |conn: &Connection| -> Result<Vec<(String, i64, u32)>, StorageError> {
        Ok(conn
            .prepare("SELECT key, until_ms, strikes FROM signin_locks ORDER BY key")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?)
    };
    for (i, (name, e, want)) in cases.into_iter().enumerate() {
        let got = run(&mut conn, vec![e])?.pop();
        let got = got.map(|o| o.map_err(|r| r.code));
        assert_eq!(got, Some(want), "{name}");
        if i == 3 {
            assert_eq!(
                rows(&conn)?,
                vec![
                    ("account:alice".to_string(), NOW + 60_000, 2),
                    ("addr:192.0.2.7".to_string(), NOW + 60_000, 1),
                    ("net:2001:db8:1:2::/64".to_string(), NOW + 60_000, 1),
                ]
            );
        }
    }
    assert_eq!(
        rows(&conn)?,
        vec![("account:carol".to_string(), NOW + 2 * day + 5, 1)]
    );
    Ok(())
}

#[test]
fn signin_source_keys() {
    use crate::apply::signin_source_key;
    for (ip, want) in [
        ("192.0.2.7", "addr:192.0.2.7"),
        ("::ffff:192.0.2.7", "addr:192.0.2.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "net:2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "net:2001:db8:1:2::/64"),
        ("::1", "net:::/64"),
    ] {
        let ip: std::net::IpAddr = ip.parse().expect("an address");
        assert_eq!(signin_source_key(ip), want);
    }
}

/// Routine liveness leaves the audit (format 9): a quiet touch applies like the touch it
/// wraps and leaves no row; a quiet wrapper around anything else, or a quiet touch that is
/// refused, is audited like any refusal; a plain touch is audited as before (mixed clusters).
#[test]
fn quiet_touches_leave_no_audit_row() -> Result<(), StorageError> {
    let touch = |node_id, at| Command::TouchClients {
        node_id,
        seen: vec![("cl-1".into(), at)],
    };
    let quiet = |c: Command| Command::Quiet(Box::new(c));
    let sessions = Command::TouchConsoleSessions {
        node_id: 1,
        seen: vec![("s-unknown".into(), 5)],
    };
    // (name, command, accepted, audit rows added, client's last seen afterwards)
    let cases: Vec<(&str, Command, bool, i64, Option<i64>)> = vec![
        ("plain touch", touch(1, 500), true, 1, Some(500)),
        ("quiet touch", quiet(touch(1, 600)), true, 0, Some(600)),
        ("quiet session touch", quiet(sessions), true, 0, None),
        (
            "quiet touch in a request id",
            Command::Once {
                request_id: "r-q".into(),
                command: Box::new(quiet(touch(1, 700))),
            },
            true,
            0,
            Some(700),
        ),
        (
            "quiet touch, bad node",
            quiet(touch(0, 800)),
            false,
            1,
            None,
        ),
        (
            "quiet config write",
            quiet(set(Scope::Global, "k", "v")),
            false,
            1,
            None,
        ),
        (
            "quiet quiet touch",
            quiet(quiet(touch(1, 900))),
            false,
            1,
            None,
        ),
    ];
    for (name, command, accepted, rows, seen) in cases {
        let mut conn = fresh()?;
        let mut setup: Vec<Envelope> = base().into_iter().map(env).collect();
        setup.push(env(Command::EnrollClient {
            token_id: "c1".into(),
            secret_sha256: sha("secret"),
            client_id: "cl-1".into(),
            hostname: "h".into(),
            cert_serial: "s-1".into(),
        }));
        run(&mut conn, setup)?;
        let before = audit_count(&conn)?;
        let out = run(&mut conn, vec![env(command)])?;
        assert_eq!(out.len(), 1, "{name}");
        assert_eq!(out[0].is_ok(), accepted, "{name}: {:?}", out[0]);
        if !accepted {
            assert_eq!(
                out[0].as_ref().err().map(|r| r.code),
                Some(RejectCode::Invalid),
                "{name}"
            );
        }
        assert_eq!(audit_count(&conn)? - before, rows, "{name}: audit rows");
        let last: Option<i64> = conn.query_row(
            "SELECT last_seen_ms FROM clients WHERE id = 'cl-1'",
            [],
            |r| r.get(0),
        )?;
        assert_eq!(last, seen, "{name}: last seen");
        let config: i64 = conn.query_row("SELECT COUNT(*) FROM config", [], |r| r.get(0))?;
        assert_eq!(config, 0, "{name}: nothing else applied");
    }
    // The chain stays whole across quiet touches: the next audited row links to the head.
    let mut conn = fresh()?;
    run(&mut conn, base().into_iter().map(env).collect())?;
    run(&mut conn, vec![env(quiet(touch(1, 5)))])?;
    run(&mut conn, vec![env(set(Scope::Global, "k", "v"))])?;
    let broken: i64 = conn.query_row(
        "SELECT COUNT(*) FROM audit a JOIN audit b ON b.seq = a.seq + 1 WHERE b.prev_hash != a.hash",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(broken, 0);
    Ok(())
}
