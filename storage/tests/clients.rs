//! Client enrollment, revocation and last-seen through the store.

mod common;

use common::{env, init_batch, sha};
use outpost_storage::{Command, Outcome, RejectCode, Store, TokenKind, encode_batch};

async fn apply(store: &Store, at_ms: i64, command: Command) -> anyhow::Result<Outcome> {
    let out = store
        .apply(vec![Some(encode_batch(&[env(at_ms, command)]))], vec![0])
        .await?;
    Ok(out
        .into_iter()
        .next()
        .flatten()
        .and_then(|v| v.into_iter().next())
        .expect("one outcome"))
}

fn enroll(token: &str, secret: &str, id: &str) -> Command {
    Command::EnrollClient {
        token_id: token.into(),
        secret_sha256: sha(secret),
        client_id: id.into(),
        hostname: format!("{id}.plant"),
        cert_serial: format!("{:0>32}", id.len()),
    }
}

fn code(o: &Outcome) -> Option<RejectCode> {
    o.as_ref().err().map(|r| r.code)
}

#[tokio::test]
async fn enrollment_checks_the_token_and_revocation_sticks() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("state.db"))?;
    store
        .apply(vec![Some(encode_batch(&init_batch()))], vec![0])
        .await?;
    let token = |id: &str, uses, groups: Vec<String>| Command::CreateToken {
        id: id.into(),
        kind: TokenKind::Client,
        secret_sha256: sha("s"),
        expires_at_ms: 10_000,
        uses,
        groups,
    };
    assert!(
        apply(
            &store,
            5,
            token("ct", Some(2), vec!["lab".into(), "north".into()])
        )
        .await?
        .is_ok()
    );

    // Table: (what, at_ms, command, expected rejection)
    let cases: Vec<(&str, i64, Command, Option<RejectCode>)> = vec![
        ("first enrollment", 10, enroll("ct", "s", "c1"), None),
        (
            "same id again",
            11,
            enroll("ct", "s", "c1"),
            Some(RejectCode::AlreadyExists),
        ),
        (
            "wrong secret",
            12,
            enroll("ct", "x", "c2"),
            Some(RejectCode::TokenInvalid),
        ),
        (
            "node token",
            13,
            enroll("nt", "node-secret", "c2"),
            Some(RejectCode::TokenInvalid),
        ),
        (
            "unknown token",
            14,
            enroll("zz", "s", "c2"),
            Some(RejectCode::TokenInvalid),
        ),
        (
            "bad id",
            15,
            enroll("ct", "s", "c/../2"),
            Some(RejectCode::Invalid),
        ),
        (
            "expired",
            10_000,
            enroll("ct", "s", "c3"),
            Some(RejectCode::TokenExpired),
        ),
        ("second use", 20, enroll("ct", "s", "c2"), None),
        (
            "used up",
            21,
            enroll("ct", "s", "c4"),
            Some(RejectCode::TokenUsedUp),
        ),
        (
            "revoke",
            30,
            Command::RevokeClient {
                client_id: "c1".into(),
            },
            None,
        ),
        (
            "revoke unknown",
            31,
            Command::RevokeClient {
                client_id: "nope".into(),
            },
            Some(RejectCode::NotFound),
        ),
    ];
    for (what, at, cmd, want) in cases {
        let got = apply(&store, at, cmd).await?;
        assert_eq!(code(&got), want, "{what}: {got:?}");
    }

    let reader = store.reader();
    let clients = reader.clients()?;
    assert_eq!(
        clients.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["c1", "c2"]
    );
    let c1 = reader.client("c1")?.expect("c1");
    assert!(c1.revoked);
    assert_eq!(c1.groups, ["lab", "north"]);
    assert!(reader.serial_revoked(&c1.cert_serial)?);
    assert!(!reader.serial_revoked("ffff")?);

    // Last seen moves forward only, and never for a revoked client.
    let touch = |seen: Vec<(&str, i64)>| Command::TouchClients {
        node_id: 1,
        seen: seen.into_iter().map(|(c, t)| (c.to_string(), t)).collect(),
    };
    assert!(
        apply(
            &store,
            40,
            touch(vec![("c1", 40), ("c2", 40), ("ghost", 40)])
        )
        .await?
        .is_ok()
    );
    assert!(apply(&store, 41, touch(vec![("c2", 39)])).await?.is_ok());
    assert_eq!(reader.client("c2")?.and_then(|c| c.last_seen), Some(40));
    assert_eq!(reader.client("c2")?.and_then(|c| c.last_seen_node), Some(1));
    assert_eq!(reader.client("c1")?.and_then(|c| c.last_seen), None);
    Ok(())
}

#[tokio::test]
async fn inventory_reports_keep_latest_facts_and_a_history_of_changes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("state.db"))?;
    store
        .apply(vec![Some(encode_batch(&init_batch()))], vec![0])
        .await?;
    let token = Command::CreateToken {
        id: "ct".into(),
        kind: TokenKind::Client,
        secret_sha256: sha("s"),
        expires_at_ms: 10_000,
        uses: None,
        groups: vec![],
    };
    assert!(apply(&store, 5, token).await?.is_ok());
    assert!(apply(&store, 6, enroll("ct", "s", "c1")).await?.is_ok());
    let report = |facts: &str| Command::ReportInventory {
        client_id: "c1".into(),
        facts_json: facts.into(),
    };
    let cases: Vec<(&str, Command, Option<RejectCode>)> = vec![
        (
            "first",
            report(r#"{"os":{"id":"debian"},"kernel":"6.1"}"#),
            None,
        ),
        (
            "same again",
            report(r#"{"os":{"id":"debian"},"kernel":"6.1"}"#),
            None,
        ),
        (
            "kernel changed",
            report(r#"{"os":{"id":"debian"},"kernel":"6.2"}"#),
            None,
        ),
        ("not json", report("{nope"), Some(RejectCode::Invalid)),
        ("not an object", report("[1,2]"), Some(RejectCode::Invalid)),
        (
            "unknown client",
            Command::ReportInventory {
                client_id: "ghost".into(),
                facts_json: "{}".into(),
            },
            Some(RejectCode::NotFound),
        ),
    ];
    for (i, (what, cmd, want)) in cases.into_iter().enumerate() {
        let got = apply(&store, 10 + i as i64, cmd).await?;
        assert_eq!(code(&got), want, "{what}: {got:?}");
    }
    let reader = store.reader();
    let inv = reader.inventory("c1")?.expect("inventory");
    assert_eq!(inv.facts["kernel"], "6.2");
    assert_eq!(inv.updated_at_ms, 12);
    let history = reader.inventory_history("c1", 10)?;
    assert_eq!(
        history.len(),
        2,
        "an unchanged report leaves no history: {history:?}"
    );
    assert_eq!(history[0].changed, ["kernel"]);
    assert_eq!(history[1].changed, ["kernel", "os"]);
    assert_eq!(reader.inventories()?.len(), 1);
    Ok(())
}

/// History is bounded per client in the apply that inserts: after more reports than
/// `INVENTORY_HISTORY_KEPT`, the newest rows are kept, and another client's rows are not
/// touched.
#[tokio::test]
async fn inventory_history_keeps_the_newest_rows_per_client() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("state.db"))?;
    store
        .apply(vec![Some(encode_batch(&init_batch()))], vec![0])
        .await?;
    let token = Command::CreateToken {
        id: "ct".into(),
        kind: TokenKind::Client,
        secret_sha256: sha("s"),
        expires_at_ms: 1_000_000,
        uses: None,
        groups: vec![],
    };
    assert!(apply(&store, 5, token).await?.is_ok());
    assert!(apply(&store, 6, enroll("ct", "s", "c1")).await?.is_ok());
    assert!(apply(&store, 7, enroll("ct", "s", "c2")).await?.is_ok());
    let report = |client: &str, n: usize| Command::ReportInventory {
        client_id: client.into(),
        facts_json: format!(r#"{{"n":{n}}}"#),
    };
    assert!(apply(&store, 8, report("c2", 0)).await?.is_ok());
    let kept = outpost_storage::INVENTORY_HISTORY_KEPT;
    for n in 0..kept + 20 {
        assert!(apply(&store, 10 + n as i64, report("c1", n)).await?.is_ok());
    }
    let reader = store.reader();
    let history = reader.inventory_history("c1", (10 * kept) as u32)?;
    assert_eq!(history.len(), kept);
    // Newest first: the last report's time, and the oldest kept is the 21st report's.
    assert_eq!(history[0].at_ms, 10 + (kept + 19) as i64);
    assert_eq!(history[kept - 1].at_ms, 10 + 20);
    assert_eq!(reader.inventory_history("c2", 10)?.len(), 1);
    // What the API's hourly budget counts: changes at or after a time.
    assert_eq!(reader.inventory_changes_since("c1", 0)?, kept as u32);
    assert_eq!(
        reader.inventory_changes_since("c1", 10 + (kept + 15) as i64)?,
        5
    );
    assert_eq!(reader.inventory_changes_since("c2", 9)?, 0);
    Ok(())
}

/// A client's failing health checks come from its latest facts (`health.NAME.ok` false),
/// read by SQL beside the record: sorted, capped, and blind to shapes an agent should not
/// send. The console's filters (failing, unseen since) and the text filter combine.
#[tokio::test]
async fn failing_checks_and_unseen_clients_are_read_from_the_state() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("state.db"))?;
    store
        .apply(vec![Some(encode_batch(&init_batch()))], vec![0])
        .await?;
    let token = Command::CreateToken {
        id: "ct".into(),
        kind: TokenKind::Client,
        secret_sha256: sha("s"),
        expires_at_ms: 1_000_000,
        uses: None,
        groups: vec![],
    };
    assert!(apply(&store, 5, token).await?.is_ok());
    let ids = ["c1", "c2", "c3", "c4", "c5", "c6"];
    for (i, id) in ids.iter().enumerate() {
        assert!(
            apply(&store, 6 + i as i64, enroll("ct", "s", id))
                .await?
                .is_ok()
        );
    }
    let many: serde_json::Map<String, serde_json::Value> = (0..40)
        .map(|n| (format!("cmd.n{n:02}"), serde_json::json!({"ok": false})))
        .collect();
    // (client, facts, failing checks read back)
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "c1",
            r#"{"health":{"disk":{"ok":true,"detail":"12% used"},"cmd.flag":{"ok":false,"detail":"exit 1"},"service.nginx":{"ok":false,"detail":"inactive"}}}"#.into(),
            vec!["cmd.flag".into(), "service.nginx".into()],
        ),
        ("c2", r#"{"health":{"disk":{"ok":true}}}"#.into(), vec![]),
        ("c3", r#"{"os":"debian"}"#.into(), vec![]),
        // Shapes an agent should not send: nothing read, no error.
        (
            "c4",
            r#"{"health":{"a":"text","b":{"ok":0},"c":[1],"d\nx":{"ok":false},"e":{"ok":false}}}"#
                .into(),
            vec!["e".into()],
        ),
        (
            "c5",
            serde_json::json!({ "health": many }).to_string(),
            (0..32).map(|n| format!("cmd.n{n:02}")).collect(),
        ),
    ];
    for (i, (id, facts, _)) in cases.iter().enumerate() {
        let report = Command::ReportInventory {
            client_id: id.to_string(),
            facts_json: facts.clone(),
        };
        assert!(apply(&store, 20 + i as i64, report).await?.is_ok(), "{id}");
    }
    let reader = store.reader();
    for (id, _, want) in &cases {
        let c = reader.client(id)?.expect("client");
        assert_eq!(&c.failing, want, "{id}");
    }
    assert_eq!(
        outpost_storage::MAX_FAILING_SHOWN,
        32,
        "the SELECT's LIMIT is 32"
    );
    let listed = reader.clients()?;
    assert_eq!(listed[0].failing, ["cmd.flag", "service.nginx"]);
    assert!(listed[5].failing.is_empty(), "c6 never reported");

    // Seen: c1 at 1000, c2 at 5000; the rest never.
    let touch = Command::TouchClients {
        node_id: 1,
        seen: vec![("c1".into(), 1000), ("c2".into(), 5000)],
    };
    assert!(apply(&store, 50, touch).await?.is_ok());
    // c6 revoked: listed, but never as unseen or failing.
    let revoke = Command::RevokeClient {
        client_id: "c6".into(),
    };
    assert!(apply(&store, 51, revoke).await?.is_ok());
    let page = |filter: outpost_storage::ClientFilter| -> anyhow::Result<(Vec<String>, u64)> {
        let (rows, total) = reader.clients_page(&filter, 0, 100)?;
        Ok((rows.into_iter().map(|c| c.id).collect(), total))
    };
    use outpost_storage::ClientFilter;
    let cases: Vec<(&str, ClientFilter, Vec<&str>)> = vec![
        ("none", ClientFilter::default(), ids.to_vec()),
        (
            "failing",
            ClientFilter {
                failing: true,
                ..Default::default()
            },
            vec!["c1", "c4", "c5"],
        ),
        (
            "unseen since 2000",
            ClientFilter {
                unseen_since_ms: Some(2000),
                ..Default::default()
            },
            vec!["c1", "c3", "c4", "c5"],
        ),
        (
            "failing and unseen since 2000 and text",
            ClientFilter {
                failing: true,
                unseen_since_ms: Some(2000),
                text: "c4".into(),
                ..Default::default()
            },
            vec!["c4"],
        ),
        (
            "unseen since 500",
            ClientFilter {
                unseen_since_ms: Some(500),
                failing: true,
                ..Default::default()
            },
            vec!["c4", "c5"],
        ),
    ];
    for (what, filter, want) in cases {
        let (got, total) = page(filter)?;
        assert_eq!(got, want, "{what}");
        assert_eq!(total, want.len() as u64, "{what}");
    }
    Ok(())
}
