//! The legal transitions of a rollout (`step_target`), who counts as the same person for
//! approval (`same_person`), and what the leader proposes next (`next_step`).

use jiff::tz::TimeZone;

use super::human_ms;
use super::windows::Windows;
use crate::model::{Progress, RolloutRecord, RolloutState, RolloutStep};

/// The state `step` leads to from `rollout`'s state, or why it may not happen there:
/// "deployment D is STATE: cannot STEP". Approve leads to `scheduled` while the start time
/// is ahead of `at_ms`, else `running`.
pub fn step_target(
    rollout: &RolloutRecord,
    step: RolloutStep,
    at_ms: i64,
) -> Result<RolloutState, String> {
    use RolloutState as S;
    use RolloutStep as T;
    let last = u32::try_from(rollout.phases.len().saturating_sub(1)).unwrap_or(u32::MAX);
    let to = match (rollout.state, step) {
        (S::WaitingApproval, T::Approve) => {
            Some(if rollout.start_at_ms.is_some_and(|s| s > at_ms) {
                S::Scheduled
            } else {
                S::Running
            })
        }
        (S::Scheduled, T::Start) => Some(S::Running),
        (S::Running | S::Scheduled, T::Pause) => Some(S::Paused),
        (S::Paused | S::Halted, T::Resume) => Some(S::Running),
        (S::Running, T::OpenPhase(k)) if k == rollout.phase.saturating_add(1) && k <= last => {
            Some(S::Running)
        }
        (S::Running, T::Finish) if rollout.phase == last => Some(S::Done),
        (s, T::Abort { .. }) if s != S::Aborted => Some(S::Aborted),
        _ => None,
    };
    to.ok_or_else(|| {
        format!(
            "deployment {} is {}: cannot {step}",
            rollout.deployment_id, rollout.state
        )
    })
}

/// Whether two actors are the same person: the same name once `admin:` / `console:` is
/// stripped (an admin certificate and a console account of one name are one person), and
/// the ` via node:N` a follower appends when it forwards a command to the leader (the same
/// admin through another node is the same person).
pub fn same_person(a: &str, b: &str) -> bool {
    fn name(s: &str) -> &str {
        let s = s.split_once(" via node:").map_or(s, |(who, _)| who);
        s.strip_prefix("admin:")
            .or_else(|| s.strip_prefix("console:"))
            .unwrap_or(s)
    }
    name(a) == name(b)
}

/// What the leader proposes for `rollout` at `now_ms`, with the reason for the audit row:
/// `Start` when a scheduled one is due; `OpenPhase` when the current phase soaked (time inside
/// windows since it opened), every client of the open phases seen within a day reported a
/// result (so the brake has seen them: a soak that ends before the machines synced opens
/// nothing) and the failures are within the brake; `Finish` when the last
/// phase is open and every targeted client installed it. None: nothing to do now.
pub fn next_step(
    rollout: &RolloutRecord,
    progress: &Progress,
    tz: &TimeZone,
    now_ms: i64,
) -> Option<(RolloutStep, String)> {
    match rollout.state {
        RolloutState::Scheduled => rollout
            .start_at_ms
            .is_none_or(|s| now_ms >= s)
            .then(|| (RolloutStep::Start, "start time reached".to_owned())),
        RolloutState::Running => {
            let failures = progress.failures.saturating_sub(rollout.failure_base);
            if failures > rollout.allowed_failures {
                return None;
            }
            let next = rollout.phase.checked_add(1)?;
            if (next as usize) < rollout.phases.len() {
                if progress.awaited_in_open_phases > 0 {
                    return None;
                }
                let windows = Windows::parse(&rollout.windows).ok()?;
                let soaked = windows.open_ms_between(tz, rollout.phase_opened_at_ms, now_ms);
                let soaked = u64::try_from(soaked).unwrap_or(0);
                (soaked >= rollout.soak_ms).then(|| {
                    let reason = format!(
                        "phase {} soaked {}, {failures} failures ({} allowed)",
                        rollout.phase + 1,
                        human_ms(soaked),
                        rollout.allowed_failures
                    );
                    (RolloutStep::OpenPhase(next), reason)
                })
            } else {
                (progress.targeted > 0 && progress.installed >= progress.targeted).then(|| {
                    let reason =
                        format!("every targeted client ({}) installed it", progress.targeted);
                    (RolloutStep::Finish, reason)
                })
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FailureLimit, Selector};

    fn record(state: RolloutState, phase: u32) -> RolloutRecord {
        RolloutRecord {
            deployment_id: "d-1".into(),
            selector: Selector {
                groups: vec!["all".into()],
                ..Selector::default()
            },
            phases: vec![10, 50, 100],
            soak_ms: 30 * 60_000,
            max_failures: FailureLimit::Count(1),
            windows: vec![],
            start_at_ms: None,
            state,
            phase,
            phase_opened_at_ms: 0,
            allowed_failures: 1,
            failure_base: 0,
            reason: String::new(),
            approved_by: None,
            uninstall: false,
        }
    }

    #[test]
    fn legal_steps_table() {
        use RolloutState as S;
        use RolloutStep as T;
        let abort = T::Abort { uninstall: true };
        // (state, phase, step, Ok(to) or Err)
        let cases: Vec<(S, u32, T, Option<S>)> = vec![
            (S::WaitingApproval, 0, T::Approve, Some(S::Running)),
            (S::WaitingApproval, 0, T::Start, None),
            (S::Running, 0, T::Approve, None),
            (S::Scheduled, 0, T::Start, Some(S::Running)),
            (S::Running, 0, T::Start, None),
            (S::Running, 0, T::Pause, Some(S::Paused)),
            (S::Scheduled, 0, T::Pause, Some(S::Paused)),
            (S::Halted, 0, T::Pause, None),
            (S::Paused, 0, T::Resume, Some(S::Running)),
            (S::Halted, 1, T::Resume, Some(S::Running)),
            (S::Running, 0, T::Resume, None),
            (S::Running, 0, T::OpenPhase(1), Some(S::Running)),
            (S::Running, 0, T::OpenPhase(2), None),
            (S::Running, 2, T::OpenPhase(3), None),
            (S::Paused, 0, T::OpenPhase(1), None),
            (S::Running, 2, T::Finish, Some(S::Done)),
            (S::Running, 1, T::Finish, None),
            (S::Done, 2, abort, Some(S::Aborted)),
            (S::WaitingApproval, 0, abort, Some(S::Aborted)),
            (S::Aborted, 0, abort, None),
            (S::Aborted, 0, T::Resume, None),
            (S::Done, 2, T::Pause, None),
        ];
        for (i, (state, phase, step, want)) in cases.into_iter().enumerate() {
            let got = step_target(&record(state, phase), step, 0);
            match want {
                Some(to) => assert_eq!(got, Ok(to), "case {i}"),
                None => assert_eq!(
                    got,
                    Err(format!("deployment d-1 is {state}: cannot {step}")),
                    "case {i}"
                ),
            }
        }
        let mut later = record(RolloutState::WaitingApproval, 0);
        later.start_at_ms = Some(100);
        assert_eq!(step_target(&later, T::Approve, 99), Ok(S::Scheduled));
        assert_eq!(step_target(&later, T::Approve, 100), Ok(S::Running));
    }

    #[test]
    fn same_person_table() {
        let cases = [
            ("admin:alice", "admin:alice", true),
            ("admin:alice", "console:alice", true),
            ("console:alice", "alice", true),
            ("admin:alice", "admin:bob", false),
            ("local-admin", "local-admin", true),
            ("local-admin", "admin:alice", false),
            ("admin:console:x", "console:x", false),
            ("admin:alice via node:2", "admin:alice", true),
            ("admin:alice via node:2", "console:alice via node:3", true),
            ("admin:alice via node:2", "admin:bob via node:2", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(same_person(a, b), want, "{a} {b}");
            assert_eq!(same_person(b, a), want, "{b} {a}");
        }
    }

    #[test]
    fn next_step_table() {
        let utc = TimeZone::UTC;
        let min = 60_000i64;
        let progress = |failures, targeted, installed| Progress {
            failures,
            targeted_in_open_phases: targeted,
            installed_in_open_phases: installed,
            awaited_in_open_phases: 0,
            targeted,
            installed,
        };
        let awaiting = |n| Progress {
            awaited_in_open_phases: n,
            ..progress(0, 2, 1)
        };
        let mut scheduled = record(RolloutState::Scheduled, 0);
        scheduled.start_at_ms = Some(1000);
        let mut halted_base = record(RolloutState::Running, 0);
        halted_base.failure_base = 2;
        let mut windowed = record(RolloutState::Running, 0);
        // 1970-01-01 was a Thursday: the only window opens at 01:00 for 10 minutes.
        windowed.windows = vec!["Thu 01:00-01:10".into()];
        windowed.soak_ms = 5 * min as u64;
        let last = record(RolloutState::Running, 2);
        // (record, progress, now, want)
        let cases: Vec<(RolloutRecord, Progress, i64, Option<RolloutStep>)> = vec![
            (scheduled.clone(), progress(0, 0, 0), 999, None),
            (
                scheduled.clone(),
                progress(0, 0, 0),
                1000,
                Some(RolloutStep::Start),
            ),
            (
                record(RolloutState::Running, 0),
                progress(0, 2, 0),
                29 * min,
                None,
            ),
            (
                record(RolloutState::Running, 0),
                progress(1, 2, 0),
                30 * min,
                Some(RolloutStep::OpenPhase(1)),
            ),
            // Soaked, but a client of the open phase that syncs has not reported yet.
            (
                record(RolloutState::Running, 0),
                awaiting(1),
                60 * min,
                None,
            ),
            // Over the brake: nothing (apply halts it on the report).
            (
                record(RolloutState::Running, 0),
                progress(2, 2, 0),
                60 * min,
                None,
            ),
            // Failures the operator saw at resume no longer count.
            (
                halted_base,
                progress(3, 2, 0),
                60 * min,
                Some(RolloutStep::OpenPhase(1)),
            ),
            (
                record(RolloutState::Paused, 0),
                progress(0, 2, 2),
                60 * min,
                None,
            ),
            (
                record(RolloutState::Halted, 0),
                progress(0, 2, 2),
                60 * min,
                None,
            ),
            // Only time inside the window soaks.
            (windowed.clone(), progress(0, 2, 0), 64 * min, None),
            (
                windowed.clone(),
                progress(0, 2, 0),
                65 * min,
                Some(RolloutStep::OpenPhase(1)),
            ),
            (last.clone(), progress(0, 5, 4), 60 * min, None),
            (
                last.clone(),
                progress(0, 5, 5),
                60 * min,
                Some(RolloutStep::Finish),
            ),
            (last, progress(0, 0, 0), 60 * min, None),
        ];
        for (i, (r, p, now, want)) in cases.into_iter().enumerate() {
            let got = next_step(&r, &p, &utc, now).map(|(s, _)| s);
            assert_eq!(got, want, "case {i}");
        }
        let (_, why) = next_step(
            &record(RolloutState::Running, 0),
            &progress(0, 2, 0),
            &utc,
            30 * min,
        )
        .unwrap_or((RolloutStep::Start, String::new()));
        assert_eq!(why, "phase 1 soaked 30m, 0 failures (1 allowed)");
    }
}
