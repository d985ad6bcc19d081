//! `outpost deployment create | plan | list | status | approve | pause | resume | abort`:
//! artifacts from imported bundles rolled out to the clients a selector names, through the
//! API. The printing is pure (`plan_lines`, `status_lines`) and tested beside it.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use hyper::Method;

use super::{DataDirArg, Remote, api};
use crate::shared::client::{ApiClient, NO_BODY, urlencode};
use crate::wire::{
    CreatedDeployment, DeploymentRecord, DeploymentRequest, DeploymentStatusView, PlanRequest,
    PlanView, SelectorArgs, StepRequest, StepResponse,
};

/// Which clients: any of a kind may match, every kind given must, an exclusion wins.
#[derive(Args, Debug, Clone, Default)]
pub(super) struct SelectorFlags {
    /// A group fixed at enrollment (`all` = every client); repeatable.
    #[arg(long = "group", value_name = "G")]
    groups: Vec<String>,
    /// A label set with `client label`; repeatable.
    #[arg(long = "label", value_name = "L")]
    labels: Vec<String>,
    /// An inventory fact, dotted path (e.g. os.version_id=12); repeatable.
    #[arg(long = "where", value_name = "PATH=VALUE")]
    facts: Vec<String>,
    /// One client by id; repeatable.
    #[arg(long = "client", value_name = "ID")]
    clients: Vec<String>,
    /// Never a client with this label; repeatable.
    #[arg(long = "exclude-label", value_name = "L")]
    exclude_labels: Vec<String>,
    /// Never this client; repeatable.
    #[arg(long = "exclude-client", value_name = "ID")]
    exclude_clients: Vec<String>,
}

impl SelectorFlags {
    /// The selector as the API takes it, and the older single `group` field: a plain
    /// `--group G` travels as `group` alone, so a node from before selectors still takes it.
    /// Pure.
    pub(super) fn to_wire(&self) -> (String, SelectorArgs) {
        let args = SelectorArgs {
            groups: self.groups.clone(),
            labels: self.labels.clone(),
            facts: self.facts.clone(),
            clients: self.clients.clone(),
            exclude_labels: self.exclude_labels.clone(),
            exclude_clients: self.exclude_clients.clone(),
        };
        if args.groups.len() == 1
            && args
                == (SelectorArgs {
                    groups: args.groups.clone(),
                    ..Default::default()
                })
        {
            return (args.groups[0].clone(), SelectorArgs::default());
        }
        (String::new(), args)
    }
}

#[derive(Subcommand, Debug)]
pub(super) enum DeploymentCmd {
    /// Assign an artifact (NAME or NAME@VERSION, the bundle's channel version; default the
    /// newest) to the clients a selector names, optionally in phases with a soak and a brake,
    /// inside windows, from a start time. Prints the deployment id and its state.
    Create {
        #[arg(long)]
        artifact: String,
        #[command(flatten)]
        selector: SelectorFlags,
        #[command(flatten)]
        rollout: RolloutFlags,
        /// Choose the id (default: generated).
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Preview: the clients a selector reaches, phase by phase, before anything moves (the
    /// same --id and --phases show the very split `create` will use).
    Plan {
        #[command(flatten)]
        selector: SelectorFlags,
        /// Cumulative percents, e.g. 10%,50%,100% (default 100%).
        #[arg(long)]
        phases: Option<String>,
        /// The deployment id the split is computed for (default: a fresh one).
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        json: bool,
    },
    /// Every deployment.
    List {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        json: bool,
    },
    /// One deployment: its state and phase, counts per phase, each client's status.
    Status {
        id: String,
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        json: bool,
    },
    /// Approve a deployment waiting for a second person (not its creator).
    Approve {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Stop starting new installs (what is installed stays).
    Pause {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Go on after a pause or a halt (a halt's failures count as seen).
    Resume {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Stop for good; with --uninstall, clients that installed it run its remove handler.
    Abort {
        id: String,
        #[arg(long)]
        uninstall: bool,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        dir: DataDirArg,
    },
}

/// How a deployment moves: phases, soak, brake, windows, start.
#[derive(Args, Debug, Clone, Default)]
pub(super) struct RolloutFlags {
    /// Cumulative percents of the target, e.g. 5%,25%,100% (default 100%).
    #[arg(long)]
    phases: Option<String>,
    /// Time a phase runs inside windows before the next opens, e.g. 30m.
    #[arg(long)]
    soak: Option<String>,
    /// Halt when more clients fail than this: a count (2) or a percent of those reached (10%).
    #[arg(long)]
    max_failures: Option<String>,
    /// When installs may start, "DAYS HH:MM-HH:MM" in the site's time zone (Mon-Fri, Sat,Sun,
    /// Mon, daily); repeatable.
    #[arg(long = "window", value_name = "WINDOW")]
    windows: Vec<String>,
    /// Nothing installs before this time (RFC 3339, e.g. 2026-12-24T22:00:00Z).
    #[arg(long)]
    start_at: Option<String>,
}

pub(super) async fn run(remote: &Remote, cmd: DeploymentCmd) -> Result<()> {
    match cmd {
        DeploymentCmd::Create {
            artifact,
            selector,
            rollout,
            id,
            dir,
        } => create_cmd(&api(remote, &dir)?, &artifact, &selector, rollout, id).await?,
        DeploymentCmd::Plan {
            selector,
            phases,
            id,
            dir,
            json,
        } => plan_cmd(&api(remote, &dir)?, &selector, phases, id, json).await?,
        DeploymentCmd::List { dir, json } => list_cmd(&api(remote, &dir)?, json).await?,
        DeploymentCmd::Status { id, dir, json } => {
            status_cmd(&api(remote, &dir)?, &id, json).await?
        }
        DeploymentCmd::Approve { id, reason, dir } => {
            step_cmd(&api(remote, &dir)?, &id, "approve", reason, false).await?
        }
        DeploymentCmd::Pause { id, reason, dir } => {
            step_cmd(&api(remote, &dir)?, &id, "pause", reason, false).await?
        }
        DeploymentCmd::Resume { id, reason, dir } => {
            step_cmd(&api(remote, &dir)?, &id, "resume", reason, false).await?
        }
        DeploymentCmd::Abort {
            id,
            uninstall,
            reason,
            dir,
        } => step_cmd(&api(remote, &dir)?, &id, "abort", reason, uninstall).await?,
    };
    Ok(())
}

/// `NAME[@VERSION]` as `deployment create --artifact` takes it. Pure.
pub fn parse_artifact(s: &str) -> Result<(String, Option<u64>)> {
    match s.split_once('@') {
        None if !s.is_empty() => Ok((s.to_string(), None)),
        Some((name, v)) if !name.is_empty() => {
            let v = v
                .parse()
                .with_context(|| format!("--artifact {s}: the version after @ must be a number"))?;
            Ok((name.to_string(), Some(v)))
        }
        _ => bail!("--artifact must be NAME or NAME@VERSION"),
    }
}

pub async fn create_cmd(
    api: &ApiClient,
    artifact: &str,
    selector: &SelectorFlags,
    rollout: RolloutFlags,
    id: Option<String>,
) -> Result<()> {
    let (name, version) = parse_artifact(artifact)?;
    let (group, selector) = selector.to_wire();
    let d: CreatedDeployment = api
        .call(
            Method::POST,
            "/v1/deployments",
            Some(&DeploymentRequest {
                artifact: name,
                version,
                group,
                id,
                selector,
                phases: rollout.phases,
                soak: rollout.soak,
                max_failures: rollout.max_failures,
                windows: rollout.windows,
                start_at: rollout.start_at,
            }),
        )
        .await?;
    // A node from before rollouts answers no state: its deployments run at once.
    let state = if d.state.is_empty() {
        "running"
    } else {
        d.state.as_str()
    };
    let r = &d.deployment;
    println!("{} {state}", r.id);
    println!(
        "  {}@{} (sha256 {}){}",
        r.artifact,
        r.version,
        &r.sha256[..16.min(r.sha256.len())],
        if r.group.is_empty() {
            String::new()
        } else {
            format!(" to group {}", r.group)
        }
    );
    Ok(())
}

pub async fn plan_cmd(
    api: &ApiClient,
    selector: &SelectorFlags,
    phases: Option<String>,
    id: Option<String>,
    json: bool,
) -> Result<()> {
    let (group, selector) = selector.to_wire();
    let v: PlanView = api
        .call(
            Method::POST,
            "/v1/deployments/plan",
            Some(&PlanRequest {
                selector,
                group,
                phases,
                id,
            }),
        )
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for line in plan_lines(&v) {
            println!("{line}");
        }
    }
    Ok(())
}

/// The preview as `deployment plan` prints it: each phase and its clients, the unseen apart,
/// the count. Pure.
pub fn plan_lines(v: &PlanView) -> Vec<String> {
    let mut out = Vec::new();
    for (k, p) in v.phases.iter().enumerate() {
        out.push(format!(
            "phase {} ({}%): {} client{}",
            k + 1,
            p.percent,
            p.clients.len(),
            plural(p.clients.len() as u64)
        ));
        out.extend(p.clients.iter().map(|c| format!("  {c}")));
    }
    if !v.unseen.is_empty() {
        out.push(format!(
            "not seen for more than a day ({}), they get it in their phase when they sync:",
            v.unseen.len()
        ));
        out.extend(v.unseen.iter().map(|c| format!("  {c}")));
    }
    out.push(format!("{} client{} targeted", v.count, plural(v.count)));
    out
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub async fn list_cmd(api: &ApiClient, json: bool) -> Result<()> {
    let v: Vec<DeploymentRecord> = api.call(Method::GET, "/v1/deployments", NO_BODY).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if v.is_empty() {
        println!("no deployments");
    } else {
        for d in v {
            println!(
                "{:<14} {}@{:<6} {:<8} group {:<12} by {}",
                d.id, d.artifact, d.version, d.kind, d.group, d.created_by
            );
        }
    }
    Ok(())
}

pub async fn status_cmd(api: &ApiClient, id: &str, json: bool) -> Result<()> {
    let v: DeploymentStatusView = api
        .call(
            Method::GET,
            &format!("/v1/deployments/{}", urlencode(id)),
            NO_BODY,
        )
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for line in status_lines(&v) {
        println!("{line}");
    }
    Ok(())
}

/// What a selector names, in the flags that name it. Pure.
pub fn selector_text(s: &SelectorArgs) -> String {
    let mut parts = Vec::new();
    for (flag, list) in [
        ("--group", &s.groups),
        ("--label", &s.labels),
        ("--where", &s.facts),
        ("--client", &s.clients),
        ("--exclude-label", &s.exclude_labels),
        ("--exclude-client", &s.exclude_clients),
    ] {
        parts.extend(list.iter().map(|v| format!("{flag} {v}")));
    }
    parts.join(" ")
}

/// `deployment status` for people: the deployment, its state and phase, a line per phase
/// with its counts, the failures with the last line of their output, and each client. A node
/// from before rollouts sends no state: then the results and the pending clients, as before.
/// Pure.
pub fn status_lines(v: &DeploymentStatusView) -> Vec<String> {
    let d = &v.deployment;
    let target = if v.selector.is_empty() {
        format!("group {}", d.group)
    } else {
        selector_text(&v.selector)
    };
    let mut out = vec![format!(
        "{}: {}@{} ({} bytes, sha256 {}) to {target}",
        d.id, d.artifact, d.version, d.size, d.sha256
    )];
    if v.state.is_empty() {
        for r in &v.results {
            out.push(format!(
                "  {:<16} {:<9} attempts {}  {}",
                r.client_id,
                r.status.as_str(),
                r.attempts,
                r.detail.replace('\n', " ")
            ));
        }
        out.extend(v.pending.iter().map(|c| format!("  {c:<16} pending")));
        return out;
    }
    let mut head = format!(
        "state: {}, phase {} of {}",
        v.state,
        v.phase,
        v.phases.len()
    );
    if v.soak_ms > 0 {
        head.push_str(&format!(
            ", soak {}",
            humantime::format_duration(std::time::Duration::from_millis(v.soak_ms))
        ));
    }
    // 100% is no brake at all: every reached client may fail (a plain deployment's).
    if !v.max_failures.is_empty() && v.max_failures != "100%" {
        head.push_str(&format!(
            ", max failures {} ({} allowed now)",
            v.max_failures, v.allowed_failures
        ));
    }
    out.push(head);
    if !v.windows.is_empty() {
        out.push(format!(
            "windows: {} (now {})",
            v.windows.join(", "),
            if v.window_open { "open" } else { "closed" }
        ));
    }
    if let Some(at) = v.start_at_ms {
        out.push(format!("start at: {}", crate::shared::text::format_ms(at)));
    }
    if !v.reason.is_empty() {
        out.push(format!("reason: {}", v.reason));
    }
    if let Some(by) = &v.approved_by {
        out.push(format!("approved by: {by}"));
    }
    for (k, p) in v.phases.iter().enumerate() {
        let mut line = format!(
            "phase {} ({}%): {} installed, {} failed, {} pending, {} outside window, {} waiting",
            k + 1,
            p.percent,
            p.installed,
            p.failed,
            p.pending,
            p.outside_window,
            p.waiting
        );
        if v.uninstall || p.removed > 0 || p.remove_failed > 0 {
            line.push_str(&format!(
                ", {} removed, {} remove failed",
                p.removed, p.remove_failed
            ));
        }
        out.push(line);
    }
    let failures: Vec<_> = v
        .clients
        .iter()
        .filter(|c| c.status == "failed" || c.status == "remove-failed")
        .collect();
    if !failures.is_empty() {
        out.push(format!("failures ({}):", failures.len()));
        for c in failures {
            out.push(format!(
                "  {} (phase {}, {}): {}",
                c.id,
                c.phase,
                c.status,
                c.detail
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim()
            ));
        }
    }
    out.push("clients:".into());
    for c in &v.clients {
        out.push(format!("  {:<16} phase {} {}", c.id, c.phase, c.status));
    }
    out
}

/// `approve | pause | resume | abort`: one step, then the state it left.
pub async fn step_cmd(
    api: &ApiClient,
    id: &str,
    step: &str,
    reason: String,
    uninstall: bool,
) -> Result<()> {
    let r: StepResponse = api
        .call(
            Method::POST,
            &format!("/v1/deployments/{}/{step}", urlencode(id)),
            Some(&StepRequest { reason, uninstall }),
        )
        .await?;
    println!("{} {}", r.id, r.state);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ClientProgressView, PhaseView, PlanPhaseView};

    #[test]
    fn artifacts() {
        assert_eq!(parse_artifact("tool").ok(), Some(("tool".into(), None)));
        assert_eq!(
            parse_artifact("tool@3").ok(),
            Some(("tool".into(), Some(3)))
        );
        for bad in ["", "@3", "tool@x", "tool@"] {
            assert!(parse_artifact(bad).is_err(), "{bad}");
        }
    }

    fn flags(groups: &[&str], labels: &[&str]) -> SelectorFlags {
        SelectorFlags {
            groups: groups.iter().map(|s| s.to_string()).collect(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_plain_group_travels_as_group() {
        // What a node from before selectors reads: `group` alone.
        assert_eq!(
            flags(&["lab"], &[]).to_wire(),
            ("lab".to_string(), SelectorArgs::default())
        );
        for f in [
            flags(&["lab", "b"], &[]),
            flags(&["lab"], &["line2"]),
            flags(&[], &["l"]),
        ] {
            let (group, args) = f.to_wire();
            assert_eq!(group, "", "{f:?}");
            assert_eq!(args.groups, f.groups);
            assert_eq!(args.labels, f.labels);
        }
        let mut f = flags(&["all"], &[]);
        f.exclude_clients = vec!["c-1".into()];
        assert_eq!(f.to_wire().0, "");
    }

    #[test]
    fn plan_lines_list_phases_unseen_and_count() {
        let v = PlanView {
            count: 4,
            phases: vec![
                PlanPhaseView {
                    percent: 50,
                    clients: vec!["c-1".into()],
                },
                PlanPhaseView {
                    percent: 100,
                    clients: vec!["c-2".into(), "c-3".into()],
                },
            ],
            unseen: vec!["c-9".into()],
        };
        assert_eq!(
            plan_lines(&v),
            [
                "phase 1 (50%): 1 client",
                "  c-1",
                "phase 2 (100%): 2 clients",
                "  c-2",
                "  c-3",
                "not seen for more than a day (1), they get it in their phase when they sync:",
                "  c-9",
                "4 clients targeted",
            ]
        );
    }

    fn record() -> DeploymentRecord {
        DeploymentRecord {
            id: "d-1".into(),
            artifact: "tool".into(),
            version: 2,
            kind: "artifact".into(),
            sha256: "ab".repeat(32),
            size: 10,
            bundle_id: "b".into(),
            group: String::new(),
            created_at_ms: 0,
            created_by: "admin:ana".into(),
        }
    }

    #[test]
    fn status_lines_of_a_halted_rollout() {
        let client = |id: &str, phase, status: &str, detail: &str| ClientProgressView {
            id: id.into(),
            phase,
            status: status.into(),
            detail: detail.into(),
            at_ms: None,
        };
        let v = DeploymentStatusView {
            deployment: record(),
            results: vec![],
            pending: vec![],
            state: "halted".into(),
            phase: 1,
            phases: vec![
                PhaseView {
                    percent: 10,
                    clients: 3,
                    installed: 1,
                    failed: 2,
                    ..Default::default()
                },
                PhaseView {
                    percent: 100,
                    clients: 1,
                    waiting: 1,
                    ..Default::default()
                },
            ],
            clients: vec![
                client("c-1", 1, "installed", ""),
                client("c-2", 1, "failed", "exit 3\nboom\n"),
                client("c-3", 1, "failed", "exit 1"),
                client("c-4", 2, "waiting", ""),
            ],
            reason: "2 failures > 1 allowed: c-2, c-3".into(),
            approved_by: None,
            windows: vec![],
            window_open: true,
            selector: SelectorArgs {
                labels: vec!["line2".into()],
                exclude_labels: vec!["quarantine".into()],
                ..Default::default()
            },
            soak_ms: 1_800_000,
            max_failures: "1".into(),
            allowed_failures: 1,
            start_at_ms: None,
            uninstall: false,
        };
        let lines = status_lines(&v);
        assert_eq!(
            lines[..8],
            [
                format!(
                    "d-1: tool@2 (10 bytes, sha256 {}) to --label line2 --exclude-label quarantine",
                    "ab".repeat(32)
                ),
                "state: halted, phase 1 of 2, soak 30m, max failures 1 (1 allowed now)".into(),
                "reason: 2 failures > 1 allowed: c-2, c-3".into(),
                "phase 1 (10%): 1 installed, 2 failed, 0 pending, 0 outside window, 0 waiting"
                    .into(),
                "phase 2 (100%): 0 installed, 0 failed, 0 pending, 0 outside window, 1 waiting"
                    .into(),
                "failures (2):".into(),
                "  c-2 (phase 1, failed): boom".into(),
                "  c-3 (phase 1, failed): exit 1".into(),
            ]
        );
        assert_eq!(lines.len(), 8 + 1 + 4);
        // No brake (a plain deployment's 100%): not shown as one.
        let no_brake = DeploymentStatusView {
            max_failures: "100%".into(),
            soak_ms: 0,
            ..v
        };
        assert_eq!(status_lines(&no_brake)[1], "state: halted, phase 1 of 2");
    }

    #[test]
    fn status_lines_of_an_older_node_keep_the_old_shape() {
        let v = DeploymentStatusView {
            deployment: DeploymentRecord {
                group: "lab".into(),
                ..record()
            },
            results: vec![],
            pending: vec!["c-1".into()],
            state: String::new(),
            phase: 0,
            phases: vec![],
            clients: vec![],
            reason: String::new(),
            approved_by: None,
            windows: vec![],
            window_open: false,
            selector: SelectorArgs::default(),
            soak_ms: 0,
            max_failures: String::new(),
            allowed_failures: 0,
            start_at_ms: None,
            uninstall: false,
        };
        let lines = status_lines(&v);
        assert!(lines[0].ends_with("to group lab"), "{lines:?}");
        assert_eq!(lines[1], format!("  {:<16} pending", "c-1"));
    }
}
