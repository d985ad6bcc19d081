//! Discovery across real network namespaces: each host of a `Site` runs the crate's code on a
//! thread that entered its namespace (so the mdns-sd daemon threads it creates live there too).
//! mDNS never leaves these namespaces.

#[path = "../../tests/support/netns.rs"]
mod netns;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use netns::{Host, Site};
use outpost_discovery::{Advert, Advertiser, Discovery, DiscoveryConfig, PeerView};

fn advert(cluster: &str, id: u64) -> Advert {
    Advert {
        name: format!("node{id}"),
        cluster: cluster.into(),
        node_id: id,
        api_port: 7000 + id as u16,
        peer_port: 8000 + id as u16,
        version: "0.1.0".into(),
    }
}

fn mdns() -> DiscoveryConfig {
    DiscoveryConfig::default()
}

fn advertise(host: &Host, a: Advert) -> Advertiser {
    host.enter(move || Advertiser::start(&mdns(), &a))
        .expect("enter namespace")
        .expect("advertise")
        .expect("mdns is on")
}

fn browse(host: &Host, cfg: DiscoveryConfig, cluster: Option<&str>) -> Discovery {
    let cluster = cluster.map(str::to_string);
    host.enter(move || Discovery::start(&cfg, cluster.as_deref()))
        .expect("enter namespace")
        .expect("discovery")
}

fn v4(ip: Ipv4Addr) -> IpAddr {
    IpAddr::V4(ip)
}

fn wait(d: &Discovery, secs: u64, pred: impl Fn(&PeerView) -> bool) -> PeerView {
    d.wait_until(Instant::now() + Duration::from_secs(secs), pred)
}

#[test]
fn three_hosts_see_each_other_and_ignore_another_cluster() {
    let Some(site) = Site::builder("three").hosts(4).build() else {
        return;
    };
    let _ads: Vec<Advertiser> = (0..3)
        .map(|i| advertise(site.host(i), advert("clusterA", i as u64 + 1)))
        .chain([advertise(site.host(3), advert("clusterB", 1))])
        .collect();
    let views: Vec<Discovery> = (0..3)
        .map(|i| browse(site.host(i), mdns(), Some("clusterA")))
        .collect();
    for (i, d) in views.iter().enumerate() {
        let v = wait(d, 10, |v| v.len() >= 3);
        assert_eq!(v.len(), 3, "host {i} sees {v:#?}");
        for id in 1..=3u64 {
            let p = v
                .node(id)
                .unwrap_or_else(|| panic!("host {i} misses node {id}: {v:#?}"));
            assert_eq!(p.cluster.as_deref(), Some("clusterA"));
            // Instance names are display names: two clusters' "node1" force an mDNS rename
            // ("node1 (2)"); identity comes from the TXT records.
            let name = p.name.clone().unwrap_or_default();
            assert!(name.starts_with(&format!("node{id}")), "{name}");
            assert_eq!(p.api_port, 7000 + id as u16);
            assert_eq!(p.peer_port, Some(8000 + id as u16));
            assert_eq!(p.version.as_deref(), Some("0.1.0"));
            assert_eq!(p.addrs, vec![v4(site.host(id as usize - 1).addr())]);
            assert!(p.mdns);
        }
    }
    // An unfiltered listing (as `outpost discover` does) on the fourth host shows all four.
    let all = browse(site.host(3), mdns(), None);
    let v = wait(&all, 10, |v| v.len() >= 4);
    assert_eq!(v.len(), 4, "{v:#?}");
    assert_eq!(
        v.peers
            .iter()
            .filter(|p| p.cluster.as_deref() == Some("clusterB"))
            .count(),
        1
    );
    // The clusterA views never took in clusterB's node.
    for d in &views {
        assert!(
            d.view()
                .peers
                .iter()
                .all(|p| p.cluster.as_deref() == Some("clusterA"))
        );
    }
}

#[test]
fn static_peers_alone_with_mdns_off() {
    let Some(site) = Site::builder("static").hosts(2).build() else {
        return;
    };
    let _ad = advertise(site.host(0), advert("clusterA", 1));
    let cfg = DiscoveryConfig {
        mdns: false,
        interfaces: vec![],
        peers: vec![format!("{}:7001", site.host(0).addr())],
    };
    let d = browse(site.host(1), cfg, Some("clusterA"));
    let v = wait(&d, 5, |v| !v.is_empty());
    assert_eq!(v.len(), 1, "{v:#?}");
    let p = &v.peers[0];
    assert!(!p.mdns, "mdns=false must not browse: {p:#?}");
    assert_eq!(p.node_id, None);
    assert_eq!(
        p.api_addrs(),
        vec![format!("{}:7001", site.host(0).addr()).parse().unwrap()]
    );
    // With mDNS on as well, the same entry folds into the advertised node.
    let cfg = DiscoveryConfig {
        peers: vec![format!("{}:7001", site.host(0).addr())],
        ..mdns()
    };
    let both = browse(site.host(1), cfg, Some("clusterA"));
    let v = wait(&both, 10, |v| v.node(1).is_some_and(|p| p.mdns));
    assert_eq!(v.len(), 1, "{v:#?}");
    assert_eq!(v.peers[0].static_entries.len(), 1);
}

#[test]
fn readdressed_host_is_seen_under_its_new_address() {
    let Some(site) = Site::builder("readdr").hosts(2).build() else {
        return;
    };
    let _ad = advertise(site.host(0), advert("clusterA", 1));
    let d = browse(site.host(1), mdns(), Some("clusterA"));
    let old = v4(site.host(0).addr());
    let v = wait(&d, 10, |v| v.node(1).is_some());
    assert_eq!(v.node(1).map(|p| p.addrs.clone()), Some(vec![old]));
    let new_ip = Ipv4Addr::new(198, 18, 1, 1);
    let t0 = Instant::now();
    site.host(0).set_addr(new_ip).expect("change address");
    let v = wait(&d, 15, |v| {
        v.node(1).is_some_and(|p| p.addrs == vec![v4(new_ip)])
    });
    println!(
        "re-addressed node seen under its new address after {} ms",
        t0.elapsed().as_millis()
    );
    assert_eq!(
        v.node(1).map(|p| p.addrs.clone()),
        Some(vec![v4(new_ip)]),
        "{v:#?}"
    );
}

#[test]
fn goodbye_removes_the_node() {
    let Some(site) = Site::builder("bye").hosts(3).build() else {
        return;
    };
    let a1 = advertise(site.host(0), advert("clusterA", 1));
    let _a2 = advertise(site.host(1), advert("clusterA", 2));
    let d = browse(site.host(2), mdns(), Some("clusterA"));
    let mut changes = d.subscribe();
    let v = wait(&d, 10, |v| v.len() == 2);
    assert_eq!(v.len(), 2, "{v:#?}");
    assert!(
        changes.has_changed().unwrap_or(false),
        "the watch stream saw the additions"
    );
    changes.mark_unchanged();
    a1.shutdown().expect("goodbye");
    // Goodbye packets (TTL 0) remove the node at once, long before any TTL would.
    let v = wait(&d, 3, |v| v.node(1).is_none());
    assert!(v.node(1).is_none(), "{v:#?}");
    assert!(v.node(2).is_some());
    assert!(changes.has_changed().unwrap_or(false));
    assert_eq!(changes.borrow_and_update().len(), 1);
}

#[test]
fn advertise_to_sighting_latency() {
    let Some(site) = Site::builder("lat").hosts(2).build() else {
        return;
    };
    let d = browse(site.host(1), mdns(), Some("clusterA"));
    let mut samples = Vec::new();
    for run in 1..=5u64 {
        let t0 = Instant::now();
        let ad = advertise(site.host(0), advert("clusterA", run));
        let v = wait(&d, 10, |v| v.node(run).is_some());
        let dt = t0.elapsed();
        assert!(v.node(run).is_some(), "run {run}: not seen: {v:#?}");
        samples.push(dt);
        ad.shutdown().expect("goodbye");
        let v = wait(&d, 5, |v| v.node(run).is_none());
        assert!(v.node(run).is_none(), "run {run}: goodbye not seen");
    }
    samples.sort();
    let ms: Vec<u128> = samples.iter().map(|d| d.as_millis()).collect();
    println!(
        "advertise-to-sighting latency over {} runs: median {} ms (all: {ms:?})",
        ms.len(),
        ms[ms.len() / 2]
    );
}

/// An mDNS stack nobody here wrote (python-zeroconf) sees our advert and its TXT records.
#[test]
fn python_zeroconf_sees_our_advert() {
    let Some(site) = Site::builder("zc").hosts(2).build() else {
        return;
    };
    let probe = site.host(1).run(
        {
            let mut c = site.host(1).command("python3");
            c.args(["-c", "import zeroconf"]);
            c
        },
        Duration::from_secs(30),
    );
    match probe {
        Ok(out) if out.status.success() => {}
        other => {
            let why = format!(
                "python3 with zeroconf is not available ({other:?}); run .ci/deps-discovery.sh"
            );
            if std::env::var_os("CI").is_some() {
                panic!("{why}");
            }
            eprintln!("SKIP: {why}");
            return;
        }
    }
    let _ad = advertise(site.host(0), advert("clusterA", 4));
    let script = r#"
import json, sys, time
from zeroconf import ServiceBrowser, ServiceListener, Zeroconf, IPVersion
T = "_outpost._tcp.local."
found = {}
class L(ServiceListener):
    def add_service(self, zc, t, name): found[name] = None
    def update_service(self, zc, t, name): found[name] = None
    def remove_service(self, zc, t, name): pass
zc = Zeroconf(ip_version=IPVersion.V4Only)
ServiceBrowser(zc, T, L())
deadline = time.monotonic() + 10
out = None
while time.monotonic() < deadline and out is None:
    for name in list(found):
        info = zc.get_service_info(T, name, timeout=2000)
        if info is not None and info.properties:
            out = {"name": name, "port": info.port,
                   "addrs": info.parsed_addresses(),
                   "txt": {k.decode(): (v.decode() if v is not None else None)
                           for k, v in info.properties.items()}}
            break
    time.sleep(0.1)
zc.close()
print(json.dumps(out))
sys.exit(0 if out else 1)
"#;
    let mut cmd = site.host(1).command("python3");
    cmd.args(["-c", script]);
    let out = site
        .host(1)
        .run(cmd, Duration::from_secs(30))
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "zeroconf did not see the advert: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json from python");
    assert_eq!(seen["name"], "node4._outpost._tcp.local.");
    assert_eq!(seen["port"], 7004);
    assert_eq!(
        seen["addrs"],
        serde_json::json!([site.host(0).addr().to_string()])
    );
    let txt: HashMap<String, String> =
        serde_json::from_value(seen["txt"].clone()).expect("txt map");
    let want: HashMap<String, String> = [
        ("txtvers", "1"),
        ("cluster", "clusterA"),
        ("node", "4"),
        ("api", "7004"),
        ("peer", "8004"),
        ("ver", "0.1.0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(txt, want);
}
