//! The deployments' pages: the list with the "New deployment" form, its preview (the plan,
//! as `outpost deployment plan` prints it, before anything moves), one deployment's state,
//! phases and clients, and the abort's confirmation. The buttons' commits are in `actions`;
//! here only reads, and the pure shaping of what the templates show (progress bars, the
//! selector as flags, whether approval will be needed), tested beside it.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use outpost_storage::{FailureLimit, RolloutState, Scope, Selector};
use serde::Deserialize;

use crate::console::pages::{clip, not_found, pager};
use crate::console::rollout_form::{RolloutForm, new_id};
use crate::console::session::failed;
use crate::console::views::*;
use crate::console::{Console, Operator, PAGE, ago, when};
use crate::shared::client::urlencode;
use outpost_storage::APPROVAL_ABOVE_KEY;
use outpost_storage::rollout::ApprovalRule;

/// A deployment's kind when it is an agent release (the bundles' payload kind, which the
/// console's room does not import).
const RELEASE_KIND: &str = "outpost-release";

/// Client ids the preview lists per phase (and unseen); the rest are counted.
const PREVIEW_IDS: usize = 500;

fn deployment_row(
    p: &outpost_storage::DeploymentProgress,
    rollout: Option<&outpost_storage::RolloutRecord>,
    now: i64,
) -> DeploymentRow {
    let d = &p.deployment;
    DeploymentRow {
        id: d.id.clone(),
        artifact: d.artifact.clone(),
        version: d.version,
        group: match rollout {
            Some(r) => target_text(&r.selector),
            None => d.group.clone(),
        },
        state: rollout.map_or("running", |r| r.state.as_str()).to_owned(),
        targeted: p.targeted,
        installed: p.installed,
        failed: p.failed,
        pending: p.targeted.saturating_sub(p.installed + p.failed),
        percent: (p.installed * 100)
            .checked_div(p.targeted)
            .unwrap_or(0)
            .min(100),
        created: ago(d.created_at_ms, now),
        by: d.created_by.clone(),
    }
}

/// Every deployment with its state and progress, and the form for a new one.
pub async fn deployments(State(con): State<Arc<Console>>, op: Operator) -> Response {
    list_page(&con, &op, NewDeployment::default(), StatusCode::OK).await
}

/// The list page with `form` filled in (after "Change…" or a refusal).
pub async fn list_page(
    con: &Console,
    op: &Operator,
    form: NewDeployment,
    status: StatusCode,
) -> Response {
    let read = con
        .app
        .read(|r| {
            let progress = r.deployment_progress()?;
            let mut rows = Vec::with_capacity(progress.len());
            for p in progress {
                let rollout = r.rollout(&p.deployment.id)?;
                rows.push((p, rollout));
            }
            Ok(rows)
        })
        .await;
    match read {
        Ok(rows) => {
            let now = outpost_raft::now_ms();
            let page = render(&Deployments {
                c: Chrome::new(con, op, "Deployments", "deployments"),
                rows: rows
                    .iter()
                    .map(|(p, r)| deployment_row(p, r.as_ref(), now))
                    .collect(),
                form,
            });
            (status, page).into_response()
        }
        Err(e) => failed(con, Some(op), e),
    }
}

/// The form's values, to show it again.
pub fn refill(f: &RolloutForm, error: String) -> NewDeployment {
    NewDeployment {
        artifact: f.artifact.clone(),
        groups: f.groups.clone(),
        labels: f.labels.clone(),
        facts: f.facts.clone(),
        clients: f.clients.clone(),
        exclude_labels: f.exclude_labels.clone(),
        exclude_clients: f.exclude_clients.clone(),
        phases: f.phases.clone(),
        soak: f.soak.clone(),
        max_failures: f.max_failures.clone(),
        windows: f.windows.clone(),
        start_at: f.start_at.clone(),
        id: f.id.clone(),
        error,
    }
}

/// "Change…" on the preview: the form again with what was typed.
pub async fn edit(con: &Console, op: &Operator, form: &RolloutForm) -> Response {
    list_page(con, op, refill(form, String::new()), StatusCode::OK).await
}

/// The preview: which clients the deployment reaches, phase by phase (the unseen apart),
/// and whether it will wait for approval; its confirm button carries the same fields. The
/// id is chosen here when none was typed, so the split shown is the one created.
/// (The form's CSRF token is checked by the caller, `actions::deployment_form`.)
pub async fn preview(con: &Console, op: &Operator, mut form: RolloutForm) -> Response {
    if form.id.trim().is_empty() {
        form.id = new_id();
    }
    let (req, plan_req) = match (form.request(), form.plan_request()) {
        (Ok(r), Ok(p)) => (r, p),
        (Err(e), _) | (_, Err(e)) => return refused(con, op, &form, e).await,
    };
    // The whole request is checked now (artifact, phases, soak, windows, start), as the
    // confirm will check it, so a refusal comes before the preview rather than after it.
    let now = outpost_raft::now_ms();
    let (r2, p2, scoped) = (req.clone(), plan_req.clone(), op.caller());
    let read = con
        .app
        .read(move |r| {
            // An artifact no imported bundle holds is refused here, not at the confirm.
            let known = r.deployable_kind(&r2.artifact, r2.version)?.is_some();
            let checked = crate::api::deployments::rollout_command(r, &r2, now).map(|_| ());
            let plan = checked.and_then(|()| crate::api::deployments::plan(r, &p2, now));
            let outside = match &plan {
                Ok(p) => plan_outside(r, p, &scoped)?,
                Err(_) => Vec::new(),
            };
            let above = r.config_get(&Scope::Global, APPROVAL_ABOVE_KEY)?;
            Ok((known, plan, above, outside))
        })
        .await;
    let (plan, above) = match read {
        // A scoped person sees no plan that reaches beyond the scope: the create would be
        // refused the same way.
        Ok((_, _, _, outside)) if !outside.is_empty() => {
            let e = crate::api::clients::outside_refusal(
                &op.caller(),
                "the selector reaches",
                &outside,
            );
            return refused_as(con, op, &form, e).await;
        }
        Ok((false, _, _, _)) => {
            let what = match req.version {
                Some(v) => format!("{} version {v}", req.artifact),
                None => req.artifact.clone(),
            };
            let e = format!("artifact: no imported bundle holds {what}");
            return refused(con, op, &form, e).await;
        }
        Ok((true, Ok(plan), above, _)) => (plan, above.map(|e| e.value)),
        Ok((true, Err(e), _, _)) => return refused(con, op, &form, e.message().to_owned()).await,
        Err(e) => return failed(con, Some(op), e),
    };
    let all = req
        .selector
        .groups
        .iter()
        .chain(std::iter::once(&req.group))
        .any(|g| g == outpost_storage::ALL_CLIENTS);
    let version = match req.version {
        Some(v) => format!(" version {v}"),
        None => " (its channel's newest version)".into(),
    };
    let id = form.id.clone();
    render(&Preview {
        c: Chrome::new(con, op, &format!("Preview of {id}"), "deployments"),
        artifact: format!("{}{version}", req.artifact),
        target: form.flags(),
        count: plan.count,
        phases: plan
            .phases
            .iter()
            .enumerate()
            .map(|(i, p)| PlanPhaseRow {
                number: i + 1,
                percent: p.percent,
                count: p.clients.len(),
                clients: p.clients.iter().take(PREVIEW_IDS).cloned().collect(),
                more: p.clients.len().saturating_sub(PREVIEW_IDS),
            })
            .collect(),
        unseen_count: plan.unseen.len(),
        unseen_more: plan.unseen.len().saturating_sub(PREVIEW_IDS),
        unseen: plan.unseen.iter().take(PREVIEW_IDS).cloned().collect(),
        approval: approval_needed(above.as_deref(), all, plan.count),
        settings: settings(&req),
        hidden: form.hidden(),
        id,
    })
}

/// The form again, with what was typed and why it was refused.
pub async fn refused(con: &Console, op: &Operator, form: &RolloutForm, e: String) -> Response {
    list_page(con, op, refill(form, e), StatusCode::BAD_REQUEST).await
}

/// `refused` with the status of `e` (403 for a selector beyond the person's scope).
pub async fn refused_as(
    con: &Console,
    op: &Operator,
    form: &RolloutForm,
    e: crate::api::ApiError,
) -> Response {
    let status = e.clone().into_response().status();
    list_page(con, op, refill(form, e.message().to_owned()), status).await
}

/// The clients of `plan` (every phase's and the unseen) that `caller` does not reach.
pub(crate) fn plan_outside(
    r: &outpost_storage::Reader,
    plan: &crate::wire::PlanView,
    caller: &crate::api::Caller,
) -> Result<Vec<String>, outpost_storage::StorageError> {
    let ids = plan
        .phases
        .iter()
        .flat_map(|p| p.clients.iter())
        .chain(plan.unseen.iter());
    crate::api::clients::ids_outside(r, caller, ids)
}

/// Why a deployment will wait for a second person (the rule `CreateRollout` applies,
/// `outpost_storage::rollout::ApprovalRule`), or empty when it will not.
pub fn approval_needed(above: Option<&str>, all: bool, count: u64) -> String {
    let wait = "it waits until someone other than you approves it";
    let rule = ApprovalRule::of(above);
    if !rule.needed(all, || count) {
        return String::new();
    }
    match rule {
        ApprovalRule::Above(n) if all => {
            format!("needed: it targets all clients and {APPROVAL_ABOVE_KEY} is {n}; {wait}")
        }
        ApprovalRule::Above(n) => {
            format!("needed: {count} clients is more than {APPROVAL_ABOVE_KEY} = {n}; {wait}")
        }
        _ => format!(
            "needed: {APPROVAL_ABOVE_KEY} is {}, not a count, so every deployment waits; {wait}",
            crate::shared::text::shown(above.unwrap_or(""))
        ),
    }
}

/// The preview's lines for the rollout's settings.
fn settings(req: &crate::wire::DeploymentRequest) -> Vec<(&'static str, String)> {
    let or = |v: &Option<String>, none: &str| v.clone().unwrap_or_else(|| none.to_owned());
    vec![
        ("Phases", or(&req.phases, "100% (all at once)")),
        (
            "Soak",
            match (&req.phases, &req.soak) {
                (None, _) => "none (one phase)".into(),
                (Some(_), soak) => or(soak, "none: the next phase opens at once"),
            },
        ),
        (
            "Max failures",
            or(&req.max_failures, "no brake: failures never halt it"),
        ),
        (
            "Windows",
            if req.windows.is_empty() {
                "always open".into()
            } else {
                req.windows.join("; ")
            },
        ),
        ("Start", or(&req.start_at, "at once")),
    ]
}

/// "1 client", "2 clients".
pub fn n_clients(n: u64) -> String {
    if n == 1 {
        "1 client".into()
    } else {
        format!("{n} clients")
    }
}

/// A selector as the CLI's flags (`--label line2 --exclude-label quarantine`).
pub fn target_text(s: &Selector) -> String {
    let mut out = Vec::new();
    for (flag, list) in [
        ("--group", &s.groups),
        ("--label", &s.labels),
        ("--client", &s.clients),
        ("--exclude-label", &s.exclude_labels),
        ("--exclude-client", &s.exclude_clients),
    ] {
        out.extend(list.iter().map(|t| format!("{flag} {t}")));
    }
    out.extend(s.facts.iter().map(|(p, v)| format!("--where {p}={v}")));
    if s.groups.len() == 1 && out.len() == 1 {
        return s.groups[0].clone();
    }
    out.join(" ")
}

/// A progress bar 1000 units wide: one segment per non-zero count, in the order given, the
/// widths rounded so that they add up to exactly 1000.
pub fn segments(counts: &[(&'static str, &'static str, u64)]) -> Vec<Segment> {
    let total: u64 = counts.iter().map(|(_, _, n)| n).sum();
    let mut out = Vec::new();
    let mut before = 0u64;
    for &(kind, label, count) in counts {
        if count == 0 {
            continue;
        }
        let x = (before * 1000).checked_div(total).unwrap_or(0);
        before += count;
        let end = (before * 1000).checked_div(total).unwrap_or(0);
        out.push(Segment {
            kind,
            label,
            count,
            x,
            width: end - x,
        });
    }
    out
}

fn phase_row(
    i: usize,
    p: &outpost_storage::PhaseCounts,
    current: u32,
    state: RolloutState,
) -> PhaseRow {
    let segs = segments(&[
        ("installed", "installed", p.installed),
        ("failed", "failed", p.failed),
        ("pending", "pending", p.pending),
        ("outside-window", "outside window", p.outside_window),
        ("waiting", "waiting", p.waiting),
        ("removed", "removed", p.removed),
        ("remove-failed", "remove failed", p.remove_failed),
    ]);
    let summary = if segs.is_empty() {
        "no client".to_owned()
    } else {
        segs.iter()
            .map(|s| format!("{} {}", s.count, s.label))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let at = u32::try_from(i).unwrap_or(u32::MAX);
    let (open, class) = match (at.cmp(&current), state) {
        (_, RolloutState::WaitingApproval | RolloutState::Scheduled) => ("not open yet", "closed"),
        (std::cmp::Ordering::Less, _) => ("open", "open"),
        (std::cmp::Ordering::Equal, RolloutState::Running) => ("open, current", "current"),
        (std::cmp::Ordering::Equal, RolloutState::Aborted) => ("stopped", "current"),
        (std::cmp::Ordering::Equal, RolloutState::Done) => ("open", "open"),
        (std::cmp::Ordering::Equal, _) => ("current, not moving", "current"),
        (std::cmp::Ordering::Greater, _) => ("not open yet", "closed"),
    };
    PhaseRow {
        number: i + 1,
        percent: p.percent,
        clients: n_clients(p.clients),
        open,
        class,
        segments: segs,
        summary,
    }
}

/// The brake in words: the limit, what it allows in the open phases, what counts now.
fn brake_text(r: &outpost_storage::RolloutRecord, failures: u64) -> String {
    let counted = failures.saturating_sub(r.failure_base);
    if r.max_failures == FailureLimit::Percent(100) {
        return format!("none: failures never halt it ({counted} so far)");
    }
    let limit = match r.max_failures {
        FailureLimit::Count(n) => format!("at most {n} failures"),
        FailureLimit::Percent(p) => format!("at most {p}% of the open phases' clients failing"),
    };
    let mut out = format!(
        "{limit} ({} allowed now); {counted} counted",
        r.allowed_failures
    );
    if r.failure_base > 0 {
        out.push_str(&format!(
            " ({} seen before the last resume not counted)",
            r.failure_base
        ));
    }
    out
}

#[derive(Debug, Default, Deserialize)]
pub struct DeploymentQuery {
    #[serde(default)]
    done: String,
    #[serde(default)]
    page: Option<u64>,
}

/// One deployment: its state, phases, clients and the newest failures with the handler's
/// output; the buttons its state allows.
pub async fn deployment(
    State(con): State<Arc<Console>>,
    op: Operator,
    Path(id): Path<String>,
    Query(q): Query<DeploymentQuery>,
) -> Response {
    let notice = match q.done.as_str() {
        "created" => "Created.",
        "approved" => "Approved: it starts now, or at its start time.",
        "paused" => "Paused: no client starts installing it until it is resumed.",
        "resumed" => "Resumed: the current phase soaks again from now.",
        "aborted" => "Aborted: no client starts installing it again.",
        "uninstalling" => {
            "Aborted: the clients that installed it run the remove handler at their next sync."
        }
        _ => "",
    };
    let page = q.page.unwrap_or(1).clamp(1, 1_000_000);
    deployment_page(&con, &op, &id, page, notice, String::new()).await
}

/// The deployment page, with a notice of what was done or the refusal of what was not.
pub async fn deployment_page(
    con: &Console,
    op: &Operator,
    id: &str,
    page: u64,
    notice: &str,
    error: String,
) -> Response {
    let now = outpost_raft::now_ms();
    let (i, scoped) = (id.to_owned(), op.caller());
    let read = con
        .app
        .read(move |r| {
            let Some(status) = r.rollout_status(&i, now)? else {
                return Ok(None);
            };
            let failures = r.deployment_failures(&i, PAGE)?;
            let outside =
                crate::api::clients::ids_outside(r, &scoped, status.clients.iter().map(|c| &c.id))?;
            Ok(Some((status, failures, outside)))
        })
        .await;
    let (mut st, mut failures, outside) = match read {
        Ok(Some(v)) => v,
        Ok(None) => return not_found(con, &format!("deployment {id}")),
        Err(e) => return failed(con, Some(op), e),
    };
    // A scoped person sees the deployment's counts, and the rows of its own clients only;
    // its steps are offered when every target is in reach (the server checks again).
    let may_step = op.grant.role >= outpost_storage::PersonRole::Operator && outside.is_empty();
    if !outside.is_empty() {
        let out: std::collections::HashSet<&String> = outside.iter().collect();
        st.clients.retain(|c| !out.contains(&c.id));
        failures.retain(|f| !out.contains(&f.client_id));
    }
    let r = &st.rollout;
    let d = &st.deployment;
    let pr = &st.progress;
    let state = r.state;
    let phases = r.phases.len();
    let percent = r.phases.get(r.phase as usize).copied().unwrap_or(100);
    let mut clients: Vec<_> = st.clients.iter().collect();
    clients.sort_by(|a, b| (a.phase, &a.id).cmp(&(b.phase, &b.id)));
    let total = clients.len() as u64;
    let from = ((page - 1) * u64::from(PAGE)) as usize;
    let base = format!("/deployments/{}?", urlencode(id));
    let targeted = pr.targeted;
    let installed = st.phases.iter().map(|p| p.installed).sum::<u64>();
    let failed_n = st.phases.iter().map(|p| p.failed).sum::<u64>();
    render(&Deployment {
        c: Chrome::new(con, op, &format!("Deployment {id}"), "deployments"),
        sha256: d.sha256.clone(),
        bundle: d.bundle_id.clone(),
        failures: failures
            .iter()
            .map(|f| Failure {
                client: f.client_id.clone(),
                when: ago(f.at_ms, now),
                attempts: f.attempts,
                detail: if f.detail.is_empty() {
                    "(no output)".into()
                } else {
                    f.detail.clone()
                },
            })
            .collect(),
        row: DeploymentRow {
            id: d.id.clone(),
            artifact: d.artifact.clone(),
            version: d.version,
            group: target_text(&r.selector),
            state: state.as_str().to_owned(),
            targeted,
            installed,
            failed: failed_n,
            pending: targeted.saturating_sub(installed + failed_n),
            percent: (installed * 100)
                .checked_div(targeted)
                .unwrap_or(0)
                .min(100),
            created: format!("{} ({})", ago(d.created_at_ms, now), when(d.created_at_ms)),
            by: d.created_by.clone(),
        },
        state: state.as_str().to_owned(),
        phase: match state {
            RolloutState::WaitingApproval | RolloutState::Scheduled => {
                format!("none open yet: phase 1 of {phases} (up to {percent}%) opens first")
            }
            _ => format!("{} of {phases} (up to {percent}%)", r.phase + 1),
        },
        target: target_text(&r.selector),
        targeted: n_clients(targeted),
        reason: r.reason.clone(),
        approved_by: r.approved_by.clone().unwrap_or_default(),
        brake: brake_text(r, pr.failures),
        soak: if phases == 1 {
            "none (one phase)".into()
        } else if r.soak_ms == 0 {
            "none: a phase opens as soon as the one before is within the brake".into()
        } else {
            format!(
                "{} inside windows; the current phase opened {}",
                humantime::format_duration(std::time::Duration::from_millis(r.soak_ms)),
                ago(r.phase_opened_at_ms, now)
            )
        },
        windows: match (r.windows.is_empty(), st.window_open) {
            (true, _) => "always open".into(),
            (false, open) => format!(
                "{} ({} now, site time)",
                r.windows.join("; "),
                if open { "open" } else { "closed" }
            ),
        },
        start: match r.start_at_ms {
            Some(at) if at > now => format!("{} ({})", when(at), ago(at, now)),
            Some(at) => when(at),
            None => "at once".into(),
        },
        phases: st
            .phases
            .iter()
            .enumerate()
            .map(|(i, p)| phase_row(i, p, r.phase, state))
            .collect(),
        clients: clients
            .iter()
            .skip(from)
            .take(PAGE as usize)
            .map(|c| ClientStatusRow {
                id: c.id.clone(),
                phase: c.phase,
                status: c.status.clone(),
                when: c.at_ms.map(|t| ago(t, now)).unwrap_or_default(),
                detail: clip(&c.detail, 300),
            })
            .collect(),
        pager: pager(&base, page, total),
        notice: notice.to_owned(),
        error,
        can_approve: may_step && state == RolloutState::WaitingApproval,
        can_pause: may_step && matches!(state, RolloutState::Running | RolloutState::Scheduled),
        can_resume: may_step && matches!(state, RolloutState::Paused | RolloutState::Halted),
        can_abort: may_step && state != RolloutState::Aborted,
    })
}

/// The confirmation step before an abort, with the "also uninstall" choice.
pub async fn abort_confirm(
    State(con): State<Arc<Console>>,
    op: Operator,
    Path(id): Path<String>,
) -> Response {
    let i = id.clone();
    let now = outpost_raft::now_ms();
    match con.app.read(move |r| r.rollout_status(&i, now)).await {
        Ok(Some(st)) => render(&AbortConfirm {
            c: Chrome::new(&con, &op, &format!("Abort {id}"), "deployments"),
            state: st.rollout.state.as_str().to_owned(),
            artifact: format!(
                "{} version {}",
                st.deployment.artifact, st.deployment.version
            ),
            installed: n_clients(st.phases.iter().map(|p| p.installed).sum()),
            release: st.deployment.kind == RELEASE_KIND,
            id,
        }),
        Ok(None) => not_found(&con, &format!("deployment {id}")),
        Err(e) => failed(&con, Some(&op), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_add_up_to_the_whole_width() {
        let cases: [&[(&str, &str, u64)]; 5] = [
            &[("installed", "installed", 1), ("failed", "failed", 1)],
            &[("installed", "installed", 1), ("failed", "failed", 2)],
            &[
                ("installed", "installed", 0),
                ("failed", "failed", 3),
                ("waiting", "waiting", 0),
            ],
            &[("installed", "installed", 9_999), ("failed", "failed", 1)],
            &[("installed", "installed", 0)],
        ];
        let wants: [&[(&str, u64, u64)]; 5] = [
            &[("installed", 0, 500), ("failed", 500, 500)],
            &[("installed", 0, 333), ("failed", 333, 667)],
            &[("failed", 0, 1000)],
            &[("installed", 0, 999), ("failed", 999, 1)],
            &[],
        ];
        for (counts, want) in cases.iter().zip(wants) {
            let got: Vec<_> = segments(counts)
                .iter()
                .map(|s| (s.kind, s.x, s.width))
                .collect();
            assert_eq!(got, want, "{counts:?}");
            if !want.is_empty() {
                assert_eq!(got.iter().map(|(_, _, w)| w).sum::<u64>(), 1000);
            }
        }
    }

    #[test]
    fn approval_rule() {
        assert_eq!(approval_needed(None, true, 100), "");
        assert_eq!(approval_needed(Some("5"), false, 5), "");
        assert_eq!(approval_needed(Some(" 5 "), false, 0), "");
        assert!(approval_needed(Some("5"), false, 6).contains("6 clients is more than"));
        assert!(approval_needed(Some("50"), true, 2).contains("targets all clients"));
        assert!(approval_needed(Some("five"), false, 0).contains("not a count"));
    }

    #[test]
    fn selectors_as_flags() {
        let mut s = Selector {
            groups: vec!["lab".into()],
            ..Selector::default()
        };
        assert_eq!(target_text(&s), "lab");
        s.labels = vec!["line2".into()];
        s.exclude_labels = vec!["quarantine".into()];
        s.facts = vec![("os.version_id".into(), "12".into())];
        assert_eq!(
            target_text(&s),
            "--group lab --label line2 --exclude-label quarantine --where os.version_id=12"
        );
    }
}
