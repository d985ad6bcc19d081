//! `outpost bench metrics-overhead`: what collecting `/metrics` costs the write path. Each
//! round starts two temporary three-node clusters of real `outpost serve` processes one after
//! the other, one with metrics on and one with `OUTPOST_METRICS=off` in its nodes'
//! environment (the order alternates from round to round: on/off, off/on, ...), runs the write
//! benchmark (`bench::write`, spread over every member) on each, and reports writes/s and
//! latency per mode and the ratio off/on of the mean writes/s. Same process, same run: on a
//! noisy machine the ratio means more than either figure.
//!
//! After each run every member's `/metrics` is read for `outpost_raft_commit_duration_seconds`:
//! the commits the cluster observed show that a mode took effect (the "off" cluster observes
//! none). The figures are summarized by the pure `summarize`, tested below.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use hyper::Method;
use serde::Serialize;

use crate::harness::bench::{WriteBench, WriteReport, write};
use crate::harness::localcluster::{LocalCluster, LocalOptions};
use crate::shared::client::{NO_BODY, local_client};
use crate::shared::datadir::DataDir;

pub struct OverheadBench {
    pub rounds: usize,
    pub seconds: u64,
    pub clients: usize,
    pub value_bytes: usize,
}

/// Whether a run's nodes collect metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    On,
    Off,
}

impl Mode {
    /// The environment of the nodes of a run in this mode.
    fn env(self) -> Vec<(String, String)> {
        match self {
            Mode::On => Vec::new(),
            Mode::Off => vec![("OUTPOST_METRICS".into(), "off".into())],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::On => "on",
            Mode::Off => "off",
        }
    }
}

/// The order of the two runs of round `round` (0-based): on first in even rounds, off first
/// in odd ones, so a drift of the machine over the bench weighs on both modes alike.
pub fn order(round: usize) -> [Mode; 2] {
    if round.is_multiple_of(2) {
        [Mode::On, Mode::Off]
    } else {
        [Mode::Off, Mode::On]
    }
}

/// One run: one fresh cluster, one write benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub round: usize,
    pub mode: Mode,
    pub writes_per_s: f64,
    pub writes: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Sum over the members of `outpost_raft_commit_duration_seconds_count` after the run;
    /// `None` when no member exposes that series.
    pub commits_observed: Option<u64>,
}

/// One mode over every round.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModeSummary {
    pub runs: usize,
    /// Mean of the runs' writes/s.
    pub writes_per_s: f64,
    /// Median of the runs' p50 and p99 latencies.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

#[derive(Debug, Serialize)]
pub struct OverheadReport {
    pub rounds: usize,
    pub seconds: u64,
    pub clients: usize,
    pub value_bytes: usize,
    /// "debug" or "release": the build of this binary (and so of the nodes).
    pub build: &'static str,
    pub on: ModeSummary,
    pub off: ModeSummary,
    /// off.writes_per_s / on.writes_per_s: above 1 by what collecting costs.
    pub ratio_off_on: f64,
    pub runs: Vec<Run>,
}

impl std::fmt::Display for OverheadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for r in &self.runs {
            let observed = match r.commits_observed {
                Some(n) => format!("{n} commits observed"),
                None => "no commit series".to_string(),
            };
            writeln!(
                f,
                "round {} metrics {:<3}: {:.0} writes/s ({} writes, {} errors), p50 {:.2} ms, p99 {:.2} ms; {observed}",
                r.round + 1,
                r.mode.name(),
                r.writes_per_s,
                r.writes,
                r.errors,
                r.p50_ms,
                r.p99_ms
            )?;
        }
        for (name, s) in [("on", &self.on), ("off", &self.off)] {
            writeln!(
                f,
                "metrics {name:<3}: {:.0} writes/s (mean of {} runs), p50 {:.2} ms, p99 {:.2} ms (medians), {} errors",
                s.writes_per_s, s.runs, s.p50_ms, s.p99_ms, s.errors
            )?;
        }
        write!(
            f,
            "ratio off/on {:.3} ({} clients, {} s per run, {} B values, {} build)",
            self.ratio_off_on, self.clients, self.seconds, self.value_bytes, self.build
        )
    }
}

pub async fn bench(opts: OverheadBench) -> Result<OverheadReport> {
    if opts.rounds == 0 || opts.seconds == 0 || opts.clients == 0 {
        bail!("--rounds, --seconds and --clients must be positive");
    }
    let exe = std::env::current_exe()?;
    let mut runs = Vec::new();
    for round in 0..opts.rounds {
        for mode in order(round) {
            let root = tempfile::Builder::new()
                .prefix("outpost-bench-metrics-")
                .tempdir()?;
            let local = LocalOptions {
                log_level: "warn".into(),
                env: mode.env(),
                ..LocalOptions::default()
            };
            let mut cluster = LocalCluster::start(root.path(), &exe, 3, local)
                .await
                .with_context(|| format!("starting the metrics-{} cluster", mode.name()))?;
            cluster.leader(Duration::from_secs(10)).await?;
            let report = write(
                &DataDir::new(&cluster.nodes[0].dir),
                WriteBench {
                    clients: opts.clients,
                    seconds: opts.seconds,
                    value_bytes: opts.value_bytes,
                },
            )
            .await
            .with_context(|| format!("the write load on the metrics-{} cluster", mode.name()))?;
            let commits_observed = commits_observed(&cluster).await?;
            let run = run_of(round, mode, &report, commits_observed);
            eprintln!(
                "round {} metrics {}: {:.0} writes/s",
                round + 1,
                mode.name(),
                run.writes_per_s
            );
            runs.push(run);
            for i in 0..cluster.nodes.len() {
                cluster.kill9(i);
            }
        }
    }
    let (on, off, ratio_off_on) = summarize(&runs);
    if runs
        .iter()
        .any(|r| r.mode == Mode::Off && r.commits_observed.is_some_and(|n| n > 0))
    {
        tracing::warn!(
            "the OUTPOST_METRICS=off nodes observed commits: they do not read the switch, both modes collected"
        );
    }
    Ok(OverheadReport {
        rounds: opts.rounds,
        seconds: opts.seconds,
        clients: opts.clients,
        value_bytes: opts.value_bytes,
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        on,
        off,
        ratio_off_on,
        runs,
    })
}

fn run_of(round: usize, mode: Mode, r: &WriteReport, commits_observed: Option<u64>) -> Run {
    Run {
        round,
        mode,
        writes_per_s: r.writes_per_s,
        writes: r.writes,
        errors: r.errors,
        p50_ms: r.p50_ms,
        p99_ms: r.p99_ms,
        commits_observed,
    }
}

/// The commits every member's `/metrics` counted (admin socket), `None` when none shows the
/// series.
async fn commits_observed(cluster: &LocalCluster) -> Result<Option<u64>> {
    let mut total = None;
    for node in &cluster.nodes {
        let body = local_client(&node.dir)
            .call_raw(Method::GET, "/metrics", NO_BODY)
            .await
            .with_context(|| format!("reading /metrics of {}", node.name))?;
        let text = String::from_utf8_lossy(&body);
        if let Some(n) = series_value(&text, "outpost_raft_commit_duration_seconds_count") {
            *total.get_or_insert(0) += n as u64;
        }
    }
    Ok(total)
}

/// The value of an unlabelled series in an OpenMetrics text.
fn series_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Per mode: the mean writes/s, the median p50 and p99; and the ratio off/on of the means
/// (0 when a mode has no run or no writes).
pub fn summarize(runs: &[Run]) -> (ModeSummary, ModeSummary, f64) {
    let of = |mode: Mode| {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.mode == mode).collect();
        let n = mine.len();
        let mean = if n == 0 {
            0.0
        } else {
            mine.iter().map(|r| r.writes_per_s).sum::<f64>() / n as f64
        };
        ModeSummary {
            runs: n,
            writes_per_s: mean,
            p50_ms: median(mine.iter().map(|r| r.p50_ms).collect()),
            p99_ms: median(mine.iter().map(|r| r.p99_ms).collect()),
            errors: mine.iter().map(|r| r.errors).sum(),
        }
    };
    let (on, off) = (of(Mode::On), of(Mode::Off));
    let ratio = if on.writes_per_s > 0.0 {
        off.writes_per_s / on.writes_per_s
    } else {
        0.0
    };
    (on, off, ratio)
}

/// The median (the mean of the middle two for an even count); 0 for none.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(round: usize, mode: Mode, wps: f64, p50: f64, p99: f64, errors: u64) -> Run {
        Run {
            round,
            mode,
            writes_per_s: wps,
            writes: wps as u64,
            errors,
            p50_ms: p50,
            p99_ms: p99,
            commits_observed: None,
        }
    }

    #[test]
    fn rounds_alternate_which_mode_goes_first() {
        let firsts: Vec<Mode> = (0..4).map(|r| order(r)[0]).collect();
        assert_eq!(firsts, [Mode::On, Mode::Off, Mode::On, Mode::Off]);
        for r in 0..4 {
            let o = order(r);
            assert_ne!(o[0], o[1], "round {r} runs both modes");
        }
    }

    #[test]
    fn summaries_take_the_mean_rate_and_median_latencies() {
        let runs = [
            run(0, Mode::On, 900.0, 5.0, 20.0, 0),
            run(0, Mode::Off, 1000.0, 4.0, 18.0, 1),
            run(1, Mode::Off, 1100.0, 6.0, 30.0, 0),
            run(1, Mode::On, 1100.0, 7.0, 40.0, 2),
            run(2, Mode::On, 1000.0, 6.0, 25.0, 0),
        ];
        let (on, off, ratio) = summarize(&runs);
        assert_eq!(
            on,
            ModeSummary {
                runs: 3,
                writes_per_s: 1000.0,
                p50_ms: 6.0,
                p99_ms: 25.0,
                errors: 2
            }
        );
        assert_eq!(
            off,
            ModeSummary {
                runs: 2,
                writes_per_s: 1050.0,
                p50_ms: 5.0,
                p99_ms: 24.0,
                errors: 1
            }
        );
        assert_eq!(ratio, 1.05);
        // No run of a mode: zeros, and no ratio.
        let (on, _, ratio) = summarize(&runs[1..2]);
        assert_eq!((on.runs, on.writes_per_s, ratio), (0, 0.0, 0.0));
    }

    #[test]
    fn the_commit_count_is_read_from_the_exposition() {
        let text = "# TYPE outpost_raft_commit_duration_seconds histogram\n\
            outpost_raft_commit_duration_seconds_sum 0.5\n\
            outpost_raft_commit_duration_seconds_count 42\n\
            outpost_raft_commit_duration_seconds_bucket{le=\"0.0001\"} 0\n";
        assert_eq!(
            series_value(text, "outpost_raft_commit_duration_seconds_count"),
            Some(42.0)
        );
        assert_eq!(series_value(text, "outpost_raft_commit_duration"), None);
        assert_eq!(series_value(text, "outpost_raft_term"), None);
    }
}
