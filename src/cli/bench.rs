//! `outpost bench`: the benchmark commands; the benchmarks themselves are
//! `crate::harness::bench`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use outpost_raft::RaftTuning;

use super::DataDirArg;
use crate::shared::datadir::DataDir;

#[derive(Subcommand, Debug)]
pub(super) enum BenchCmd {
    /// Replicated writes/s through the API port (mTLS), spread over every member.
    Write {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 1024)]
        value_bytes: usize,
        #[arg(long)]
        json: bool,
    },
    /// Writes/s without and then under an anonymous flood (enrollment requests of ~64 KiB and
    /// idle anonymous TLS connections against every member), and raft.db growth during a
    /// window of flood alone; one run, so the ratio compares like with like.
    Flood {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 1024)]
        value_bytes: usize,
        #[arg(long, default_value_t = 200)]
        enroll_per_s: u32,
        #[arg(long, default_value_t = 3000)]
        idle: usize,
        /// Source address of the flood (e.g. 127.0.0.2 against a loopback cluster).
        #[arg(long)]
        from: Option<std::net::IpAddr>,
        /// Instead of the anonymous enrollment flood, one attack of an identity class
        /// (issue 20's list); prints every member's memory and open descriptors before, at
        /// the peak and `--after` seconds after the attack.
        #[arg(long, value_enum)]
        attack: Option<crate::harness::attacks::Attack>,
        /// Connections (sign-in attempts for `signin`) of `--attack`; default per attack:
        /// bodies 160, signin 1000, peer-frames 20, peer-conns 19000, revoked-conns 4200,
        /// reports 8 (concurrent reporters).
        #[arg(long)]
        size: Option<usize>,
        /// Seconds after an `--attack` before the members are sampled again.
        #[arg(long, default_value_t = 60)]
        after: u64,
        #[arg(long)]
        json: bool,
    },
    /// Simulated agents syncing as `outpost agent run` does: each enrolled with its own
    /// certificate, and each sync a new TLS connection (full handshake with that
    /// certificate) carrying the requests of a sync in which nothing changed (configuration,
    /// bundle trust, assignments), then closed; nothing is held open between syncs. Prints
    /// syncs/s, whole-sync latency and each node's largest resident memory during the run.
    /// Against a loopback cluster each agent connects from its own address (127.16.0.1 on).
    /// Run the nodes with OUTPOST_ENROLL_RATE=5000 for large fleets (the enrollments of a
    /// whole fleet at once pass the cluster-wide enroll rate limit).
    Sync {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Each agent syncs once per interval; 0s = as fast as it can.
        #[arg(long, default_value = "0s")]
        interval: humantime::Duration,
        #[arg(long)]
        json: bool,
    },
    /// A bundle of --size-mib MiB: `outpost bundle import` time as a ratio to `sha256sum` of
    /// the same file, and the time until all three nodes of a temporary cluster hold it.
    Bundle {
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
        /// Where the bundle and the temporary cluster live (a disk, not tmpfs).
        #[arg(long, default_value = ".")]
        work_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Backup and restore times for a state with --clients enrolled clients, on a temporary
    /// three-node cluster (backup from a follower with the CA key sealed, restore into a new
    /// data directory, first write on the restored node).
    Backup {
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        #[arg(long)]
        json: bool,
    },
    /// On a temporary node whose audit log is grown to each of --records: the time of `audit
    /// verify` (incremental, from the node's verified mark), `audit verify --full` and the
    /// console's Audit page, per count and as ratios.
    Audit {
        #[arg(long, value_delimiter = ',', default_value = "1000,1000000")]
        records: Vec<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Time a follower takes to render console pages (the clients list: first and last page,
    /// a search, a group; the overview; the audit log) with --clients enrolled clients, on a
    /// temporary three-node cluster.
    Console {
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        /// Requests per page (the median and the maximum are printed).
        #[arg(long, default_value_t = 20)]
        runs: usize,
        #[arg(long)]
        json: bool,
    },
    /// On a temporary three-node cluster with --clients enrolled clients: the API's time to
    /// answer `deployment plan` (every client) and `deployment status` (a running rollout
    /// over every client), and the time from create to done of a rollout
    /// `--phases 10%,50%,100% --soak 0s` to simulated agents (each its own certificate:
    /// sync, download, report installed): every client, or --agents of them.
    Rollout {
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        /// Clients that act as agents in the timed rollout (default: all of them); the others
        /// are left out of it and count only for plan and status.
        #[arg(long)]
        agents: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// What collecting metrics costs the write path: each round starts a temporary
    /// three-node cluster with metrics on and one with OUTPOST_METRICS=off (the order
    /// alternates), runs the write benchmark on each, and prints writes/s and p50/p99 per
    /// mode and the ratio off/on (same run: compare the ratio on a noisy machine).
    MetricsOverhead {
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 1024)]
        value_bytes: usize,
        #[arg(long)]
        json: bool,
    },
    /// A site of --clients clients through --years simulated years on a temporary
    /// three-node cluster, time compressed (one simulated year = --year-secs real seconds,
    /// every rate and policy scaled alike): inventory changes, monthly rollouts with every
    /// client's result, daily configuration changes, sampled agent syncs, scheduled backups
    /// and retention. Prints one row a year: state.db and raft.db size, audit records,
    /// `audit verify` and Audit-page time, backup time and size, a new node's catch-up and a
    /// follower's restart-to-ready time.
    Years {
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        #[arg(long, default_value_t = 5)]
        years: u64,
        /// Real seconds one simulated year lasts.
        #[arg(long, default_value_t = crate::harness::bench::years::DEFAULT_YEAR_SECS)]
        year_secs: f64,
        #[arg(long)]
        json: bool,
    },
    /// Milliseconds from kill -9 of the leader to a write accepted by a survivor, on a
    /// temporary three-node cluster of real `outpost serve` processes.
    Failover {
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Heartbeat interval of the temporary nodes, in ms.
        #[arg(long, default_value_t = RaftTuning::default().heartbeat_ms)]
        heartbeat_ms: u64,
        /// Election timeout range of the temporary nodes, MIN-MAX in ms.
        #[arg(long, default_value = "150-300")]
        election_timeout_ms: String,
        #[arg(long)]
        json: bool,
    },
}

/// A benchmark's figures: one JSON line with `--json`, else its text.
fn print_report(report: &(impl serde::Serialize + std::fmt::Display), json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}

pub(super) async fn run(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Write {
            dir,
            clients,
            seconds,
            value_bytes,
            json,
        } => {
            let opts = crate::harness::bench::WriteBench {
                clients,
                seconds,
                value_bytes,
            };
            let report = crate::harness::bench::write(&DataDir::new(&dir.data_dir), opts).await?;
            print_report(&report, json)?;
        }
        BenchCmd::Flood {
            dir,
            clients,
            seconds,
            value_bytes,
            enroll_per_s,
            idle,
            from,
            attack,
            size,
            after,
            json,
        } => {
            if let Some(attack) = attack {
                let opts = crate::harness::attacks::AttackBench {
                    write: crate::harness::bench::WriteBench {
                        clients,
                        seconds,
                        value_bytes,
                    },
                    attack,
                    size,
                    after_secs: after,
                };
                let report =
                    crate::harness::attacks::attack(&DataDir::new(&dir.data_dir), opts).await?;
                return print_report(&report, json);
            }
            let opts = crate::harness::flood::FloodBench {
                write: crate::harness::bench::WriteBench {
                    clients,
                    seconds,
                    value_bytes,
                },
                enroll_per_s,
                idle,
                from,
            };
            let report = crate::harness::flood::flood(&DataDir::new(&dir.data_dir), opts).await?;
            print_report(&report, json)?;
        }
        BenchCmd::Audit { records, json } => {
            let report = crate::harness::bench::audit::bench(records).await?;
            print_report(&report, json)?;
        }
        BenchCmd::Console {
            clients,
            runs,
            json,
        } => {
            let report = crate::harness::bench::console::bench(clients, runs).await?;
            print_report(&report, json)?;
        }
        BenchCmd::Rollout {
            clients,
            agents,
            json,
        } => {
            let opts = crate::harness::bench::rollout::RolloutBench {
                clients,
                agents: agents.unwrap_or(clients),
            };
            let report = crate::harness::bench::rollout::bench(opts).await?;
            print_report(&report, json)?;
        }
        BenchCmd::Backup { clients, json } => {
            let report = crate::harness::bench::backup::backup(clients).await?;
            print_report(&report, json)?;
        }
        BenchCmd::MetricsOverhead {
            rounds,
            seconds,
            clients,
            value_bytes,
            json,
        } => {
            let opts = crate::harness::bench::metrics_overhead::OverheadBench {
                rounds,
                seconds,
                clients,
                value_bytes,
            };
            let report = crate::harness::bench::metrics_overhead::bench(opts).await?;
            print_report(&report, json)?;
        }
        BenchCmd::Years {
            clients,
            years,
            year_secs,
            json,
        } => {
            let opts = crate::harness::bench::years::YearsBench {
                clients,
                years,
                year_secs,
            };
            let report = crate::harness::bench::years::bench(opts).await?;
            print_report(&report, json)?;
        }
        BenchCmd::Failover {
            runs,
            heartbeat_ms,
            election_timeout_ms,
            json,
        } => {
            let node_args = vec![
                "--heartbeat-ms".to_string(),
                heartbeat_ms.to_string(),
                "--election-timeout-ms".to_string(),
                election_timeout_ms,
            ];
            let report = crate::harness::bench::failover(runs, node_args).await?;
            print_report(&report, json)?;
        }
        BenchCmd::Sync {
            dir,
            clients,
            seconds,
            interval,
            json,
        } => {
            let opts = crate::harness::bench::SyncBench {
                clients,
                seconds,
                interval: interval.into(),
            };
            let report = crate::harness::bench::sync(&DataDir::new(&dir.data_dir), opts).await?;
            print_report(&report, json)?;
        }
        BenchCmd::Bundle {
            size_mib,
            work_dir,
            json,
        } => {
            let report = crate::harness::bench::bundle(size_mib, &work_dir).await?;
            print_report(&report, json)?;
        }
    }
    Ok(())
}
