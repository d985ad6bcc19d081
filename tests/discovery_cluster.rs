//! Discovery through the real binary, across network namespaces: hosts of a `Site` run
//! `outpost init` / `join` / `serve` / `discover` with no `--peer` anywhere; mDNS never leaves
//! the site's namespaces. Without root the tests print why and return (and fail when `CI` is
//! set, see the harness). Tests in this file run one at a time.

mod support;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use outpost::shared::token::Token;
use outpost_discovery::{Discovery, DiscoveryConfig};
use serde_json::Value;
use support::netns::{Host, Site};
use support::site::{API_PORT, PEER_PORT, run_on, spawn_serve, tail, wait_answers};
use support::{serial, stdout_of, wait_for};

/// One node: a host of the site and a data directory.
struct Node<'a> {
    host: &'a Host,
    dir: PathBuf,
    log: PathBuf,
    name: String,
    pid: Option<u32>,
}

impl<'a> Node<'a> {
    fn new(host: &'a Host, root: &Path, name: &str) -> Self {
        Node {
            host,
            dir: root.join(name),
            log: root.join(format!("{name}.log")),
            name: name.to_string(),
            pid: None,
        }
    }

    fn dir(&self) -> &str {
        self.dir.to_str().expect("utf-8 temp path")
    }

    /// `--name --api-addr --peer-addr` on this host's current address, listening on the
    /// wildcard so an address change does not stop the node.
    fn addr_args(&self) -> Vec<String> {
        let ip = self.host.addr();
        vec![
            "--data-dir".into(),
            self.dir().into(),
            "--name".into(),
            self.name.clone(),
            "--api-addr".into(),
            format!("{ip}:{API_PORT}"),
            "--peer-addr".into(),
            format!("{ip}:{PEER_PORT}"),
            "--api-listen".into(),
            format!("0.0.0.0:{API_PORT}"),
            "--peer-listen".into(),
            format!("0.0.0.0:{PEER_PORT}"),
        ]
    }

    /// Starts `serve` on the node's host; returns once it answers on its socket and API port.
    fn serve(&mut self) {
        self.pid = Some(spawn_serve(self.host, self.dir(), &self.log, "info"));
        wait_answers(self.host, &self.dir, &self.name);
    }

    fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            self.host
                .stop(pid, Duration::from_secs(10))
                .expect("stop serve");
        }
    }

    /// Runs `outpost ARGS --data-dir <dir>` on this host; stdout, or a panic with stderr.
    fn cli(&self, args: &[&str]) -> String {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--data-dir", self.dir()]);
        stdout_of(
            &run_on(self.host, &all),
            &format!("{} on {}", args.join(" "), self.name),
        )
    }

    fn status(&self) -> Option<Value> {
        let out = run_on(self.host, &["status", "--json", "--data-dir", self.dir()]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    fn logs(&self) -> String {
        tail(&self.log, 30)
    }
}

/// The node join token printed by `init`, with its addresses removed: whoever joins with it
/// has to find the cluster by discovery.
fn addressless_node_token(init_stdout: &str) -> (String, String) {
    let line = init_stdout
        .lines()
        .find(|l| l.starts_with("node join token:"))
        .expect("init prints a node token");
    let raw = line.split_whitespace().last().expect("token");
    let mut t = Token::decode(raw).expect("token decodes");
    t.addrs.clear();
    (t.encode(), t.cluster_id)
}

fn voters(n: &Node) -> usize {
    n.status()
        .and_then(|s| {
            s["leader_id"].as_u64()?;
            s["members"].as_array().map(|m| {
                m.iter()
                    .filter(|m| m["voter"].as_bool() == Some(true))
                    .count()
            })
        })
        .unwrap_or(0)
}

/// Sets `key` through `via` and waits until every node in `readers` reads it.
fn write_then_read(via: &Node, readers: &[&Node], key: &str, value: &str) {
    via.cli(&["config", "set", key, value]);
    for r in readers {
        wait_for(
            Duration::from_secs(15),
            &format!("{} reads {key}={value}", r.name),
            || {
                let out = run_on(r.host, &["config", "get", key, "--data-dir", r.dir()]);
                (out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == value)
                    .then_some(())
            },
        );
    }
}

fn discover_json(host: &Host, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["discover", "--json", "--timeout", "3s"];
    args.extend(extra);
    let out = stdout_of(&run_on(host, &args), "discover");
    serde_json::from_str::<Vec<Value>>(&out).expect("discover --json is an array")
}

fn node_row(n: &Node, id: u64) -> Option<Value> {
    let out = run_on(n.host, &["node", "list", "--json", "--data-dir", n.dir()]);
    if !out.status.success() {
        return None;
    }
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
    rows.into_iter().find(|r| r["id"].as_u64() == Some(id))
}

fn median_ms(mut v: Vec<Duration>) -> u128 {
    v.sort();
    v[v.len() / 2].as_millis()
}

/// (a) three hosts form a cluster by mDNS alone; (b) `discover --json` on a fourth host lists
/// them; (e) a second cluster on the same LAN is never picked; (d) a host whose address
/// changes is re-addressed and keeps working; plus the serve-to-sighting latency.
#[test]
fn mdns_cluster_forms_lists_readdresses_and_ignores_another_cluster() {
    let _g = serial();
    let Some(site) = Site::builder("dclu").hosts(5).build() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node::new(site.host(i), tmp.path(), &format!("a{}", i + 1)))
        .collect();
    let observer = site.host(3);
    let mut other = Node::new(site.host(4), tmp.path(), "b1");

    // Another cluster on the same LAN, up first so that it is visible during the joins.
    let mut args = vec!["init".to_string()];
    args.extend(other.addr_args());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_, other_cluster) =
        addressless_node_token(&stdout_of(&run_on(other.host, &refs), "init b1"));
    other.serve();

    let mut args = vec!["init".to_string()];
    args.extend(nodes[0].addr_args());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (token, cluster) =
        addressless_node_token(&stdout_of(&run_on(nodes[0].host, &refs), "init a1"));
    assert_ne!(cluster, other_cluster);
    nodes[0].serve();
    wait_for(Duration::from_secs(20), "a1 has a leader", || {
        (voters(&nodes[0]) == 1).then_some(())
    });

    // (a) join by mDNS: no --peer, and the token carries no address.
    for n in nodes.iter_mut().skip(1) {
        let mut args = vec!["join".to_string()];
        args.extend(n.addr_args());
        args.extend([
            "--token".into(),
            token.clone(),
            "--discover-timeout".into(),
            "10s".into(),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = stdout_of(&run_on(n.host, &refs), &format!("join {}", n.name));
        assert!(out.contains(&cluster), "{out}");
        n.serve();
    }
    wait_for(Duration::from_secs(40), "three voters", || {
        (voters(&nodes[0]) == 3).then_some(())
    });
    write_then_read(
        &nodes[1],
        &[&nodes[0], &nodes[2]],
        "site.motd",
        "found-by-mdns",
    );

    // (e) the other cluster was never picked: it still has its one node and none of ours.
    let rows = other.cli(&["node", "list", "--json"]);
    let rows: Vec<Value> = serde_json::from_str(&rows).expect("node list json");
    assert_eq!(rows.len(), 1, "{rows:?}");

    // (b) a fourth host lists all three, with the right cluster, and the other cluster too.
    let all = wait_for(Duration::from_secs(20), "discover sees four nodes", || {
        let v = discover_json(observer, &[]);
        (v.len() >= 4).then_some(v)
    });
    let ours: Vec<&Value> = all
        .iter()
        .filter(|p| p["cluster"].as_str() == Some(cluster.as_str()))
        .collect();
    assert_eq!(ours.len(), 3, "{all:#?}");
    for (i, n) in nodes.iter().enumerate() {
        let p = ours
            .iter()
            .find(|p| p["node_id"].as_u64() == Some(i as u64 + 1))
            .unwrap_or_else(|| panic!("node {} missing: {all:#?}", i + 1));
        assert_eq!(p["name"].as_str(), Some(n.name.as_str()));
        assert_eq!(p["api_port"].as_u64(), Some(u64::from(API_PORT)));
        assert_eq!(p["peer_port"].as_u64(), Some(u64::from(PEER_PORT)));
        assert_eq!(
            p["addrs"][0].as_str(),
            Some(n.host.addr().to_string().as_str())
        );
        assert!(p["version"].as_str().is_some_and(|v| !v.is_empty()));
    }
    assert_eq!(
        all.iter()
            .filter(|p| p["cluster"].as_str() == Some(other_cluster.as_str()))
            .count(),
        1,
        "{all:#?}"
    );
    let filtered = discover_json(observer, &["--cluster", &cluster]);
    assert_eq!(filtered.len(), 3, "{filtered:#?}");
    assert!(
        filtered
            .iter()
            .all(|p| p["cluster"].as_str() == Some(cluster.as_str()))
    );

    // (d) node 3's host moves (a DHCP change); the leader checks its certificate at the new
    // address and re-addresses it.
    let new_ip = Ipv4Addr::new(198, 18, 1, 3);
    let t0 = Instant::now();
    site.host(2).set_addr(new_ip).expect("set_addr");
    let want_api = format!("{new_ip}:{API_PORT}");
    let want_peer = format!("{new_ip}:{PEER_PORT}");
    let row = wait_for(Duration::from_secs(30), "node 3 re-addressed", || {
        node_row(&nodes[0], 3).filter(|r| r["api_addr"].as_str() == Some(want_api.as_str()))
    });
    println!(
        "node 3 re-addressed in the node list {} ms after its address changed",
        t0.elapsed().as_millis()
    );
    assert_eq!(row["peer_addr"].as_str(), Some(want_peer.as_str()), "{row}");
    // The membership follows (the upkeep pushes the row to Raft), and the node keeps working:
    // a write through it is read elsewhere, a write elsewhere reaches it.
    wait_for(Duration::from_secs(20), "membership re-pointed", || {
        nodes[0].status().filter(|s| {
            s["members"].as_array().is_some_and(|m| {
                m.iter().any(|m| {
                    m["id"].as_u64() == Some(3) && m["peer_addr"].as_str() == Some(&want_peer)
                })
            })
        })
    });
    write_then_read(&nodes[2], &[&nodes[0], &nodes[1]], "site.after", "moved");
    write_then_read(&nodes[0], &[&nodes[2]], "site.back", "reached");
    let readdress_logged = nodes.iter().any(|n| {
        std::fs::read_to_string(&n.log).is_ok_and(|t| {
            t.lines().any(|l| {
                l.contains("re-addressing node") && l.contains(&want_peer) && l.contains("old_peer")
            })
        })
    });
    assert!(
        readdress_logged,
        "the leader logs the re-addressing with old and new addresses"
    );

    // Serve-to-sighting latency (printed, not asserted), and the goodbye on SIGTERM.
    let browser = observer
        .enter({
            let c = other_cluster.clone();
            move || Discovery::start(&DiscoveryConfig::default(), Some(&c))
        })
        .expect("enter observer")
        .expect("browser");
    let v = browser.wait_until(Instant::now() + Duration::from_secs(15), |v| {
        v.node(1).is_some()
    });
    assert!(v.node(1).is_some(), "the observer sees b1: {v:?}");
    let mut samples = Vec::new();
    for _ in 0..5 {
        other.stop();
        let v = browser.wait_until(Instant::now() + Duration::from_secs(10), |v| {
            v.node(1).is_none()
        });
        assert!(v.node(1).is_none(), "SIGTERM sends an mDNS goodbye: {v:?}");
        // A browser keeps goodbye'd records one more second (RFC 6762 10.1); an advert coming
        // back inside that second refreshes them without a new sighting, so restart after it.
        std::thread::sleep(Duration::from_millis(1500));
        let t0 = Instant::now();
        other.serve();
        let v = browser.wait_until(Instant::now() + Duration::from_secs(15), |v| {
            v.node(1).is_some()
        });
        assert!(
            v.node(1).is_some(),
            "b1 seen after serve:\n{}",
            other.logs()
        );
        samples.push(t0.elapsed());
    }
    println!(
        "serve -> sighting on another host: median {} ms over {} runs ({:?})",
        median_ms(samples.clone()),
        samples.len(),
        samples.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
    browser.shutdown();
    for n in nodes.iter_mut() {
        n.stop();
    }
    other.stop();
}

/// (c) with mDNS off on both nodes, the static peer list alone forms the cluster, and nothing
/// is advertised.
#[test]
fn static_peer_list_alone_with_mdns_off() {
    let _g = serial();
    let Some(site) = Site::builder("dstat").hosts(2).build() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut a = Node::new(site.host(0), tmp.path(), "s1");
    let mut b = Node::new(site.host(1), tmp.path(), "s2");
    let mut args = vec!["init".to_string()];
    args.extend(a.addr_args());
    args.push("--no-mdns".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (token, cluster) = addressless_node_token(&stdout_of(&run_on(a.host, &refs), "init s1"));
    a.serve();
    wait_for(Duration::from_secs(20), "s1 has a leader", || {
        (voters(&a) == 1).then_some(())
    });

    let mut args = vec!["join".to_string()];
    args.extend(b.addr_args());
    let static_peer = format!("{}:{API_PORT}", a.host.addr());
    args.extend([
        "--no-mdns".into(),
        "--static-peer".into(),
        static_peer.clone(),
        "--token".into(),
        token,
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = stdout_of(&run_on(b.host, &refs), "join s2");
    assert!(out.contains(&cluster), "{out}");
    let toml = std::fs::read_to_string(b.dir.join("node.toml")).expect("node.toml");
    assert!(toml.contains("mdns = false"), "{toml}");
    assert!(toml.contains(&static_peer), "{toml}");
    b.serve();
    wait_for(Duration::from_secs(30), "two voters", || {
        (voters(&a) == 2).then_some(())
    });
    write_then_read(&b, &[&a], "static.key", "static-value");

    // Nothing was multicast: a browser on the site sees no advert.
    let seen = discover_json(b.host, &[]);
    assert!(
        seen.is_empty(),
        "mdns = false must not advertise: {seen:#?}"
    );
    // Without mDNS and with nothing to contact, join says what it tried.
    let c_dir = tmp.path().join("s3");
    let out = run_on(
        b.host,
        &[
            "join",
            "--data-dir",
            c_dir.to_str().expect("utf-8"),
            "--name",
            "s3",
            "--api-addr",
            "198.18.0.2:7543",
            "--peer-addr",
            "198.18.0.2:7544",
            "--no-mdns",
            "--token",
            &addressless_node_token(&format!(
                "node join token: {}",
                Token::new("node", &cluster, &"ab".repeat(32), vec![]).encode()
            ))
            .0,
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no address to try") && err.contains("mDNS is off"),
        "{err}"
    );
    a.stop();
    b.stop();
}

/// An agent enrolls with a client token that carries no address and no `--server`: it finds
/// the token's cluster by mDNS, then syncs with what it found.
#[test]
fn agent_enrolls_through_mdns() {
    let _g = serial();
    let Some(site) = Site::builder("dagent").hosts(2).build() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut n = Node::new(site.host(0), tmp.path(), "g1");
    let mut args = vec!["init".to_string()];
    args.extend(n.addr_args());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    stdout_of(&run_on(n.host, &refs), "init g1");
    n.serve();
    wait_for(Duration::from_secs(20), "g1 has a leader", || {
        (voters(&n) == 1).then_some(())
    });
    let raw = n.cli(&["token", "create", "--kind", "client"]);
    let mut token = Token::decode(raw.trim()).expect("client token");
    token.addrs.clear();
    let state = tmp.path().join("agent");
    let state = state.to_str().expect("utf-8");
    let out = stdout_of(
        &run_on(
            site.host(1),
            &[
                "agent",
                "enroll",
                "--token",
                &token.encode(),
                "--state-dir",
                state,
                "--hostname",
                "client1",
            ],
        ),
        "agent enroll",
    );
    assert!(out.contains(&token.cluster_id), "{out}");
    let out = stdout_of(
        &run_on(
            site.host(1),
            &["agent", "sync", "--once", "--state-dir", state],
        ),
        "agent sync",
    );
    assert!(
        out.contains(&format!("{}:{API_PORT}", site.host(0).addr())),
        "{out}"
    );
    // The node's host moves (DHCP): every address the agent knows fails, so it browses for
    // its cluster again and syncs with the node at its new address.
    let new_ip = Ipv4Addr::new(198, 18, 2, 1);
    site.host(0).set_addr(new_ip).expect("set_addr");
    let out = wait_for(
        Duration::from_secs(60),
        "agent syncs at the new address",
        || {
            let o = run_on(
                site.host(1),
                &["agent", "sync", "--once", "--state-dir", state],
            );
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            (o.status.success() && text.contains(&format!("{new_ip}:{API_PORT}"))).then_some(text)
        },
    );
    assert!(out.starts_with("synced with"), "{out}");
    n.stop();
}
