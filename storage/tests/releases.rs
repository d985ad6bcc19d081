//! Bundle trust, bundle import floors, blob holders, deployments and renewal through the store.

mod common;

use common::{env, init_batch, sha};
use outpost_storage::{
    BundleImport, BundleType, Command, DeploymentStatus, Outcome, PayloadRecord, RejectCode,
    Response, Scope, Store, TokenKind, encode_batch,
};

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

fn code(o: &Outcome) -> Option<RejectCode> {
    o.as_ref().err().map(|r| r.code)
}

fn content(id: &str, channel: &str, version: u64, created: i64, expires: i64) -> BundleImport {
    BundleImport {
        id: id.into(),
        manifest_sha256: sha(&format!("manifest {id}")),
        bundle_type: BundleType::Content,
        channel: Some(channel.into()),
        version,
        created,
        expires,
        signers: vec!["k1".into()],
        trust_version: 1,
        payloads: vec![PayloadRecord {
            name: "tool".into(),
            kind: "artifact".into(),
            size: 10,
            sha256: sha(&format!("blob {id}")),
        }],
        new_trust_json: None,
        channel_resets: vec![],
        config: vec![(Scope::Global, format!("from.{id}"), "yes".into())],
        node_id: 1,
    }
}

fn import(b: BundleImport) -> Command {
    Command::ImportBundle(Box::new(b))
}

async fn open() -> anyhow::Result<(tempfile::TempDir, Store)> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("state.db"))?;
    store
        .apply(vec![Some(encode_batch(&init_batch()))], vec![0])
        .await?;
    Ok((dir, store))
}

#[tokio::test]
async fn bundle_floors_are_enforced_in_apply() -> anyhow::Result<()> {
    let (_dir, store) = open().await?;
    let trust = |v| Command::SetBundleTrust {
        version: v,
        trust_json: "{\"version\":1}".into(),
    };
    // Before any trust is pinned, nothing imports.
    assert_eq!(
        code(&apply(&store, 5, import(content("a1", "site", 1, 100, 1000))).await?),
        Some(RejectCode::Invalid)
    );
    assert!(apply(&store, 6, trust(1)).await?.is_ok());

    let mut stale_trust = content("b9", "site", 9, 100, 1000);
    stale_trust.trust_version = 2;
    let mut with_id_of_a1 = content("a1", "site", 7, 100, 1000);
    with_id_of_a1.manifest_sha256 = sha("another manifest");
    let mut no_channel = content("nc", "site", 8, 100, 1000);
    no_channel.channel = None;
    let mut huge = content("hg", "site", u64::MAX, 100, 1000);
    huge.manifest_sha256 = sha("huge");

    // Table: (what, command, expected) in order; each builds on the state the previous left.
    let cases: Vec<(&str, Command, Result<Response, RejectCode>)> = vec![
        ("trust twice", trust(1), Err(RejectCode::AlreadyExists)),
        (
            "first bundle",
            import(content("a1", "site", 3, 500, 1000)),
            Ok(Response::Done),
        ),
        (
            "same bundle again is a no-op",
            import(content("a1", "site", 3, 500, 1000)),
            Ok(Response::Unchanged),
        ),
        (
            "older version",
            import(content("a0", "site", 2, 100, 1000)),
            Err(RejectCode::Invalid),
        ),
        (
            "equal version, other manifest",
            import(content("a2", "site", 3, 100, 1000)),
            Err(RejectCode::Invalid),
        ),
        (
            "other channel has its own floor",
            import(content("o1", "other", 1, 100, 1000)),
            Ok(Response::Done),
        ),
        (
            "expired against the newest created (500)",
            import(content("a4", "site", 4, 100, 500)),
            Err(RejectCode::Invalid),
        ),
        (
            "verified under another trust version",
            import(stale_trust),
            Err(RejectCode::Invalid),
        ),
        (
            "id reused by another manifest",
            import(with_id_of_a1),
            Err(RejectCode::AlreadyExists),
        ),
        ("no channel", import(no_channel), Err(RejectCode::Invalid)),
        ("version past i64", import(huge), Err(RejectCode::Invalid)),
        (
            "newer version",
            import(content("a5", "site", 5, 600, 2000)),
            Ok(Response::Done),
        ),
    ];
    for (i, (what, command, want)) in cases.into_iter().enumerate() {
        let got = apply(&store, 10 + i as i64, command).await?;
        match (&got, &want) {
            (Ok(r), Ok(w)) => assert_eq!(r, w, "{what}"),
            (Err(rej), Err(c)) => assert_eq!(rej.code, *c, "{what}: {rej}"),
            _ => panic!("{what}: got {got:?}, want {want:?}"),
        }
    }

    let r = store.reader();
    let bundles = r.bundles()?;
    let ids: Vec<&str> = bundles.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["a1", "o1", "a5"]);
    assert_eq!(bundles[0].payloads[0].held_by, vec![1]);
    let channels = r.channels()?;
    assert_eq!(
        channels
            .iter()
            .map(|c| (c.name.as_str(), c.version))
            .collect::<Vec<_>>(),
        [("other", 1), ("site", 5)]
    );
    assert_eq!(r.bundle_time_floor()?, 600);
    // Configuration carried by accepted bundles applied with them, none of refused ones.
    let keys: Vec<String> = r
        .config_list(Some(&Scope::Global))?
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["from.a1", "from.a5", "from.o1"]);
    assert_eq!(r.wanted_blobs()?.len(), 3);

    // Trust rotation: next version only, and it resets a channel floor.
    let rotate = |v: u64, m: &str| {
        import(BundleImport {
            id: format!("t{v}{m}"),
            manifest_sha256: sha(&format!("trust {v} {m}")),
            bundle_type: BundleType::Trust,
            channel: None,
            version: v,
            created: 700,
            expires: 5000,
            signers: vec!["root".into()],
            trust_version: 1,
            payloads: vec![],
            new_trust_json: Some(format!("{{\"version\":{v}}}")),
            channel_resets: vec![("site".into(), 1)],
            config: vec![],
            node_id: 1,
        })
    };
    assert_eq!(
        code(&apply(&store, 40, rotate(3, "x")).await?),
        Some(RejectCode::Invalid)
    );
    assert!(apply(&store, 41, rotate(2, "y")).await?.is_ok());
    let trust = r.bundle_trust()?.expect("trust");
    assert_eq!(trust.version, 2);
    assert_eq!(
        r.channels()?
            .iter()
            .find(|c| c.name == "site")
            .map(|c| c.version),
        Some(1)
    );
    Ok(())
}

#[tokio::test]
async fn deployments_reach_the_groups_and_record_results() -> anyhow::Result<()> {
    let (_dir, store) = open().await?;
    let ok = |o: Outcome| assert!(o.is_ok(), "{o:?}");
    ok(apply(
        &store,
        3,
        Command::SetBundleTrust {
            version: 1,
            trust_json: "{}".into(),
        },
    )
    .await?);
    ok(apply(&store, 4, import(content("b1", "site", 1, 10, 10_000))).await?);
    ok(apply(&store, 5, import(content("b2", "site", 2, 10, 10_000))).await?);
    ok(apply(
        &store,
        6,
        Command::CreateToken {
            id: "ct".into(),
            kind: TokenKind::Client,
            secret_sha256: sha("s"),
            expires_at_ms: 100_000,
            uses: None,
            groups: vec!["lab".into()],
        },
    )
    .await?);
    for (i, id) in ["c1", "c2"].iter().enumerate() {
        ok(apply(
            &store,
            7 + i as i64,
            Command::EnrollClient {
                token_id: "ct".into(),
                secret_sha256: sha("s"),
                client_id: (*id).into(),
                hostname: format!("{id}.plant"),
                cert_serial: format!("serial{i}"),
            },
        )
        .await?);
    }
    let deploy = |id: &str, version: Option<u64>, group: &str| Command::CreateDeployment {
        id: id.into(),
        artifact: "tool".into(),
        version,
        group: group.into(),
    };
    let report = |d: &str, c: &str, status| Command::ReportDeployment {
        deployment_id: d.into(),
        client_id: c.into(),
        status,
        detail: "exit 0".into(),
    };
    let cases: Vec<(&str, Command, Option<RejectCode>)> = vec![
        ("pinned version", deploy("d1", Some(1), "lab"), None),
        (
            "same id",
            deploy("d1", None, "lab"),
            Some(RejectCode::AlreadyExists),
        ),
        (
            "unknown version",
            deploy("d9", Some(7), "lab"),
            Some(RejectCode::NotFound),
        ),
        (
            "unknown artifact",
            Command::CreateDeployment {
                id: "d8".into(),
                artifact: "nope".into(),
                version: None,
                group: "lab".into(),
            },
            Some(RejectCode::NotFound),
        ),
        ("other group", deploy("d2", None, "north"), None),
        ("result", report("d1", "c1", DeploymentStatus::Failed), None),
        (
            "retry",
            report("d1", "c1", DeploymentStatus::Installed),
            None,
        ),
        (
            "not in group",
            report("d2", "c1", DeploymentStatus::Installed),
            Some(RejectCode::Invalid),
        ),
        (
            "unknown client",
            report("d1", "zz", DeploymentStatus::Installed),
            Some(RejectCode::NotFound),
        ),
        (
            "unknown deployment",
            report("dx", "c1", DeploymentStatus::Installed),
            Some(RejectCode::NotFound),
        ),
        (
            "renew",
            Command::RenewClientCert {
                client_id: "c2".into(),
                cert_serial: "serial-new".into(),
            },
            None,
        ),
    ];
    for (i, (what, command, want)) in cases.into_iter().enumerate() {
        let got = apply(&store, 20 + i as i64, command).await?;
        assert_eq!(code(&got), want, "{what}: {got:?}");
    }
    let r = store.reader();
    let a = r.assignments("c1", 0)?;
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].deployment.id.as_str(), a[0].deployment.version),
        ("d1", 1)
    );
    let result = a[0].result.as_ref().expect("result");
    assert_eq!(
        (result.status, result.attempts),
        (DeploymentStatus::Installed, 2)
    );

    // A later deployment of the same artifact to all clients replaces the earlier one.
    ok(apply(&store, 40, deploy("d3", None, "all")).await?);
    let a = r.assignments("c2", 0)?;
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].deployment.id.as_str(), a[0].deployment.version),
        ("d3", 2)
    );
    assert!(a[0].result.is_none());
    assert_eq!(r.deployment_results("d1")?.len(), 1);
    assert_eq!(r.deployments()?.len(), 3);
    assert_eq!(
        r.client("c2")?.map(|c| c.cert_serial),
        Some("serial-new".to_string())
    );

    // A revoked client is asked for nothing.
    ok(apply(
        &store,
        41,
        Command::RevokeClient {
            client_id: "c1".into(),
        },
    )
    .await?);
    let all_only = r.assignments("c1", 0)?;
    assert_eq!(all_only.len(), 1, "the `all` deployment still lists");
    Ok(())
}

#[tokio::test]
async fn a_roll_starts_only_for_a_release_payload_and_ends_once() -> anyhow::Result<()> {
    let (_dir, store) = open().await?;
    let trust = Command::SetBundleTrust {
        version: 1,
        trust_json: "{\"version\":1}".into(),
    };
    assert!(apply(&store, 6, trust).await?.is_ok());
    let mut b = content("r1", "outpost", 1, 100, 1000);
    let release = sha("release r1");
    b.payloads.push(PayloadRecord {
        name: "outpost".into(),
        kind: "outpost-release".into(),
        size: 99,
        sha256: release.clone(),
    });
    assert!(apply(&store, 7, import(b)).await?.is_ok());
    let start = |sha256: &str| Command::StartRoll {
        bundle_id: "r1".into(),
        sha256: sha256.into(),
    };
    // The artifact of the same bundle is no release; a node cannot report a bad digest.
    let artifact = sha("blob r1");
    assert_eq!(
        code(&apply(&store, 8, start(&artifact)).await?),
        Some(RejectCode::NotFound)
    );
    assert_eq!(
        code(&apply(&store, 8, start(&release.to_uppercase())).await?),
        Some(RejectCode::Invalid)
    );
    assert_eq!(
        code(&apply(&store, 8, Command::RollNode { node: Some(1) }).await?),
        Some(RejectCode::NotFound),
        "no roll runs yet"
    );
    assert_eq!(apply(&store, 9, start(&release)).await?, Ok(Response::Done));
    assert_eq!(
        apply(&store, 9, start(&release)).await?,
        Ok(Response::Unchanged)
    );
    assert!(
        apply(&store, 10, Command::RollNode { node: Some(1) })
            .await?
            .is_ok()
    );
    let roll = store.reader().roll()?.expect("a roll");
    assert_eq!(
        (roll.state.as_str(), roll.node, roll.size),
        ("running", Some(1), 99)
    );
    let report = Command::ReportBinary {
        node_id: 1,
        version: "0.2.0".into(),
        sha256: release.clone(),
    };
    assert!(apply(&store, 11, report).await?.is_ok());
    let node = store.reader().node(1)?.expect("node 1");
    assert_eq!(
        (node.version.as_str(), node.binary_sha256.as_str()),
        ("0.2.0", release.as_str())
    );
    let stop = Command::EndRoll {
        reason: Some("node 2: release does not start".into()),
    };
    assert!(apply(&store, 12, stop.clone()).await?.is_ok());
    assert_eq!(
        code(&apply(&store, 13, stop).await?),
        Some(RejectCode::NotFound)
    );
    let roll = store.reader().roll()?.expect("a roll");
    assert_eq!(roll.state, "stopped");
    assert!(roll.reason.contains("does not start"), "{roll:?}");
    // A stopped roll leaves room for the next one.
    assert_eq!(
        apply(&store, 14, start(&release)).await?,
        Ok(Response::Done)
    );
    assert!(
        apply(&store, 15, Command::EndRoll { reason: None })
            .await?
            .is_ok()
    );
    assert_eq!(store.reader().roll()?.map(|r| r.state), Some("done".into()));
    Ok(())
}

#[tokio::test]
async fn a_release_is_deployed_by_its_own_command() -> anyhow::Result<()> {
    let (_dir, store) = open().await?;
    let ok = |o: Outcome| assert!(o.is_ok(), "{o:?}");
    ok(apply(
        &store,
        3,
        Command::SetBundleTrust {
            version: 1,
            trust_json: "{}".into(),
        },
    )
    .await?);
    let mut b = content("b1", "site", 1, 10, 10_000);
    b.payloads.push(PayloadRecord {
        name: "outpost".into(),
        kind: "outpost-release".into(),
        size: 20,
        sha256: sha("release 1"),
    });
    ok(apply(&store, 4, import(b)).await?);
    let r = store.reader();
    assert_eq!(
        r.deployable_kind("tool", None)?.as_deref(),
        Some("artifact")
    );
    assert_eq!(
        r.deployable_kind("outpost", Some(1))?.as_deref(),
        Some("outpost-release")
    );
    assert_eq!(r.deployable_kind("outpost", Some(2))?, None);
    assert_eq!(r.deployable_kind("outpost", Some(u64::MAX))?, None);
    assert_eq!(r.deployable_kind("nope", None)?, None);
    let release = |id: &str, name: &str| Command::CreateReleaseDeployment {
        id: id.into(),
        release: name.into(),
        version: None,
        group: "all".into(),
    };
    let cases: Vec<(&str, Command, Option<RejectCode>)> = vec![
        ("release", release("d1", "outpost"), None),
        (
            "an artifact is not a release",
            release("d2", "tool"),
            Some(RejectCode::NotFound),
        ),
        (
            "a release is not an artifact",
            Command::CreateDeployment {
                id: "d3".into(),
                artifact: "outpost".into(),
                version: None,
                group: "all".into(),
            },
            Some(RejectCode::NotFound),
        ),
    ];
    for (i, (what, command, want)) in cases.into_iter().enumerate() {
        let got = apply(&store, 10 + i as i64, command).await?;
        assert_eq!(code(&got), want, "{what}: {got:?}");
    }
    let d = r.deployment("d1")?.expect("deployment d1");
    assert_eq!(
        (d.kind.as_str(), d.sha256, d.size, d.version),
        ("outpost-release", sha("release 1"), 20, 1)
    );
    Ok(())
}
