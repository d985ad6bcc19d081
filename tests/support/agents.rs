//! Fleets of real `outpost agent` processes for the rollout tests: each agent has its own
//! state directory and runs with that directory as its working directory, so a handler from
//! signed config can keep its markers there (`./installed.txt`, `./fail-install`) and a test
//! can make one machine's handler fail by dropping a file into that machine's directory.
//!
//! Any `outpost` executable can run the agents (`Fleet::exe`): the mixed-version test runs
//! agents of the previous release.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use super::{local::enroll_agent, s};

/// One enrolled agent: its client id and its state directory.
#[derive(Debug, Clone)]
pub struct Agent {
    pub id: String,
    pub dir: PathBuf,
}

impl Agent {
    /// Whether the file `name` is in this agent's state directory.
    pub fn has(&self, name: &str) -> bool {
        self.dir.join(name).exists()
    }

    /// The lines of the file `name` in this agent's state directory (none if absent).
    pub fn lines(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(name))
            .map(|t| t.lines().map(String::from).collect())
            .unwrap_or_default()
    }
}

/// How agents are run: which executable, with what environment.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub exe: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Fleet {
    pub fn new(exe: &Path) -> Fleet {
        Fleet {
            exe: exe.to_path_buf(),
            env: Vec::new(),
        }
    }

    /// `outpost ARGS` in `cwd`; stdout, or an error naming the command with its stderr.
    pub fn run_in(&self, cwd: &Path, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.exe)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .env("RUST_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .with_context(|| format!("running {} {}", self.exe.display(), args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "outpost {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// Enrolls `n` agents under `root/NAME-i` with `token`, agent i at `servers[i % len]`
    /// (hostnames `NAME-i`), each followed by one `agent sync --once` (its inventory reaches
    /// the cluster and it pins the bundle trust).
    pub fn enroll(
        &self,
        root: &Path,
        name: &str,
        n: usize,
        token: &str,
        servers: &[String],
    ) -> Result<Vec<Agent>> {
        if servers.is_empty() {
            bail!("no server to enroll {name}-* with");
        }
        let mut agents = Vec::with_capacity(n);
        for i in 0..n {
            let host = format!("{name}-{i}");
            let dir = root.join(&host);
            std::fs::create_dir_all(&dir)?;
            let id = enroll_agent(
                |args| self.run_in(&dir, args),
                token,
                &servers[i % servers.len()],
                &dir,
                &["--hostname", &host],
            )?;
            let agent = Agent { id, dir };
            self.sync(&agent)?;
            agents.push(agent);
        }
        Ok(agents)
    }

    /// `outpost agent sync --once` of `a`, in its state directory; its stdout.
    pub fn sync(&self, a: &Agent) -> Result<String> {
        self.run_in(
            &a.dir,
            &["agent", "sync", "--once", "--state-dir", s(&a.dir)],
        )
        .with_context(|| format!("agent {}", a.id))
    }

    /// One sync of each of `agents`, in order; every stdout joined.
    pub fn sync_all<'a>(&self, agents: impl IntoIterator<Item = &'a Agent>) -> Result<String> {
        let mut all = String::new();
        for a in agents {
            all.push_str(&self.sync(a)?);
        }
        Ok(all)
    }

    /// `outpost agent install FILE` on `a` (a bundle from a file, no node).
    pub fn install_file(&self, a: &Agent, file: &Path) -> Result<String> {
        self.run_in(
            &a.dir,
            &["agent", "install", s(file), "--state-dir", s(&a.dir)],
        )
    }
}
