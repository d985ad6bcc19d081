//! Health checks the agent runs at each sync and reports in its facts as `health`.
//!
//! The checks come from the effective configuration (signed bundles only: `agent.check.*` is
//! refused from `config set`): `agent.check.disk[.NAME] = "PATH PCT%"` fails when more than
//! PCT % of PATH's file system is used; `agent.check.service[.NAME] = "UNIT"` fails unless
//! `systemctl is-active` says active; `agent.check.cmd.NAME = "COMMAND"` fails unless
//! `sh -c COMMAND` exits 0; `agent.check.timeout` (default 10 s, at most 300 s) bounds each.
//! `plan` reads the keys (pure: a bad value becomes a failing check that names the key, never
//! an error), `run` runs them, `MAX_PARALLEL` at a time, each within the timeout, and returns
//! `{"NAME": {"ok": bool, "detail": "…"}}`. Details are stable between runs (no times, no
//! durations that vary), so unchanged results leave the facts' hash, and the upload, as it was.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

/// The prefix of every check key.
pub const PREFIX: &str = "agent.check.";
/// The timeout of each check when `agent.check.timeout` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `agent.check.timeout` taken.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// The most checks an agent runs; the rest are reported as one failing `checks` entry.
pub const MAX_CHECKS: usize = 32;
/// How many checks run at the same time.
pub const MAX_PARALLEL: usize = 4;
/// The longest detail kept (bytes, cut at a character boundary).
pub const DETAIL_BYTES: usize = 200;
/// Output of a command read at most (each of stdout and stderr); the rest is drained unread.
const OUTPUT_KEPT: usize = 4096;

/// What one check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Fails when more than `max_pct` % of `path`'s file system is used.
    Disk { path: String, max_pct: u8 },
    /// Fails unless `systemctl is-active --quiet UNIT` exits 0.
    Service { unit: String },
    /// Fails unless `sh -c COMMAND` exits 0 within the timeout.
    Cmd { command: String },
    /// A key or value that is not a check: reported failing with this detail.
    Invalid { detail: String },
}

/// The checks of a configuration, by name (sorted), and the timeout of each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub checks: Vec<(String, Check)>,
    pub timeout: Duration,
}

/// One check's result as the facts carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub ok: bool,
    pub detail: String,
}

impl Outcome {
    fn ok(detail: impl Into<String>) -> Outcome {
        Outcome {
            ok: true,
            detail: short(&detail.into()),
        }
    }
    fn failing(detail: impl Into<String>) -> Outcome {
        Outcome {
            ok: false,
            detail: short(&detail.into()),
        }
    }
}

/// The checks `config` declares. Pure.
pub fn plan(config: &BTreeMap<String, String>) -> Plan {
    let mut checks: BTreeMap<String, Check> = BTreeMap::new();
    let mut timeout = DEFAULT_TIMEOUT;
    for (key, value) in config.range(PREFIX.to_string()..) {
        let Some(rest) = key.strip_prefix(PREFIX) else {
            break;
        };
        if rest == "timeout" {
            match parse_timeout(value) {
                Ok(t) => timeout = t,
                Err(why) => {
                    checks.insert("timeout".into(), invalid(key, &why));
                }
            }
            continue;
        }
        let (kind, name) = match rest.split_once('.') {
            Some((kind, name)) => (kind, Some(name)),
            None => (rest, None),
        };
        let (name, check) = match (kind, name) {
            ("disk", name) => (
                name.map_or("disk".to_string(), |n| format!("disk.{n}")),
                parse_disk(value).unwrap_or_else(|why| invalid(key, &why)),
            ),
            ("service", name) => {
                let unit = value.trim();
                let check = parse_unit(unit).unwrap_or_else(|why| invalid(key, &why));
                let name = name.unwrap_or(if matches!(check, Check::Invalid { .. }) {
                    "?"
                } else {
                    unit
                });
                (format!("service.{name}"), check)
            }
            ("cmd", Some(name)) if !value.trim().is_empty() => (
                format!("cmd.{name}"),
                Check::Cmd {
                    command: value.clone(),
                },
            ),
            ("cmd", Some(name)) => (format!("cmd.{name}"), invalid(key, "no command")),
            ("cmd", None) => (
                "cmd".into(),
                invalid(key, "a command check needs a name: agent.check.cmd.NAME"),
            ),
            (_, _) => (
                rest.to_string(),
                invalid(key, "not a check (disk, service, cmd or timeout)"),
            ),
        };
        checks.insert(name, check);
    }
    let mut checks: Vec<(String, Check)> = checks.into_iter().collect();
    if checks.len() > MAX_CHECKS {
        let left = checks.len() - MAX_CHECKS;
        checks.truncate(MAX_CHECKS);
        checks.push((
            "checks".into(),
            Check::Invalid {
                detail: format!("{left} more checks than the {MAX_CHECKS} an agent runs: not run"),
            },
        ));
    }
    Plan { checks, timeout }
}

fn invalid(key: &str, why: &str) -> Check {
    Check::Invalid {
        detail: format!("{key}: {why}"),
    }
}

/// `agent.check.timeout`: a duration (`10s`, `2m`) from 1 s to `MAX_TIMEOUT`.
fn parse_timeout(value: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(value.trim())
        .map_err(|e| format!("{value:?} is not a duration like 10s ({e})"))?;
    if d < Duration::from_secs(1) || d > MAX_TIMEOUT {
        return Err(format!(
            "{value:?} is not between 1s and {}s",
            MAX_TIMEOUT.as_secs()
        ));
    }
    Ok(d)
}

/// `PATH PCT%`: an absolute path, then a whole percentage from 0 to 100 (`%` optional).
fn parse_disk(value: &str) -> Result<Check, String> {
    let value = value.trim();
    let Some((path, pct)) = value.rsplit_once(char::is_whitespace) else {
        return Err(format!("{value:?} is not \"PATH PCT%\" (e.g. \"/ 90%\")"));
    };
    let path = path.trim();
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not an absolute path"));
    }
    let max_pct = pct
        .strip_suffix('%')
        .unwrap_or(pct)
        .parse::<u8>()
        .ok()
        .filter(|p| *p <= 100)
        .ok_or_else(|| format!("{pct:?} is not a percentage from 0% to 100%"))?;
    Ok(Check::Disk {
        path: path.to_string(),
        max_pct,
    })
}

/// A systemd unit name: letters, digits and `@._:-\`, not starting with `-`.
fn parse_unit(unit: &str) -> Result<Check, String> {
    let fine = !unit.is_empty()
        && unit.len() <= 256
        && !unit.starts_with('-')
        && unit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@._:-\\".contains(c));
    if !fine {
        return Err(format!("{unit:?} is not a systemd unit name"));
    }
    Ok(Check::Service {
        unit: unit.to_string(),
    })
}

/// The file in the agent's state directory with the last sync's results (`agent status`).
pub const LAST_FILE: &str = "checks.json";

/// Keeps `health` (the last results; none: `{}`) in `dir/checks.json` for `agent status`,
/// rewritten (atomically) only when it changed.
pub fn save(dir: &Path, health: Option<&serde_json::Value>) -> std::io::Result<()> {
    let empty = serde_json::json!({});
    let bytes =
        serde_json::to_vec_pretty(health.unwrap_or(&empty)).map_err(std::io::Error::other)?;
    let path = dir.join(LAST_FILE);
    if std::fs::read(&path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    outpost_certs::write_public_file(&path, &bytes)
}

/// The results `save` kept, by check name; empty before the first sync that ran checks, or
/// when the file does not read as results.
pub fn last(dir: &Path) -> BTreeMap<String, LastResult> {
    std::fs::read(dir.join(LAST_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// One kept result, as `agent status` reads it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LastResult {
    pub ok: bool,
    #[serde(default)]
    pub detail: String,
}

/// Runs every check of `plan`, `MAX_PARALLEL` at a time, each bounded by its timeout; the
/// facts' `health` value. None when no check is configured.
pub async fn run(plan: &Plan) -> Option<serde_json::Value> {
    use futures::StreamExt;
    if plan.checks.is_empty() {
        return None;
    }
    let timeout = plan.timeout;
    let results: BTreeMap<String, Outcome> = futures::stream::iter(plan.checks.iter())
        .map(|(name, check)| async move { (name.clone(), run_one(check, timeout).await) })
        .buffer_unordered(MAX_PARALLEL)
        .collect()
        .await;
    serde_json::to_value(results).ok()
}

async fn run_one(check: &Check, timeout: Duration) -> Outcome {
    let secs = timeout.as_secs();
    match check {
        Check::Invalid { detail } => Outcome::failing(detail.clone()),
        Check::Disk { path, max_pct } => {
            let (p, max) = (path.clone(), *max_pct);
            let used = tokio::time::timeout(
                timeout,
                tokio::task::spawn_blocking(move || used_fraction(Path::new(&p))),
            )
            .await;
            match used {
                Err(_) => Outcome::failing(format!("{path}: no answer within {secs}s")),
                Ok(Err(e)) => Outcome::failing(format!("{path}: {e}")),
                Ok(Ok(Err(e))) => Outcome::failing(format!("{path}: {e}")),
                Ok(Ok(Ok(used))) => disk_outcome(path, used, max),
            }
        }
        Check::Service { unit } => {
            let mut cmd = tokio::process::Command::new("systemctl");
            cmd.args(["is-active", "--quiet", unit.as_str()]);
            match run_command(cmd, timeout).await {
                Ran::NotFound => Outcome::failing("systemctl not found"),
                Ran::Failed(e) => Outcome::failing(format!("running systemctl: {e}")),
                Ran::TimedOut => Outcome::failing(format!("{unit}: no answer within {secs}s")),
                Ran::Exited(Some(0), _) => Outcome::ok(format!("{unit} active")),
                Ran::Exited(_, _) => Outcome::failing(format!("{unit} not active")),
            }
        }
        Check::Cmd { command } => {
            let mut cmd = tokio::process::Command::new("sh");
            cmd.arg("-c").arg(command);
            match run_command(cmd, timeout).await {
                Ran::NotFound => Outcome::failing("sh not found"),
                Ran::Failed(e) => Outcome::failing(format!("running sh: {e}")),
                Ran::TimedOut => Outcome::failing(format!("killed after {secs}s")),
                Ran::Exited(Some(0), out) => Outcome::ok(out),
                Ran::Exited(Some(code), out) => {
                    Outcome::failing(said(&format!("exit {code}"), &out))
                }
                Ran::Exited(None, out) => Outcome::failing(said("killed by a signal", &out)),
            }
        }
    }
}

/// A disk check's result from the used share of the file system (`used` = used bytes,
/// total bytes): fails when more than `max_pct` % is used; the detail shows the percentage
/// (rounded down) only when failing, so a healthy disk's detail does not change. Pure.
fn disk_outcome(path: &str, used: (u64, u64), max_pct: u8) -> Outcome {
    let (used, total) = used;
    if total == 0 {
        return Outcome::failing(format!("{path}: the file system reports no size"));
    }
    let over = u128::from(used) * 100 > u128::from(max_pct) * u128::from(total);
    if over {
        let pct = u128::from(used) * 100 / u128::from(total);
        Outcome::failing(format!("{path}: {pct}% used, over {max_pct}%"))
    } else {
        Outcome::ok(format!("{path}: at most {max_pct}% used"))
    }
}

/// (used, total) bytes of the file system of `path`, used = total − available to users.
fn used_fraction(path: &Path) -> std::io::Result<(u64, u64)> {
    let (free, total) = crate::shared::process::fs_room(path)?;
    Ok((total - free, total))
}

/// How a command ended.
enum Ran {
    NotFound,
    Failed(std::io::Error),
    TimedOut,
    /// Its exit code (None: killed by a signal) and what it wrote (stdout, then stderr),
    /// trimmed to one short line.
    Exited(Option<i32>, String),
}

/// Runs `cmd` (stdin empty, stdout and stderr read up to `OUTPUT_KEPT` each) in its own
/// process group; past `timeout` the whole group is killed, so that a child it left behind
/// holding the output open does not keep the check waiting.
async fn run_command(mut cmd: tokio::process::Command, timeout: Duration) -> Ran {
    use tokio::io::AsyncRead;
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ran::NotFound,
        Err(e) => return Ran::Failed(e),
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Ran::Failed(std::io::Error::other("no output pipes"));
    };
    async fn drain(mut r: impl AsyncRead + Unpin) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let (mut kept, mut buf) = (Vec::new(), [0u8; 4096]);
        while let Ok(n @ 1..) = r.read(&mut buf).await {
            let room = OUTPUT_KEPT.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        kept
    }
    let pid = child.id();
    let all = async {
        let (out, err) = tokio::join!(drain(stdout), drain(stderr));
        (child.wait().await, out, err)
    };
    match tokio::time::timeout(timeout, all).await {
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) with a negative pid signals the process group the child
                // leads (`process_group(0)`); no memory is involved.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            Ran::TimedOut
        }
        Ok((Err(e), _, _)) => Ran::Failed(e),
        Ok((Ok(status), mut out, err)) => {
            out.extend_from_slice(&err);
            Ran::Exited(status.code(), String::from_utf8_lossy(&out).into_owned())
        }
    }
}

/// `what` and, when it said something, `: out`.
fn said(what: &str, out: &str) -> String {
    if out.trim().is_empty() {
        what.to_string()
    } else {
        format!("{what}: {out}")
    }
}

/// `text` on one line (whitespace runs become one space), trimmed, at most `DETAIL_BYTES`.
fn short(text: &str) -> String {
    let mut one = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.len() > DETAIL_BYTES {
        let mut cut = DETAIL_BYTES;
        while !one.is_char_boundary(cut) {
            cut -= 1;
        }
        one.truncate(cut);
    }
    one
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_plan_reads_the_check_keys_and_names_bad_ones() {
        let disk = |path: &str, max_pct| Check::Disk {
            path: path.into(),
            max_pct,
        };
        let bad = |d: &str| Check::Invalid { detail: d.into() };
        // (config, checks wanted by name, timeout)
        type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<(&'a str, Check)>, u64);
        let cases: Vec<Case> = vec![
            (vec![("agent.interval", "60")], vec![], 10),
            (
                vec![
                    ("agent.check.disk", "/ 90%"),
                    ("agent.check.disk.var", " /var/lib 80 "),
                    ("agent.check.service", "nginx.service"),
                    ("agent.check.service.db", "postgresql@15-main"),
                    ("agent.check.cmd.flag", "test -e /x"),
                    ("agent.check.timeout", "30s"),
                    ("agent.handler.install.deb", "dpkg -i"),
                ],
                vec![
                    (
                        "cmd.flag",
                        Check::Cmd {
                            command: "test -e /x".into(),
                        },
                    ),
                    ("disk", disk("/", 90)),
                    ("disk.var", disk("/var/lib", 80)),
                    (
                        "service.db",
                        Check::Service {
                            unit: "postgresql@15-main".into(),
                        },
                    ),
                    (
                        "service.nginx.service",
                        Check::Service {
                            unit: "nginx.service".into(),
                        },
                    ),
                ],
                30,
            ),
            (
                vec![
                    ("agent.check.disk", "90%"),
                    ("agent.check.disk.a", "relative 50%"),
                    ("agent.check.disk.b", "/ 101%"),
                    ("agent.check.service", "-x"),
                    ("agent.check.cmd", "true"),
                    ("agent.check.cmd.empty", "  "),
                    ("agent.check.bogus", "1"),
                    ("agent.check.timeout", "10m"),
                ],
                vec![
                    (
                        "bogus",
                        bad("agent.check.bogus: not a check (disk, service, cmd or timeout)"),
                    ),
                    (
                        "cmd",
                        bad("agent.check.cmd: a command check needs a name: agent.check.cmd.NAME"),
                    ),
                    ("cmd.empty", bad("agent.check.cmd.empty: no command")),
                    (
                        "disk",
                        bad("agent.check.disk: \"90%\" is not \"PATH PCT%\" (e.g. \"/ 90%\")"),
                    ),
                    (
                        "disk.a",
                        bad("agent.check.disk.a: \"relative\" is not an absolute path"),
                    ),
                    (
                        "disk.b",
                        bad("agent.check.disk.b: \"101%\" is not a percentage from 0% to 100%"),
                    ),
                    (
                        "service.?",
                        bad("agent.check.service: \"-x\" is not a systemd unit name"),
                    ),
                    (
                        "timeout",
                        bad("agent.check.timeout: \"10m\" is not between 1s and 300s"),
                    ),
                ],
                10,
            ),
        ];
        for (pairs, want, secs) in cases {
            let got = plan(&config(&pairs));
            let want: Vec<(String, Check)> =
                want.into_iter().map(|(n, c)| (n.to_string(), c)).collect();
            assert_eq!(got.checks, want, "{pairs:?}");
            assert_eq!(got.timeout, Duration::from_secs(secs), "{pairs:?}");
        }
    }

    #[test]
    fn more_checks_than_the_cap_are_one_failing_entry() {
        let pairs: Vec<(String, String)> = (0..40)
            .map(|n| (format!("agent.check.cmd.c{n:02}"), "true".to_string()))
            .collect();
        let got = plan(&pairs.into_iter().collect());
        assert_eq!(got.checks.len(), MAX_CHECKS + 1);
        assert_eq!(got.checks[MAX_CHECKS - 1].0, "cmd.c31");
        assert_eq!(
            got.checks[MAX_CHECKS],
            (
                "checks".to_string(),
                Check::Invalid {
                    detail: "8 more checks than the 32 an agent runs: not run".into()
                }
            )
        );
    }

    #[test]
    fn a_disk_fails_past_its_share() {
        // (used, total, max %, ok, detail)
        let cases = [
            ((50, 100), 90, true, "/: at most 90% used"),
            ((90, 100), 90, true, "/: at most 90% used"),
            ((901, 1000), 90, false, "/: 90% used, over 90%"),
            ((1, 1000), 0, false, "/: 0% used, over 0%"),
            ((0, 1000), 0, true, "/: at most 0% used"),
            ((1000, 1000), 100, true, "/: at most 100% used"),
            ((0, 0), 50, false, "/: the file system reports no size"),
            ((u64::MAX, u64::MAX), 99, false, "/: 100% used, over 99%"),
        ];
        for (used, max, ok, detail) in cases {
            let got = disk_outcome("/", used, max);
            assert_eq!(
                (got.ok, got.detail.as_str()),
                (ok, detail),
                "{used:?} {max}"
            );
        }
    }

    #[test]
    fn details_are_one_short_line() {
        assert_eq!(short("  a\n b\t\tc  "), "a b c");
        let long = "é".repeat(150);
        let got = short(&long);
        assert!(
            got.len() <= DETAIL_BYTES && got.len() >= DETAIL_BYTES - 1,
            "{}",
            got.len()
        );
        assert!(got.chars().all(|c| c == 'é'));
    }

    #[tokio::test]
    async fn checks_run_and_report_what_they_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flag = dir.path().join("flag");
        std::fs::write(&flag, b"x").expect("flag");
        let flag = flag.display().to_string();
        let plan = plan(&config(&[
            ("agent.check.cmd.absent", &format!("test ! -e {flag}")),
            ("agent.check.cmd.says", "echo one; echo two >&2; exit 3"),
            ("agent.check.cmd.fine", "echo all good"),
            ("agent.check.cmd.slow", "sleep 30 & sleep 30"),
            ("agent.check.disk.full", "/ 100%"),
            ("agent.check.disk.none", "/ 0%"),
            ("agent.check.timeout", "1s"),
        ]));
        let got = run(&plan).await.expect("checks");
        let want = serde_json::json!({
            "cmd.absent": {"ok": false, "detail": "exit 1"},
            "cmd.says": {"ok": false, "detail": "exit 3: one two"},
            "cmd.fine": {"ok": true, "detail": "all good"},
            "cmd.slow": {"ok": false, "detail": "killed after 1s"},
            "disk.full": {"ok": true, "detail": "/: at most 100% used"},
            "disk.none": {"ok": false, "detail": got["disk.none"]["detail"]},
        });
        assert_eq!(got, want);
        // Kept for `agent status`, read back the same.
        save(dir.path(), Some(&got)).expect("save");
        let kept = last(dir.path());
        assert_eq!(kept.len(), 6);
        assert_eq!(
            kept.get("cmd.says"),
            Some(&LastResult {
                ok: false,
                detail: "exit 3: one two".into()
            })
        );
        save(dir.path(), None).expect("save none");
        assert!(last(dir.path()).is_empty());
        assert!(
            got["disk.none"]["detail"]
                .as_str()
                .is_some_and(|d| d.ends_with("% used, over 0%")),
            "{got}"
        );
        assert_eq!(
            run(&Plan {
                checks: vec![],
                timeout: DEFAULT_TIMEOUT
            })
            .await,
            None
        );
    }
}
