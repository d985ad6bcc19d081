//! People's roles through the store: `SetRole` applied and read back, the input it refuses,
//! its audit record, the identity epoch, and the audit read by person (`audit_by_actor`).

mod common;

use common::{apply_as, init_batch, sha};
use outpost_storage::{
    Command, Grant, MAX_ROLE_SCOPES, PersonRole, RejectCode, RoleScope, Selector, Store, TokenKind,
    encode_batch,
};

async fn fresh(dir: &std::path::Path) -> anyhow::Result<Store> {
    let store = Store::open(&dir.join("state.db"))?;
    store
        .apply(vec![Some(encode_batch(&init_batch()))], vec![0])
        .await?;
    Ok(store)
}

fn set(name: &str, role: PersonRole, scopes: Vec<RoleScope>) -> Command {
    Command::SetRole {
        name: name.into(),
        grant: Grant { role, scopes },
    }
}

#[tokio::test]
async fn a_role_is_set_read_back_and_audited() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = fresh(dir.path()).await?;
    let r = store.reader();
    // A name never set is an admin of the whole site.
    assert_eq!(r.grant("alice")?, Grant::admin());
    assert!(r.role("alice")?.is_none());

    let epoch = r.identity_epoch();
    let line2 = vec![
        RoleScope::Label("line2".into()),
        RoleScope::Group("hmi".into()),
    ];
    let out = apply_as(
        &store,
        10,
        "local-admin",
        set("alice", PersonRole::Operator, line2.clone()),
    )
    .await?;
    assert!(out.is_ok(), "{out:?}");
    assert!(
        r.identity_epoch() > epoch,
        "a role change moves the identity epoch (requests re-read grants)"
    );
    let want = Grant {
        role: PersonRole::Operator,
        scopes: line2.clone(),
    };
    assert_eq!(r.grant("alice")?, want);
    let row = r.role("alice")?.expect("alice's row");
    assert_eq!(
        (row.updated_at_ms, row.updated_by.as_str()),
        (10, "local-admin")
    );

    // Set again: the row is replaced whole, not merged.
    apply_as(
        &store,
        20,
        "admin:carol as admin",
        set("alice", PersonRole::Viewer, vec![]),
    )
    .await?
    .expect("viewer");
    apply_as(
        &store,
        21,
        "local-admin",
        set("bob", PersonRole::Admin, vec![]),
    )
    .await?
    .expect("admin");
    let rows = r.roles()?;
    assert_eq!(
        rows.iter()
            .map(|x| (x.name.as_str(), x.grant.role, x.grant.scopes.len()))
            .collect::<Vec<_>>(),
        [
            ("alice", PersonRole::Viewer, 0),
            ("bob", PersonRole::Admin, 0)
        ]
    );
    assert_eq!(rows[0].updated_by, "admin:carol as admin");

    // The audit: `role.set` on `person:NAME`, the role and the scope in the detail.
    let head = r.audit_head()?.map(|(s, _)| s).unwrap_or(0);
    let recs = r.audit(0, head as u32 + 1)?;
    let set_rows: Vec<_> = recs.iter().filter(|a| a.action == "role.set").collect();
    assert_eq!(set_rows.len(), 3, "{recs:#?}");
    assert_eq!(set_rows[0].target, "person:alice");
    assert_eq!(set_rows[0].actor, "local-admin");
    assert_eq!(set_rows[0].outcome, "ok");
    let detail: serde_json::Value = serde_json::from_str(&set_rows[0].detail)?;
    assert_eq!(
        detail,
        serde_json::json!({"role": "operator", "scopes": ["label:line2", "group:hmi"]})
    );
    Ok(())
}

#[tokio::test]
async fn refused_roles_change_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = fresh(dir.path()).await?;
    let r = store.reader();
    apply_as(
        &store,
        5,
        "local-admin",
        set("alice", PersonRole::Viewer, vec![]),
    )
    .await?
    .expect("viewer");
    let many: Vec<RoleScope> = (0..=MAX_ROLE_SCOPES)
        .map(|i| RoleScope::Label(format!("l{i}")))
        .collect();
    assert_eq!(many.len(), 33);
    let cases: Vec<(&str, Command, &str)> = vec![
        (
            "an admin with a scope",
            set(
                "alice",
                PersonRole::Admin,
                vec![RoleScope::Label("x".into())],
            ),
            "admin reaches the whole site",
        ),
        (
            "group:all",
            set(
                "alice",
                PersonRole::Operator,
                vec![RoleScope::Group("all".into())],
            ),
            "group:all",
        ),
        (
            "33 scope terms",
            set("alice", PersonRole::Operator, many),
            "33 scope terms",
        ),
        (
            "a bad name",
            set("al ice", PersonRole::Viewer, vec![]),
            "person",
        ),
        (
            "an empty name",
            set("", PersonRole::Viewer, vec![]),
            "person",
        ),
        (
            "a term named twice",
            set(
                "alice",
                PersonRole::Viewer,
                vec![RoleScope::Label("x".into()), RoleScope::Label("x".into())],
            ),
            "twice",
        ),
    ];
    for (what, command, says) in cases {
        let out = apply_as(&store, 10, "local-admin", command).await?;
        let rej = out.expect_err(what);
        assert_eq!(rej.code, RejectCode::Invalid, "{what}: {rej:?}");
        assert!(
            rej.message.contains(says),
            "{what}: {:?} lacks {says:?}",
            rej.message
        );
        assert_eq!(
            r.grant("alice")?,
            Grant {
                role: PersonRole::Viewer,
                scopes: vec![]
            },
            "{what} changed alice"
        );
        assert!(r.role("al ice")?.is_none() && r.role("")?.is_none());
    }
    Ok(())
}

#[tokio::test]
async fn the_audit_is_read_by_person_and_by_whole_actor() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = fresh(dir.path()).await?;
    let r = store.reader();
    // One config write per actor text, each with a distinct value to tell them apart.
    let actors = [
        "admin:alice",
        "admin:alice as viewer",
        "console:alice as operator of label:x",
        "node:3:discovery",
        "node:3",
        "node:31",
        "admin:alicex",
        "console:al",
        "local-admin",
        "admin:bob as admin",
    ];
    for (i, actor) in actors.iter().enumerate() {
        apply_as(
            &store,
            100 + i as i64,
            actor,
            Command::SetConfig {
                scope: outpost_storage::Scope::Global,
                key: "k".into(),
                value: format!("v{i}"),
            },
        )
        .await?
        .expect("config set");
    }
    let who = |actor: &str| -> anyhow::Result<Vec<String>> {
        Ok(r.audit_by_actor(actor, None, 100)?
            .into_iter()
            .map(|a| a.actor)
            .collect())
    };
    assert_eq!(
        who("alice")?,
        [
            "admin:alice",
            "admin:alice as viewer",
            "console:alice as operator of label:x"
        ]
    );
    assert_eq!(
        who("admin:alice")?,
        ["admin:alice", "admin:alice as viewer"]
    );
    assert_eq!(
        who("console:alice")?,
        ["console:alice as operator of label:x"]
    );
    assert_eq!(who("node:3")?, ["node:3:discovery", "node:3"]);
    assert_eq!(who("al")?, ["console:al"]);
    assert_eq!(who("local-admin")?, ["local-admin"]);
    assert_eq!(who("bob")?, ["admin:bob as admin"]);
    assert!(who("carol")?.is_empty());

    // Oldest first; `after_seq` pages forward and `limit` keeps the newest without it.
    let all = r.audit_by_actor("alice", None, 100)?;
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let newest = r.audit_by_actor("alice", None, 1)?;
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].actor, "console:alice as operator of label:x");
    let after = r.audit_by_actor("alice", Some(all[0].seq), 1)?;
    assert_eq!(after[0].actor, "admin:alice as viewer");
    Ok(())
}

#[tokio::test]
async fn targets_outside_a_scope_are_named() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = fresh(dir.path()).await?;
    let r = store.reader();
    apply_as(
        &store,
        5,
        "local-admin",
        Command::CreateToken {
            id: "ct".into(),
            kind: TokenKind::Client,
            secret_sha256: sha("s"),
            expires_at_ms: 1_000_000,
            uses: None,
            groups: vec!["lab".into()],
        },
    )
    .await?
    .expect("token");
    for (i, id) in ["c-1", "c-2", "c-3", "c-4"].iter().enumerate() {
        apply_as(
            &store,
            10 + i as i64,
            "anonymous",
            Command::EnrollClient {
                token_id: "ct".into(),
                secret_sha256: sha("s"),
                client_id: (*id).into(),
                hostname: format!("{id}.plant"),
                cert_serial: format!("{:0>32}", i + 1),
            },
        )
        .await?
        .expect("enrolled");
    }
    apply_as(
        &store,
        20,
        "local-admin",
        Command::LabelClients {
            clients: vec!["c-2".into(), "c-4".into()],
            add: vec!["line2".into()],
            remove: vec![],
        },
    )
    .await?
    .expect("labelled");
    let line2 = Grant {
        role: PersonRole::Operator,
        scopes: vec![RoleScope::Label("line2".into())],
    };
    let everyone = Selector {
        groups: vec!["all".into()],
        ..Selector::default()
    };
    let labelled = Selector {
        labels: vec!["line2".into()],
        ..Selector::default()
    };
    assert_eq!(r.targets_outside(&everyone, &line2)?, ["c-1", "c-3"]);
    assert!(r.targets_outside(&labelled, &line2)?.is_empty());
    assert!(r.targets_outside(&everyone, &Grant::admin())?.is_empty());
    let by_group = Grant {
        role: PersonRole::Viewer,
        scopes: vec![RoleScope::Group("lab".into())],
    };
    assert!(r.targets_outside(&everyone, &by_group)?.is_empty());
    Ok(())
}
