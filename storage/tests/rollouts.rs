//! Rollouts through the store: labels, selectors and the preview, the brake that halts a
//! rollout and what clients are then asked, resume, abort with removal, four eyes, windows
//! and the start time, and plain deployments left as they were.

mod common;

use common::{apply_as, dump, init_batch, sha};
use outpost_storage::rollout::phase_of;
use outpost_storage::{
    BundleImport, BundleType, Command, DeploymentStatus, FailureLimit, Outcome, PayloadRecord,
    RejectCode, Response, RolloutSpec, RolloutState, RolloutStep, Scope, Selector, Store,
    TokenKind, encode_batch,
};

const DAY: i64 = 86_400_000;
/// Monday 2026-12-07 00:00 UTC.
const MONDAY: i64 = 1_796_601_600_000;

async fn apply(store: &Store, at_ms: i64, command: Command) -> anyhow::Result<Outcome> {
    apply_as(store, at_ms, "admin:alice", command).await
}

async fn ok(store: &Store, at_ms: i64, command: Command) -> anyhow::Result<Response> {
    let what = command.kind();
    apply(store, at_ms, command)
        .await?
        .map_err(|r| anyhow::anyhow!("{what}: {r}"))
}

fn refused(o: &Outcome) -> Option<(RejectCode, String)> {
    o.as_ref().err().map(|r| (r.code, r.message.clone()))
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A cluster with the artifact `tool` imported and 20 clients `c00`..`c19` in group `lab`,
/// enrolled at `MONDAY`.
async fn site() -> anyhow::Result<(tempfile::TempDir, Store, Vec<String>)> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("state.db"))?;
    store
        .apply(vec![Some(encode_batch(&init_batch()))], vec![0])
        .await?;
    let t = MONDAY;
    ok(
        &store,
        t,
        Command::SetBundleTrust {
            version: 1,
            trust_json: "{\"version\":1}".into(),
        },
    )
    .await?;
    let bundle = BundleImport {
        id: "b1".into(),
        manifest_sha256: sha("manifest b1"),
        bundle_type: BundleType::Content,
        channel: Some("site".into()),
        version: 1,
        created: 100,
        expires: i64::MAX / 2000,
        signers: vec!["k1".into()],
        trust_version: 1,
        payloads: vec![
            PayloadRecord {
                name: "tool".into(),
                kind: "artifact".into(),
                size: 10,
                sha256: sha("blob tool"),
            },
            PayloadRecord {
                name: "outpost".into(),
                kind: "outpost-release".into(),
                size: 10,
                sha256: sha("blob outpost"),
            },
        ],
        new_trust_json: None,
        channel_resets: vec![],
        config: vec![],
        node_id: 1,
    };
    ok(&store, t, Command::ImportBundle(Box::new(bundle))).await?;
    ok(
        &store,
        t,
        Command::CreateToken {
            id: "ct".into(),
            kind: TokenKind::Client,
            secret_sha256: sha("s"),
            expires_at_ms: t + DAY,
            uses: None,
            groups: vec!["lab".into()],
        },
    )
    .await?;
    let mut clients = Vec::new();
    for i in 0..20 {
        let id = format!("c{i:02}");
        ok(
            &store,
            t,
            Command::EnrollClient {
                token_id: "ct".into(),
                secret_sha256: sha("s"),
                client_id: id.clone(),
                hostname: format!("{id}.plant"),
                cert_serial: format!("serial{i}"),
            },
        )
        .await?;
        clients.push(id);
    }
    Ok((dir, store, clients))
}

fn label(clients: &[&str], add: &[&str], remove: &[&str]) -> Command {
    Command::LabelClients {
        clients: ids(clients),
        add: ids(add),
        remove: ids(remove),
    }
}

fn spec(id: &str, selector: Selector, phases: &[u8], limit: FailureLimit) -> RolloutSpec {
    RolloutSpec {
        id: id.into(),
        kind: "artifact".into(),
        name: "tool".into(),
        version: None,
        selector,
        phases: phases.to_vec(),
        soak_ms: 0,
        max_failures: limit,
        windows: vec![],
        start_at_ms: None,
    }
}

fn group(g: &str) -> Selector {
    Selector {
        groups: vec![g.into()],
        ..Selector::default()
    }
}

fn report(d: &str, c: &str, status: DeploymentStatus) -> Command {
    Command::ReportDeployment {
        deployment_id: d.into(),
        client_id: c.into(),
        status,
        detail: format!("{c}: handler exited"),
    }
}

fn step(id: &str, step: RolloutStep) -> Command {
    Command::RolloutStep {
        id: id.into(),
        step,
        reason: "operator".into(),
    }
}

#[tokio::test]
async fn labels_select_and_the_plan_previews() -> anyhow::Result<()> {
    let (_dir, store, _) = site().await?;
    let t = MONDAY + 1000;
    ok(&store, t, label(&["c01", "c02", "c03"], &["line2"], &[])).await?;
    ok(&store, t, label(&["c03"], &["quarantine"], &[])).await?;
    // Refusals name what is wrong.
    let cases: Vec<(Command, RejectCode, &str)> = vec![
        (
            label(&["c01", "zz"], &["x"], &[]),
            RejectCode::NotFound,
            "client zz does not exist",
        ),
        (
            label(&["c01"], &["x"], &["x"]),
            RejectCode::Invalid,
            "label x is both added and removed",
        ),
        (label(&["c01"], &[], &[]), RejectCode::Invalid, "0 labels"),
        (
            label(&[&"x".repeat(100)], &["l"], &[]),
            RejectCode::Invalid,
            "client id is 100 bytes, at most 64 allowed",
        ),
        (label(&[], &["x"], &[]), RejectCode::Invalid, "0 clients"),
        (
            label(&["c01"], &["bad\u{7}"], &[]),
            RejectCode::Invalid,
            "control character",
        ),
    ];
    for (command, code, text) in cases {
        let got = refused(&apply(&store, t, command).await?);
        assert!(
            got.as_ref()
                .is_some_and(|(c, m)| *c == code && m.contains(text)),
            "{text}: {got:?}"
        );
    }
    let r = store.reader();
    // A refused command changed nothing: c01 has no label x.
    let c03 = r.client("c03")?.map(|c| c.labels);
    assert_eq!(c03, Some(ids(&["line2", "quarantine"])));
    assert_eq!(r.client("c01")?.map(|c| c.labels), Some(ids(&["line2"])));
    assert!(r.clients()?.iter().filter(|c| c.labels.is_empty()).count() == 17);

    let line2 = Selector {
        labels: ids(&["line2"]),
        exclude_labels: ids(&["quarantine"]),
        ..Selector::default()
    };
    let plan = r.plan(&line2, &[100], "d-1", t)?;
    assert_eq!(plan.count, 2);
    assert_eq!(plan.phases.len(), 1);
    assert_eq!(plan.phases[0].clients, ids(&["c01", "c02"]));
    assert!(plan.unseen.is_empty());

    // A fact of a third client brings it in (labels OR facts would not: kinds AND; so select
    // by the fact alone, and by either of two labels).
    ok(
        &store,
        t,
        Command::ReportInventory {
            client_id: "c04".into(),
            facts_json: r#"{"os":{"version_id":"12"}}"#.into(),
        },
    )
    .await?;
    let by_fact = Selector {
        facts: vec![("os.version_id".into(), "12".into())],
        ..Selector::default()
    };
    assert_eq!(
        r.plan(&by_fact, &[100], "d-1", t)?.phases[0].clients,
        ids(&["c04"])
    );
    let both = Selector {
        labels: ids(&["line2"]),
        facts: vec![("os.version_id".into(), "12".into())],
        ..Selector::default()
    };
    assert_eq!(r.plan(&both, &[100], "d-1", t)?.count, 0);

    // Two days later nobody was seen but c02: the rest of the plan is listed apart.
    let later = t + 2 * DAY;
    ok(
        &store,
        later,
        Command::TouchClients {
            node_id: 1,
            seen: vec![("c02".into(), later)],
        },
    )
    .await?;
    let plan = r.plan(&line2, &[10, 100], "d-1", later)?;
    assert_eq!(plan.count, 2);
    assert_eq!(plan.unseen, ids(&["c01"]));
    let listed: Vec<String> = plan.phases.iter().flat_map(|p| p.clients.clone()).collect();
    assert_eq!(listed, ids(&["c02"]));

    // Phases split the same way for the same id, whoever else is targeted.
    let all = r.plan(&group("all"), &[10, 50, 100], "d-9", t)?;
    assert_eq!(all.count, 20);
    for (k, p) in all.phases.iter().enumerate() {
        for c in &p.clients {
            assert_eq!(phase_of("d-9", c, &[10, 50, 100]), k);
        }
    }
    // Removing a label takes the client out.
    ok(&store, t, label(&["c01"], &[], &["line2"])).await?;
    assert_eq!(r.plan(&line2, &[100], "d-1", t)?.count, 1);
    Ok(())
}

/// A deployment id whose first phase (of `phases`) holds at least `n` of `clients`.
fn id_with_first_phase(clients: &[String], phases: &[u8], n: usize) -> (String, Vec<String>) {
    for i in 0..1000 {
        let id = format!("d-{i}");
        let first: Vec<String> = clients
            .iter()
            .filter(|c| phase_of(&id, c, phases) == 0)
            .cloned()
            .collect();
        if first.len() >= n && first.len() < clients.len() {
            return (id, first);
        }
    }
    panic!("no id with {n} clients in the first phase among 1000");
}

#[tokio::test]
async fn the_brake_halts_resume_moves_on_and_abort_uninstalls() -> anyhow::Result<()> {
    let (dir, store, clients) = site().await?;
    let phases = [10u8, 50, 100];
    let (id, first) = id_with_first_phase(&clients, &phases, 3);
    let later: Vec<&String> = clients
        .iter()
        .filter(|c| phase_of(&id, c, &phases) > 0)
        .collect();
    let t = MONDAY + 1000;
    let r = store.reader();
    let mut s = spec(&id, group("lab"), &phases, FailureLimit::Count(1));
    s.soak_ms = 60_000;
    ok(&store, t, Command::CreateRollout(Box::new(s))).await?;
    let rollout = r.rollout(&id)?.ok_or_else(|| anyhow::anyhow!("no row"))?;
    assert_eq!((rollout.state, rollout.phase), (RolloutState::Running, 0));
    assert_eq!(rollout.allowed_failures, 1);
    // Only the first phase is asked to install.
    assert_eq!(r.assignments(&first[0], t)?.len(), 1);
    assert!(r.assignments(later[0], t)?.is_empty());
    assert_eq!(r.rollout_next_step(&id, t + 59_999)?, None);

    // One failure is within the brake; the second halts it, naming both.
    let one = ok(
        &store,
        t + 1,
        report(&id, &first[0], DeploymentStatus::Failed),
    )
    .await?;
    assert_eq!(one, Response::Done);
    let two = ok(
        &store,
        t + 2,
        report(&id, &first[1], DeploymentStatus::Failed),
    )
    .await?;
    let mut failed = [first[0].clone(), first[1].clone()];
    failed.sort();
    let reason = format!("2 failures > 1 allowed: {}", failed.join(", "));
    assert_eq!(
        two,
        Response::Halted {
            reason: reason.clone()
        }
    );
    let halted = r.rollout(&id)?.ok_or_else(|| anyhow::anyhow!("no row"))?;
    assert_eq!(
        (halted.state, halted.reason.as_str()),
        (RolloutState::Halted, reason.as_str())
    );
    let audit = r.audit(0, 10_000)?;
    let last = audit.last().ok_or_else(|| anyhow::anyhow!("no audit"))?;
    assert!(last.detail.contains(&reason), "{}", last.detail);
    // After the halt nobody is asked, not even the rest of the first phase, and the leader
    // opens nothing however long it soaks.
    for c in &clients {
        assert!(r.assignments(c, t + 10 * DAY)?.is_empty(), "{c}");
    }
    assert_eq!(r.rollout_next_step(&id, t + 10 * DAY)?, None);
    assert!(r.rollouts_active()?.is_empty());
    let open = refused(&apply(&store, t + 3, step(&id, RolloutStep::OpenPhase(1))).await?);
    assert_eq!(
        open,
        Some((
            RejectCode::Invalid,
            format!("deployment {id} is halted: cannot open phase 2")
        ))
    );
    let status = r
        .rollout_status(&id, t + 3)?
        .ok_or_else(|| anyhow::anyhow!("no status"))?;
    assert_eq!(status.progress.failures, 2);
    assert_eq!(status.phases[0].failed, 2);
    assert_eq!(status.phases[0].waiting, first.len() as u64 - 2);
    assert_eq!(status.clients.len(), 20);
    let shown = status.clients.iter().find(|c| c.id == first[0]);
    assert_eq!(
        shown.map(|c| (c.phase, c.status.as_str(), c.detail.clone())),
        Some((1, "failed", format!("{}: handler exited", first[0])))
    );

    // Resume: the seen failures no longer count; the phase soaks again from the resume.
    ok(&store, t + 10, step(&id, RolloutStep::Resume)).await?;
    let resumed = r.rollout(&id)?.ok_or_else(|| anyhow::anyhow!("no row"))?;
    assert_eq!(
        (
            resumed.state,
            resumed.failure_base,
            resumed.phase_opened_at_ms
        ),
        (RolloutState::Running, 2, t + 10)
    );
    assert_eq!(r.assignments(&first[2], t + 10)?.len(), 1);
    // Soaked or not, the next phase waits until every client of phase 1 has a result.
    assert_eq!(r.rollout_next_step(&id, t + 60_010)?, None);
    for (i, c) in first[2..].iter().enumerate() {
        let at = t + 20 + i as i64;
        ok(&store, at, report(&id, c, DeploymentStatus::Installed)).await?;
    }
    assert_eq!(r.rollout_next_step(&id, t + 60_009)?, None);
    let next = r.rollout_next_step(&id, t + 60_010)?;
    assert_eq!(next.as_ref().map(|n| n.0), Some(RolloutStep::OpenPhase(1)));
    let (open, why) = next.ok_or_else(|| anyhow::anyhow!("no step"))?;
    let cmd = Command::RolloutStep {
        id: id.clone(),
        step: open,
        reason: why,
    };
    ok(&store, t + 60_010, cmd).await?;
    let second: Vec<&String> = later
        .iter()
        .copied()
        .filter(|c| phase_of(&id, c, &phases) == 1)
        .collect();
    let third: Vec<&String> = later
        .iter()
        .copied()
        .filter(|c| phase_of(&id, c, &phases) == 2)
        .collect();
    if let Some(c) = second.first() {
        assert_eq!(r.assignments(c, t + 60_010)?.len(), 1);
    }
    if let Some(c) = third.first() {
        assert!(r.assignments(c, t + 60_010)?.is_empty());
    }

    // Abort --uninstall: clients that installed it must remove it, and say how it went.
    ok(
        &store,
        t + 60_020,
        report(&id, &first[2], DeploymentStatus::Installed),
    )
    .await?;
    let removal = |c: &str, ok| Command::ReportRemoval {
        deployment_id: id.clone(),
        client_id: c.into(),
        ok,
        detail: "removed".into(),
    };
    let early = refused(&apply(&store, t + 60_021, removal(&first[2], true)).await?);
    assert!(early.is_some_and(|(_, m)| m.contains("was not aborted with --uninstall")));
    ok(
        &store,
        t + 60_030,
        step(&id, RolloutStep::Abort { uninstall: true }),
    )
    .await?;
    assert!(r.assignments(&first[2], t + 60_030)?.is_empty());
    let to_remove = r.removals(&first[2])?;
    assert_eq!(
        to_remove.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        [id.as_str()]
    );
    assert!(
        r.removals(&first[0])?.is_empty(),
        "it failed there: nothing to remove"
    );
    let not_installed = refused(&apply(&store, t + 60_031, removal(&first[0], true)).await?);
    assert!(not_installed.is_some_and(|(_, m)| m.contains("has not installed")));
    // A failed removal stays listed (the agent bounds its retries); a success ends it.
    ok(&store, t + 60_031, removal(&first[2], false)).await?;
    assert_eq!(
        r.removals(&first[2])?.len(),
        1,
        "remove-failed is tried again"
    );
    ok(&store, t + 60_032, removal(&first[2], true)).await?;
    assert!(r.removals(&first[2])?.is_empty());
    let status = r
        .rollout_status(&id, t + 60_040)?
        .ok_or_else(|| anyhow::anyhow!("no status"))?;
    assert_eq!(status.rollout.state, RolloutState::Aborted);
    assert_eq!(status.phases[0].removed, 1);
    let again = refused(
        &apply(
            &store,
            t + 60_050,
            step(&id, RolloutStep::Abort { uninstall: false }),
        )
        .await?,
    );
    assert_eq!(
        again,
        Some((
            RejectCode::Invalid,
            format!("deployment {id} is aborted: cannot abort")
        ))
    );

    // Labels, rollouts and removals travel in a snapshot.
    ok(&store, t + 60_060, label(&[&first[0]], &["line2"], &[])).await?;
    let snap = dir.path().join("x.snap");
    store.export_snapshot(&snap).await?;
    let other = Store::open(&dir.path().join("b.db"))?;
    other.import_snapshot(&snap).await?;
    let before = dump(&dir.path().join("state.db"))?;
    assert_eq!(before, dump(&dir.path().join("b.db"))?);
    for table in ["client_labels|", "rollouts|", "deployment_removals|"] {
        assert!(before.iter().any(|row| row.starts_with(table)), "{table}");
    }
    assert_eq!(
        other.reader().rollout_status(&id, t + 60_070)?,
        r.rollout_status(&id, t + 60_070)?
    );
    Ok(())
}

#[tokio::test]
async fn a_percent_brake_counts_the_reached_clients_and_the_last_phase_finishes()
-> anyhow::Result<()> {
    let (_dir, store, clients) = site().await?;
    let t = MONDAY + 1000;
    let r = store.reader();
    // 10 % of 20 reached clients: 2 failures allowed, the third halts.
    let s = spec("p-1", group("all"), &[100], FailureLimit::Percent(10));
    ok(&store, t, Command::CreateRollout(Box::new(s))).await?;
    assert_eq!(r.rollout("p-1")?.map(|x| x.allowed_failures), Some(2));
    for (i, c) in clients.iter().take(2).enumerate() {
        let got = ok(
            &store,
            t + i as i64,
            report("p-1", c, DeploymentStatus::Failed),
        )
        .await?;
        assert_eq!(got, Response::Done);
    }
    let third = ok(
        &store,
        t + 5,
        report("p-1", &clients[2], DeploymentStatus::Failed),
    )
    .await?;
    assert!(matches!(third, Response::Halted { .. }));
    ok(&store, t + 6, step("p-1", RolloutStep::Resume)).await?;
    for c in &clients {
        ok(&store, t + 7, report("p-1", c, DeploymentStatus::Installed)).await?;
    }
    let next = r.rollout_next_step("p-1", t + 8)?.map(|n| n.0);
    assert_eq!(next, Some(RolloutStep::Finish));
    ok(&store, t + 8, step("p-1", RolloutStep::Finish)).await?;
    assert_eq!(r.rollout("p-1")?.map(|x| x.state), Some(RolloutState::Done));
    // Done is not closed: a client that joins the target later still gets it.
    ok(
        &store,
        t + 9,
        Command::EnrollClient {
            token_id: "ct".into(),
            secret_sha256: sha("s"),
            client_id: "late".into(),
            hostname: "late.plant".into(),
            cert_serial: "serial-late".into(),
        },
    )
    .await?;
    assert_eq!(r.assignments("late", t + 9)?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn four_eyes_for_large_rollouts() -> anyhow::Result<()> {
    let (_dir, store, _) = site().await?;
    let t = MONDAY + 1000;
    let r = store.reader();
    let policy = |v: &str| Command::SetConfig {
        scope: Scope::Global,
        key: "deploy.approval_above".into(),
        value: v.into(),
    };
    ok(&store, t, policy("5")).await?;
    let s = spec("big", group("all"), &[100], FailureLimit::Count(0));
    ok(&store, t, Command::CreateRollout(Box::new(s))).await?;
    assert_eq!(
        r.rollout("big")?.map(|x| x.state),
        Some(RolloutState::WaitingApproval)
    );
    assert!(r.assignments("c00", t)?.is_empty());
    assert!(r.rollouts_active()?.is_empty());
    // The creator, as a console user of the same name, may not approve.
    let own = apply_as(
        &store,
        t + 1,
        "console:alice",
        step("big", RolloutStep::Approve),
    )
    .await?;
    assert_eq!(
        refused(&own),
        Some((
            RejectCode::Invalid,
            "the creator cannot approve their own deployment".to_owned()
        ))
    );
    apply_as(
        &store,
        t + 2,
        "admin:bob",
        step("big", RolloutStep::Approve),
    )
    .await?
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let approved = r.rollout("big")?.ok_or_else(|| anyhow::anyhow!("no row"))?;
    assert_eq!(
        (approved.state, approved.approved_by.as_deref()),
        (RolloutState::Running, Some("admin:bob"))
    );
    assert_eq!(r.assignments("c00", t + 2)?.len(), 1);

    // Few clients by label: no approval needed.
    ok(&store, t, label(&["c01", "c02"], &["line2"], &[])).await?;
    let few = Selector {
        labels: ids(&["line2"]),
        ..Selector::default()
    };
    let s = spec("small", few.clone(), &[100], FailureLimit::Count(0));
    ok(&store, t + 3, Command::CreateRollout(Box::new(s))).await?;
    assert_eq!(
        r.rollout("small")?.map(|x| x.state),
        Some(RolloutState::Running)
    );
    // A policy value that is not a count asks for approval always.
    ok(&store, t + 4, policy("five")).await?;
    let s = spec("typo", few, &[100], FailureLimit::Count(0));
    ok(&store, t + 4, Command::CreateRollout(Box::new(s))).await?;
    assert_eq!(
        r.rollout("typo")?.map(|x| x.state),
        Some(RolloutState::WaitingApproval)
    );
    Ok(())
}

#[tokio::test]
async fn windows_and_the_start_time_gate_installs() -> anyhow::Result<()> {
    let (_dir, store, _) = site().await?;
    let r = store.reader();
    let t = MONDAY + 1000;
    let hour = 3_600_000;
    let mut s = spec("w-1", group("lab"), &[100], FailureLimit::Count(0));
    s.windows = vec!["Mon-Fri 22:00-05:00".into()];
    s.start_at_ms = Some(MONDAY + 20 * hour);
    ok(&store, t, Command::CreateRollout(Box::new(s))).await?;
    assert_eq!(
        r.rollout("w-1")?.map(|x| x.state),
        Some(RolloutState::Scheduled)
    );
    assert_eq!(r.rollouts_active()?, ids(&["w-1"]));
    assert_eq!(r.rollout_next_step("w-1", MONDAY + 20 * hour - 1)?, None);
    let start = r.rollout_next_step("w-1", MONDAY + 20 * hour)?.map(|n| n.0);
    assert_eq!(start, Some(RolloutStep::Start));
    ok(&store, MONDAY + 20 * hour, step("w-1", RolloutStep::Start)).await?;
    // Monday 21:00: outside the window; 23:00: inside.
    assert!(r.assignments("c00", MONDAY + 21 * hour)?.is_empty());
    assert_eq!(r.assignments("c00", MONDAY + 23 * hour)?.len(), 1);
    let outside = r
        .rollout_status("w-1", MONDAY + 21 * hour)?
        .ok_or_else(|| anyhow::anyhow!("no status"))?;
    assert!(!outside.window_open);
    assert_eq!(outside.phases[0].outside_window, 20);
    let inside = r
        .rollout_status("w-1", MONDAY + 23 * hour)?
        .ok_or_else(|| anyhow::anyhow!("no status"))?;
    assert_eq!(inside.phases[0].pending, 20);
    // In the site's time zone (Berlin, UTC+1 in December) 23:00 UTC is already Tuesday
    // 00:00, still inside; 21:30 UTC is 22:30 there, inside too.
    ok(
        &store,
        t,
        Command::SetConfig {
            scope: Scope::Global,
            key: "site.timezone".into(),
            value: "Europe/Berlin".into(),
        },
    )
    .await?;
    assert_eq!(
        r.assignments("c00", MONDAY + 21 * hour + hour / 2)?.len(),
        1
    );
    assert!(
        r.assignments("c00", MONDAY + 20 * hour + hour / 2)?
            .is_empty()
    );

    // Refused specs name what is wrong.
    let mut bad = spec("w-2", group("lab"), &[50, 25, 100], FailureLimit::Count(0));
    let got = refused(&apply(&store, t, Command::CreateRollout(Box::new(bad.clone()))).await?);
    assert!(got.is_some_and(|(_, m)| m.contains("phase 2 (25%) must be above phase 1 (50%)")));
    bad.phases = vec![100];
    bad.windows = vec!["Someday 10:00-11:00".into()];
    let got = refused(&apply(&store, t, Command::CreateRollout(Box::new(bad.clone()))).await?);
    assert!(got.is_some_and(|(_, m)| m.contains("\"Someday\" is not a day")));
    bad.windows = vec![];
    bad.selector = Selector {
        exclude_clients: ids(&["c00"]),
        ..Selector::default()
    };
    let got = refused(&apply(&store, t, Command::CreateRollout(Box::new(bad))).await?);
    assert_eq!(
        got,
        Some((
            RejectCode::Invalid,
            "name a target: --group, --label, --where or --client".to_owned()
        ))
    );
    assert!(r.deployment("w-2")?.is_none());
    Ok(())
}

#[tokio::test]
async fn plain_deployments_keep_their_behaviour() -> anyhow::Result<()> {
    let (_dir, store, clients) = site().await?;
    let r = store.reader();
    let t = MONDAY + 1000;
    ok(
        &store,
        t,
        Command::CreateDeployment {
            id: "plain".into(),
            artifact: "tool".into(),
            version: None,
            group: "lab".into(),
        },
    )
    .await?;
    // Every failure is recorded and nothing halts: no row, no brake.
    for c in &clients {
        let got = ok(&store, t, report("plain", c, DeploymentStatus::Failed)).await?;
        assert_eq!(got, Response::Done);
    }
    let plain = r
        .rollout("plain")?
        .ok_or_else(|| anyhow::anyhow!("no reading"))?;
    assert_eq!(
        (
            plain.state,
            plain.phases.clone(),
            plain.selector.groups.clone()
        ),
        (RolloutState::Running, vec![100], ids(&["lab"]))
    );
    assert!(
        r.rollouts_active()?.is_empty(),
        "the leader drives no plain deployment"
    );
    assert_eq!(r.assignments("c00", t)?.len(), 1);
    // A client outside the group may not report; the message is the old one.
    ok(
        &store,
        t,
        Command::CreateToken {
            id: "north".into(),
            kind: TokenKind::Client,
            secret_sha256: sha("n"),
            expires_at_ms: t + DAY,
            uses: None,
            groups: vec!["north".into()],
        },
    )
    .await?;
    ok(
        &store,
        t,
        Command::EnrollClient {
            token_id: "north".into(),
            secret_sha256: sha("n"),
            client_id: "n1".into(),
            hostname: "n1".into(),
            cert_serial: "sn1".into(),
        },
    )
    .await?;
    let outside = refused(
        &apply(
            &store,
            t,
            report("plain", "n1", DeploymentStatus::Installed),
        )
        .await?,
    );
    assert_eq!(
        outside,
        Some((
            RejectCode::Invalid,
            "deployment plain targets group lab, which client n1 is not in".to_owned()
        ))
    );
    // Pausing it writes its default row; resuming gives it back.
    ok(&store, t + 1, step("plain", RolloutStep::Pause)).await?;
    assert_eq!(
        r.rollout("plain")?.map(|x| x.state),
        Some(RolloutState::Paused)
    );
    assert!(r.assignments("c00", t + 1)?.is_empty());
    ok(&store, t + 2, step("plain", RolloutStep::Resume)).await?;
    assert_eq!(r.assignments("c00", t + 2)?.len(), 1);
    // A release cannot be uninstalled.
    ok(
        &store,
        t,
        Command::CreateReleaseDeployment {
            id: "rel".into(),
            release: "outpost".into(),
            version: None,
            group: "lab".into(),
        },
    )
    .await?;
    let got = refused(
        &apply(
            &store,
            t + 3,
            step("rel", RolloutStep::Abort { uninstall: true }),
        )
        .await?,
    );
    assert!(
        got.is_some_and(
            |(_, m)| m == "a release cannot be uninstalled: deploy the previous release"
        )
    );
    Ok(())
}

#[tokio::test]
async fn release_rollouts_use_the_same_phases_and_brake() -> anyhow::Result<()> {
    let (_dir, store, clients) = site().await?;
    let phases = [50u8, 100];
    let (id, first) = id_with_first_phase(&clients, &phases, 1);
    let later: Vec<&String> = clients
        .iter()
        .filter(|c| phase_of(&id, c, &phases) > 0)
        .collect();
    let t = MONDAY + 1000;
    let r = store.reader();
    let mut s = spec(&id, group("lab"), &phases, FailureLimit::Count(0));
    s.kind = "outpost-release".into();
    s.name = "outpost".into();
    ok(&store, t, Command::CreateRollout(Box::new(s))).await?;
    let d = r
        .deployment(&id)?
        .ok_or_else(|| anyhow::anyhow!("no deployment"))?;
    assert_eq!(d.kind, "outpost-release");
    // Phase 1 alone is asked to replace its agent.
    assert_eq!(r.assignments(&first[0], t)?.len(), 1);
    assert!(r.assignments(later[0], t)?.is_empty());
    // One failed self-upgrade is over a brake of 0: halted, nothing more handed out.
    let halted = ok(
        &store,
        t + 1,
        report(&id, &first[0], DeploymentStatus::Failed),
    )
    .await?;
    assert!(
        matches!(&halted, Response::Halted { reason } if reason.contains(first[0].as_str())),
        "{halted:?}"
    );
    assert!(
        first
            .iter()
            .all(|c| r.assignments(c, t + 2).is_ok_and(|a| a.is_empty()))
    );
    assert_eq!(r.rollout_next_step(&id, t + 60_000)?, None);
    // The way back for a release is another release: abort without --uninstall only.
    let got = refused(
        &apply(
            &store,
            t + 3,
            step(&id, RolloutStep::Abort { uninstall: true }),
        )
        .await?,
    );
    assert!(got.is_some_and(|(_, m)| m.contains("a release cannot be uninstalled")));
    ok(
        &store,
        t + 4,
        step(&id, RolloutStep::Abort { uninstall: false }),
    )
    .await?;
    assert_eq!(
        r.rollout(&id)?.map(|x| x.state),
        Some(RolloutState::Aborted)
    );
    Ok(())
}
