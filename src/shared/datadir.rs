//! A node's data directory: its layout, its config file, its identity files, and the checks
//! run before anything is served from it.
//!
//! ```text
//! D/            mode 0700
//!   node.toml   this node's settings (format-versioned)
//!   ca.crt      cluster CA certificate          ca.key    CA private key (0600)
//!   node.crt    this node's certificate         node.key  its private key (0600)
//!   raft.db     Raft log and vote               state.db  replicated state
//!   snapshots/  Raft snapshots                  admin.sock local admin socket (0600)
//!   node.lock   held while the node runs (and by offline commands such as recover)
//! ```

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Version of `node.toml`'s layout.
pub const NODE_CONFIG_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub format: u32,
    pub cluster_id: String,
    pub node_id: u64,
    pub name: String,
    pub api_addr: String,
    pub peer_addr: String,
    /// Where the API listens, when not on `api_addr` (e.g. `0.0.0.0:7443`, so a DHCP change of
    /// the advertised address does not stop the node). Absent = `api_addr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_listen: Option<String>,
    /// Where the Raft peer transport listens, when not on `peer_addr`. Absent = `peer_addr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_listen: Option<String>,
    #[serde(default)]
    pub raft: outpost_raft::RaftTuning,
    /// `[discovery]`: mDNS on/off, interface allow-list, static peers. Absent = mDNS on, no
    /// static peers (files written before discovery existed load unchanged).
    #[serde(default)]
    pub discovery: outpost_discovery::DiscoveryConfig,
    /// `[cluster]`: cluster-wide behaviour this node applies when it leads. Absent = all off
    /// (files written before it existed load unchanged).
    #[serde(default, skip_serializing_if = "ClusterConfig::is_default")]
    pub cluster: ClusterConfig,
    /// `[backup]`: this node's scheduled backups. Absent = none (files written before it
    /// existed load unchanged). The running node re-reads it (`node::backups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSchedule>,
}

/// `[backup]` of node.toml: every `every`, the node writes a backup of the replicated state
/// into `dir` and keeps the newest `keep` of its own there; with `passphrase_file` the CA key
/// is sealed into each (as `outpost backup --passphrase-file`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSchedule {
    /// Humantime text in the file (`"6h"`), at least [`BackupSchedule::MIN_EVERY`].
    #[serde(with = "humantime_every")]
    pub every: Duration,
    pub keep: u32,
    pub dir: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase_file: Option<PathBuf>,
}

impl BackupSchedule {
    /// Shortest interval taken: each backup copies the whole state.
    pub const MIN_EVERY: Duration = Duration::from_secs(10);
    /// Most backups kept.
    pub const MAX_KEEP: u32 = 1000;

    /// Checks the values alone (not the directory or the passphrase file: `outpost backup
    /// schedule` checks those where it runs).
    pub fn check(&self) -> Result<()> {
        if self.every < Self::MIN_EVERY {
            bail!(
                "backup every {} is shorter than the minimum {}",
                humantime::format_duration(self.every),
                humantime::format_duration(Self::MIN_EVERY)
            );
        }
        if !(1..=Self::MAX_KEEP).contains(&self.keep) {
            bail!(
                "backup keep {} is not between 1 and {}",
                self.keep,
                Self::MAX_KEEP
            );
        }
        if !self.dir.is_absolute() {
            bail!("backup dir {} is not an absolute path", self.dir.display());
        }
        Ok(())
    }
}

/// `every` of `[backup]`: humantime text.
mod humantime_every {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not a duration like \"6h\": {e}"))
        })
    }
}

/// `[cluster]` of node.toml.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// As leader, remove a member that has not answered for this long (humantime, e.g.
    /// `"30m"`), if the voters left keep a quorum and at least three of them; absent = never.
    #[serde(with = "humantime_opt", skip_serializing_if = "Option::is_none")]
    pub auto_remove_after: Option<Duration>,
}

impl ClusterConfig {
    /// Shortest `auto_remove_after` taken: under a second, a member would be removed for a
    /// hiccup between heartbeats.
    pub const MIN_AUTO_REMOVE_AFTER: Duration = Duration::from_secs(1);

    fn is_default(&self) -> bool {
        *self == ClusterConfig::default()
    }

    /// Checks a duration for `auto_remove_after`.
    pub fn check_auto_remove_after(d: Duration) -> Result<Duration> {
        if d < Self::MIN_AUTO_REMOVE_AFTER {
            bail!(
                "auto_remove_after {} is shorter than {}",
                humantime::format_duration(d),
                humantime::format_duration(Self::MIN_AUTO_REMOVE_AFTER)
            );
        }
        Ok(d)
    }
}

/// An optional duration written as humantime text (`"30m"`, `"1h 30m"`).
mod humantime_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        let d = humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not a duration like \"30m\": {e}"))
        })?;
        super::ClusterConfig::check_auto_remove_after(d)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

impl NodeFile {
    /// The address the API binds.
    pub fn api_listen(&self) -> &str {
        self.api_listen.as_deref().unwrap_or(&self.api_addr)
    }

    /// The address the peer transport binds.
    pub fn peer_listen(&self) -> &str {
        self.peer_listen.as_deref().unwrap_or(&self.peer_addr)
    }
}

#[derive(Debug, Clone)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: &Path) -> DataDir {
        DataDir {
            root: root.to_path_buf(),
        }
    }

    pub fn node_file(&self) -> PathBuf {
        self.root.join("node.toml")
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca.key")
    }
    pub fn node_cert(&self) -> PathBuf {
        self.root.join("node.crt")
    }
    pub fn node_key(&self) -> PathBuf {
        self.root.join("node.key")
    }
    /// The content-addressed blob store (bundle payloads).
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join("admin.sock")
    }

    /// Held (an exclusive `flock`) by the process that runs the node or changes it offline.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("node.lock")
    }

    /// Takes the directory's lock, or says that a node (or another offline command) holds it.
    /// The lock ends when the returned file is dropped, or when the process dies.
    pub fn lock(&self) -> Result<std::fs::File> {
        let path = self.lock_file();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "the node of {} is running (another process holds {}); stop it first",
                self.root.display(),
                path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }

    pub fn is_initialised(&self) -> bool {
        self.node_file().exists()
    }

    /// Creates the directory (0700) for `init`/`join`; refuses one that already holds a node.
    pub fn create(&self) -> Result<()> {
        if self.is_initialised() {
            bail!(
                "data dir {} is already initialised (it holds node.toml); use a new directory or serve this one",
                self.root.display()
            );
        }
        if self.root.exists() {
            self.check_owner()?;
        }
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("creating data dir {}", self.root.display()))?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting mode 0700 on {}", self.root.display()))?;
        Ok(())
    }

    /// Refuses a data directory owned by another user: files this process created there (a
    /// blob, a database's WAL) would be unreadable for the node, which runs as the owner.
    pub fn check_owner(&self) -> Result<()> {
        let meta = std::fs::metadata(&self.root)
            .with_context(|| format!("reading {}", self.root.display()))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if meta.uid() != euid {
            bail!(
                "data dir {} is owned by uid {}, not by this user (uid {euid}): run the command as \
                 its owner (a packaged node: runuser -u outpost -- outpost ...)",
                self.root.display(),
                meta.uid()
            );
        }
        Ok(())
    }

    /// The checks before serving: directory mode 0700 owned by us, private keys 0600.
    pub fn check(&self) -> Result<()> {
        if !self.is_initialised() {
            bail!(
                "{} is not an Outpost data dir (no node.toml): run `outpost init` or `outpost join` first",
                self.root.display()
            );
        }
        let meta = std::fs::metadata(&self.root)
            .with_context(|| format!("reading {}", self.root.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "data dir {} has mode {mode:o}; it must be 0700 (chmod 700 {})",
                self.root.display(),
                self.root.display()
            );
        }
        self.check_owner()?;
        for key in [self.ca_key(), self.node_key()] {
            let m =
                std::fs::metadata(&key).with_context(|| format!("reading {}", key.display()))?;
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                bail!(
                    "private key {} has mode {mode:o}; it must be 0600",
                    key.display()
                );
            }
        }
        Ok(())
    }

    pub fn load_node_file(&self) -> Result<NodeFile> {
        let path = self.node_file();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let file: NodeFile =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if file.format > NODE_CONFIG_FORMAT {
            bail!(
                "{} has format {}, this outpost reads format {NODE_CONFIG_FORMAT}: upgrade outpost",
                path.display(),
                file.format
            );
        }
        if let Some(b) = &file.backup {
            b.check()
                .with_context(|| format!("{}: [backup]", path.display()))?;
        }
        Ok(file)
    }

    pub fn save_node_file(&self, file: &NodeFile) -> Result<()> {
        let text = toml::to_string_pretty(file).context("encoding node.toml")?;
        outpost_certs::write_public_file(&self.node_file(), text.as_bytes())
            .with_context(|| format!("writing {}", self.node_file().display()))
    }

    pub fn read(&self, path: &Path) -> Result<String> {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_data_dir_of_another_user_is_refused_for_writing() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let dd = DataDir::new(&tmp.path().join("d"));
        std::fs::create_dir(&dd.root)?;
        dd.check_owner()?;
        // Only root can give the directory to someone else; elsewhere the check above is all.
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipped the other-owner case: not root");
            return Ok(());
        }
        std::os::unix::fs::chown(&dd.root, Some(54_321), Some(54_321))?;
        let err = dd
            .check_owner()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("owned by uid 54321") && err.contains("runuser"),
            "{err}"
        );
        let err = dd.create().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("owned by uid 54321"), "create: {err}");
        Ok(())
    }
    use super::*;

    #[test]
    fn node_toml_without_discovery_still_loads_and_round_trips() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let dd = DataDir::new(dir.path());
        // A node.toml written before `[discovery]` and the listen addresses existed.
        std::fs::write(
            dd.node_file(),
            "format = 1\ncluster_id = \"c\"\nnode_id = 2\nname = \"n2\"\napi_addr = \"10.0.0.2:7443\"\npeer_addr = \"10.0.0.2:7444\"\n",
        )?;
        let file = dd.load_node_file()?;
        assert_eq!(
            file.discovery,
            outpost_discovery::DiscoveryConfig::default()
        );
        assert_eq!(file.api_listen(), "10.0.0.2:7443");
        assert_eq!(file.peer_listen(), "10.0.0.2:7444");

        let written = NodeFile {
            api_listen: Some("0.0.0.0:7443".into()),
            discovery: outpost_discovery::DiscoveryConfig {
                mdns: false,
                interfaces: vec!["eth1".into()],
                peers: vec!["10.0.0.1:7443".into()],
            },
            ..file
        };
        dd.save_node_file(&written)?;
        let back = dd.load_node_file()?;
        assert_eq!(back.api_listen(), "0.0.0.0:7443");
        assert_eq!(back.peer_listen(), "10.0.0.2:7444");
        assert_eq!(back.discovery, written.discovery);
        assert_eq!(back.cluster, ClusterConfig::default());
        assert!(
            !std::fs::read_to_string(dd.node_file())?.contains("[cluster]"),
            "an unset [cluster] is not written"
        );
        Ok(())
    }

    #[test]
    fn backup_schedule_is_optional_humantime_and_checked() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let dd = DataDir::new(dir.path());
        let base = "format = 1\ncluster_id = \"c\"\nnode_id = 2\nname = \"n2\"\napi_addr = \"10.0.0.2:7443\"\npeer_addr = \"10.0.0.2:7444\"\n";
        std::fs::write(dd.node_file(), base)?;
        let file = dd.load_node_file()?;
        assert_eq!(file.backup, None);
        dd.save_node_file(&file)?;
        assert!(!std::fs::read_to_string(dd.node_file())?.contains("[backup]"));

        let with = NodeFile {
            backup: Some(BackupSchedule {
                every: Duration::from_secs(6 * 3600),
                keep: 14,
                dir: "/srv/backups".into(),
                passphrase_file: Some("/etc/outpost/pass".into()),
            }),
            ..file
        };
        dd.save_node_file(&with)?;
        let text = std::fs::read_to_string(dd.node_file())?;
        assert!(
            text.contains("[backup]\nevery = \"6h\"\nkeep = 14"),
            "{text}"
        );
        assert_eq!(dd.load_node_file()?.backup, with.backup);

        let cases = [
            (
                "every = \"5s\"\nkeep = 3\ndir = \"/b\"",
                "shorter than the minimum 10s",
            ),
            (
                "every = \"30s\"\nkeep = 0\ndir = \"/b\"",
                "keep 0 is not between 1 and 1000",
            ),
            ("every = \"30s\"\nkeep = 1001\ndir = \"/b\"", "keep 1001"),
            (
                "every = \"30s\"\nkeep = 3\ndir = \"b\"",
                "not an absolute path",
            ),
            ("every = \"soon\"\nkeep = 3\ndir = \"/b\"", "not a duration"),
            (
                "every = \"30s\"\nkeep = 3\ndir = \"/b\"\nextra = 1",
                "unknown field",
            ),
        ];
        for (table, want) in cases {
            std::fs::write(dd.node_file(), format!("{base}[backup]\n{table}\n"))?;
            let err = dd
                .load_node_file()
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
            assert!(err.contains(want), "{table}: {err}");
        }
        Ok(())
    }

    #[test]
    fn cluster_auto_remove_after_is_humantime_and_checked() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let dd = DataDir::new(dir.path());
        let base = "format = 1\ncluster_id = \"c\"\nnode_id = 2\nname = \"n2\"\napi_addr = \"10.0.0.2:7443\"\npeer_addr = \"10.0.0.2:7444\"\n";
        std::fs::write(
            dd.node_file(),
            format!("{base}[cluster]\nauto_remove_after = \"30m\"\n"),
        )?;
        let file = dd.load_node_file()?;
        assert_eq!(
            file.cluster.auto_remove_after,
            Some(Duration::from_secs(1800))
        );
        dd.save_node_file(&file)?;
        let text = std::fs::read_to_string(dd.node_file())?;
        assert!(
            text.contains("[cluster]\nauto_remove_after = \"30m\""),
            "{text}"
        );
        assert_eq!(dd.load_node_file()?.cluster, file.cluster);
        for bad in ["\"soon\"", "\"0s\"", "\"500ms\"", "30"] {
            std::fs::write(
                dd.node_file(),
                format!("{base}[cluster]\nauto_remove_after = {bad}\n"),
            )?;
            assert!(dd.load_node_file().is_err(), "{bad} was taken");
        }
        Ok(())
    }
}
