//! Test harness: a small site of hosts in Linux network namespaces (std + libc only).
//!
//! `Site::builder("name").hosts(3).build()` makes a bridge in its own namespace and N hosts,
//! each a namespace with `lo` up and a veth `eth0` to the bridge, an address from
//! 198.18.0.0/15 (host i gets 198.18.0.(i+1)/15), IPv6 off, and a 224.0.0.0/4 route on
//! `eth0` so multicast (mDNS) stays on the site. Nothing is created in the machine's own
//! namespace: every link is made with `ip -n <ns>`, so no traffic touches real interfaces.
//!
//! Code runs inside a host either as a process (`host.spawn`, `host.run`: `ip netns exec`) or
//! on a thread that entered the namespace (`host.enter(f)`: setns(2) then `f`; any thread `f`
//! creates inherits the namespace, e.g. an mdns-sd daemon). Dropping the `Site` (also while
//! unwinding from a panic) kills the processes it started or found in its namespaces (never
//! this test process) and deletes the namespaces, which removes their links.
//!
//! Faults for `tests/faults.rs`: a host's processes can be signalled (`signal`: SIGSTOP,
//! SIGCONT) or killed at once (`kill9`), and a host can drop, silently on arrival, what comes
//! from chosen addresses (`drop_from`: policy rules of type blackhole; `accept_all` undoes
//! them), which makes partitions of any shape with iproute2 alone.
//!
//! Without root or a working `ip netns`, `build()` returns `None` after printing why, or
//! panics when `CI` is set so a CI run cannot pass by skipping.
#![allow(dead_code)]

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Builder for a [`Site`].
pub struct SiteBuilder {
    label: String,
    hosts: usize,
}

/// A bridge and its hosts; torn down on drop.
pub struct Site {
    prefix: String,
    bridge_ns: String,
    hosts: Vec<Host>,
}

/// One host: a namespace with `eth0` on the site bridge.
pub struct Host {
    pub index: usize,
    pub ns: String,
    addr: Mutex<Ipv4Addr>,
    children: Mutex<Vec<Child>>,
    /// Sources whose packets this host drops (`drop_from`).
    dropped: Mutex<Vec<Ipv4Addr>>,
}

/// Prefix length of every host address (198.18.0.0/15).
pub const PREFIX_LEN: u8 = 15;

impl Site {
    /// Starts a builder; `label` (a few letters) appears in the namespace names.
    pub fn builder(label: &str) -> SiteBuilder {
        SiteBuilder {
            label: label
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(8)
                .collect(),
            hosts: 2,
        }
    }

    /// Host `i` (0-based).
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// All hosts.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The namespace holding the bridge `br0`.
    pub fn bridge_ns(&self) -> &str {
        &self.bridge_ns
    }
}

impl SiteBuilder {
    /// Number of hosts (default 2).
    pub fn hosts(mut self, n: usize) -> Self {
        self.hosts = n;
        self
    }

    /// Builds the site, or explains why it cannot (see the module doc for CI vs local).
    pub fn build(self) -> Option<Site> {
        match self.try_build() {
            Ok(site) => Some(site),
            Err(reason) => {
                let msg = format!("network-namespace test cannot run: {reason}");
                if std::env::var_os("CI").is_some() {
                    panic!("{msg} (CI is set, so this is a failure; run as root with iproute2)");
                }
                eprintln!("SKIP: {msg}");
                None
            }
        }
    }

    fn try_build(self) -> Result<Site, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".into());
        }
        remove_stale_namespaces();
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("opns-{}-{}-{}", std::process::id(), n, self.label);
        let mut site = Site {
            bridge_ns: format!("{prefix}-br"),
            prefix,
            hosts: Vec::new(),
        };
        // From here on `site` is dropped on any error, removing what was made so far.
        let br = site.bridge_ns.clone();
        ip(&["netns", "add", &br])?;
        ip(&["-n", &br, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &br,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        for i in 0..self.hosts {
            let ns = format!("{}-h{i}", site.prefix);
            let addr = Ipv4Addr::new(198, 18, 0, (i + 1) as u8);
            site.hosts.push(Host {
                index: i,
                ns: ns.clone(),
                addr: Mutex::new(addr),
                children: Mutex::new(Vec::new()),
                dropped: Mutex::new(Vec::new()),
            });
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            for key in ["all", "default"] {
                sysctl(&ns, &format!("net.ipv6.conf.{key}.disable_ipv6=1"))?;
            }
            let vb = format!("v{i}");
            ip(&[
                "-n", &br, "link", "add", &vb, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["-n", &br, "link", "set", &vb, "master", "br0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/{PREFIX_LEN}"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "multicast", "on", "up"])?;
            ip(&["-n", &ns, "route", "replace", "224.0.0.0/4", "dev", "eth0"])?;
        }
        Ok(site)
    }
}

impl Host {
    /// The host's current address.
    pub fn addr(&self) -> Ipv4Addr {
        *self.addr.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A command that runs `program` inside this host (`ip netns exec <ns> program`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }

    /// Starts `cmd` (from [`Host::command`]) in the background; it is killed when the site
    /// drops. Returns its pid.
    pub fn spawn(&self, mut cmd: Command) -> io::Result<u32> {
        let child = cmd.stdin(Stdio::null()).spawn()?;
        let pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
        Ok(pid)
    }

    /// Runs `cmd` to completion with captured output, killing it at `timeout`.
    pub fn run(&self, mut cmd: Command, timeout: Duration) -> io::Result<Output> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        // Read the pipes on threads so a chatty child cannot block on a full pipe.
        let out = child.stdout.take().map(read_to_end_thread);
        let err = child.stderr.take().map(read_to_end_thread);
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                break child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let join = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
            h.and_then(|h| h.join().ok()).unwrap_or_default()
        };
        Ok(Output {
            status,
            stdout: join(out),
            stderr: join(err),
        })
    }

    /// Sends SIGTERM to a process started by [`Host::spawn`], then SIGKILL if it has not
    /// exited within `grace`.
    pub fn stop(&self, pid: u32, grace: Duration) -> io::Result<()> {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pos) = children.iter().position(|c| c.id() == pid) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "not a child of this host",
            ));
        };
        let mut child = children.remove(pos);
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break,
            }
        }
        // Already exited between the checks is fine; the wait below reaps it either way.
        let _ = child.kill();
        child.wait().map(|_| ())
    }

    /// Sends `sig` (SIGSTOP, SIGCONT, ...) to a process started by [`Host::spawn`].
    pub fn signal(&self, pid: u32, sig: libc::c_int) -> io::Result<()> {
        let children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        if !children.iter().any(|c| c.id() == pid) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "not a child of this host",
            ));
        }
        // SAFETY: kill(2) on the pid of a child we have not reaped (it is still listed).
        if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Kills a process started by [`Host::spawn`] with SIGKILL, no clean stop (a stopped
    /// process dies too), and reaps it.
    pub fn kill9(&self, pid: u32) -> io::Result<()> {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pos) = children.iter().position(|c| c.id() == pid) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "not a child of this host",
            ));
        };
        let mut child = children.remove(pos);
        // Already exited is fine; the wait reaps it either way.
        let _ = child.kill();
        child.wait().map(|_| ())
    }

    /// Drops every IPv4 packet from `peer` when it arrives, silently, as a partition does:
    /// the sender sees no error, its packets are lost, TCP stalls. A `blackhole` policy rule
    /// matches arriving packets only if it comes before the `local` table, so the first call
    /// moves that lookup from preference 0 to 32000 (same order for everything else).
    pub fn drop_from(&self, peer: Ipv4Addr) -> io::Result<()> {
        let mut dropped = self.dropped.lock().unwrap_or_else(|e| e.into_inner());
        if dropped.contains(&peer) {
            return Ok(());
        }
        let e = io::Error::other;
        let rules = Command::new("ip")
            .args(["-n", &self.ns, "rule", "show", "pref", "0"])
            .output()?;
        if !String::from_utf8_lossy(&rules.stdout).trim().is_empty() {
            ip(&[
                "-n", &self.ns, "rule", "add", "pref", "32000", "lookup", "local",
            ])
            .map_err(e)?;
            ip(&["-n", &self.ns, "rule", "del", "pref", "0"]).map_err(e)?;
        }
        ip(&[
            "-n",
            &self.ns,
            "rule",
            "add",
            "pref",
            "100",
            "from",
            &format!("{peer}/32"),
            "blackhole",
        ])
        .map_err(e)?;
        dropped.push(peer);
        Ok(())
    }

    /// Accepts packets from every source again (undoes every [`Host::drop_from`]).
    pub fn accept_all(&self) -> io::Result<()> {
        let mut dropped = self.dropped.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(peer) = dropped.last() {
            ip(&[
                "-n",
                &self.ns,
                "rule",
                "del",
                "pref",
                "100",
                "from",
                &format!("{peer}/32"),
                "blackhole",
            ])
            .map_err(io::Error::other)?;
            dropped.pop();
        }
        Ok(())
    }

    /// Runs `f` on a new thread that has entered this host's network namespace, and returns
    /// its result. Threads that `f` starts stay in the namespace after it returns.
    pub fn enter<R, F>(&self, f: F) -> io::Result<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let file = std::fs::File::open(format!("/run/netns/{}", self.ns))?;
        std::thread::Builder::new()
            .name(format!("netns-{}", self.index))
            .spawn(move || {
                // SAFETY: setns(2) with an open namespace descriptor; affects this thread only.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                drop(file);
                Ok(f())
            })?
            .join()
            .map_err(|_| io::Error::other("closure panicked inside the namespace"))?
    }

    /// Cuts the host off the site (link down).
    pub fn cut(&self) -> io::Result<()> {
        ip(&["-n", &self.ns, "link", "set", "eth0", "down"]).map_err(io::Error::other)
    }

    /// Heals a cut host (link up, multicast route restored: link down removes it).
    pub fn heal(&self) -> io::Result<()> {
        ip(&["-n", &self.ns, "link", "set", "eth0", "up"]).map_err(io::Error::other)?;
        ip(&[
            "-n",
            &self.ns,
            "route",
            "replace",
            "224.0.0.0/4",
            "dev",
            "eth0",
        ])
        .map_err(io::Error::other)
    }

    /// Moves the host to `new` (as a DHCP lease change would): the old address goes, the new
    /// one comes, and the multicast route is restored.
    pub fn set_addr(&self, new: Ipv4Addr) -> io::Result<()> {
        let mut cur = self.addr.lock().unwrap_or_else(|e| e.into_inner());
        let e = io::Error::other;
        // Old first: in the same subnet the new address would be a secondary, and deleting
        // the primary deletes its secondaries too (promote_secondaries is off by default).
        ip(&[
            "-n",
            &self.ns,
            "addr",
            "del",
            &format!("{}/{PREFIX_LEN}", *cur),
            "dev",
            "eth0",
        ])
        .map_err(e)?;
        ip(&[
            "-n",
            &self.ns,
            "addr",
            "add",
            &format!("{new}/{PREFIX_LEN}"),
            "dev",
            "eth0",
        ])
        .map_err(e)?;
        ip(&[
            "-n",
            &self.ns,
            "route",
            "replace",
            "224.0.0.0/4",
            "dev",
            "eth0",
        ])
        .map_err(e)?;
        *cur = new;
        Ok(())
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        for h in &self.hosts {
            let mut children = h.children.lock().unwrap_or_else(|e| e.into_inner());
            for c in children.iter_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
            children.clear();
        }
        let mut all: Vec<&str> = self.hosts.iter().map(|h| h.ns.as_str()).collect();
        all.push(&self.bridge_ns);
        for ns in all {
            kill_namespace_pids(ns);
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Kills every process in `ns` except this one (our own threads may be in it via setns).
fn kill_namespace_pids(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    let me = std::process::id();
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<u32>()
            && pid != me
            && pid > 1
        {
            // SAFETY: kill(2) on a pid listed in a namespace this site created.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

/// Deletes `opns-<pid>-...` namespaces left by test processes that no longer exist
/// (killed before their Drop ran).
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix("opns-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            kill_namespace_pids(name);
            let _ = ip(&["netns", "del", name]);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn sysctl(ns: &str, setting: &str) -> Result<(), String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-qw", setting])
        .output()
        .map_err(|e| format!("running sysctl in {ns}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "sysctl {setting} in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn read_to_end_thread<R: io::Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}
