//! `RaftTelemetry` on a real 3-node cluster (three `RaftNode`s in this process, each with its
//! own peer listener on loopback and its own data directory): after some writes through the
//! leader, its `/metrics` rendering shows a lag series for each follower and a non-empty
//! commit histogram, and a follower shows no lag series.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use outpost_certs::{CertAuthority, ClientAuth, Role, TlsIdentity, Validity};
use outpost_raft::{NodeConfig, PEER_ALPN, PeerNode, PeerTls, RaftNode, RaftTuning};
use outpost_storage::{Command, Envelope, Scope};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

const T: Duration = Duration::from_secs(30);

fn tls(ca: &CertAuthority, id: u64) -> Result<PeerTls> {
    let validity = Validity::days_from(outpost_raft::now_ms() / 1000, 1);
    let (cert, key) = ca.issue_with_new_key(&Role::Node(id), &validity)?;
    let identity = TlsIdentity::from_pem(&cert, &key, ca.cert_pem())?;
    Ok(PeerTls {
        server: outpost_certs::server_config(
            ca.cert_pem(),
            &identity,
            ClientAuth::Required,
            &[PEER_ALPN],
        )?,
        client: outpost_certs::client_config(ca.cert_pem(), Some(&identity), &[PEER_ALPN])?,
        server_name: outpost_certs::node_server_name,
        authorize: Arc::new(|der| match outpost_certs::role_of(der) {
            Ok(Role::Node(id)) => Ok(id),
            Ok(other) => Err(format!("{other:?} is not a node")),
            Err(e) => Err(e.to_string()),
        }),
    })
}

fn envelope(command: Command) -> Envelope {
    Envelope {
        at_ms: outpost_raft::now_ms(),
        actor: "test".into(),
        command,
    }
}

fn render(node: &RaftNode) -> Result<String> {
    node.refresh_telemetry();
    let mut reg = Registry::default();
    node.telemetry().register(&mut reg);
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}

/// The value of the series `name` (with its labels, as rendered), if present.
fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_shows_each_followers_lag_and_its_commit_latency() -> Result<()> {
    let ca = CertAuthority::generate("c-telemetry", "telemetry")?;
    let dirs = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    let mut nodes = Vec::new();
    let mut peers = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let id = i as u64 + 1;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        peers.push(PeerNode {
            name: format!("n{id}"),
            api_addr: "127.0.0.1:1".into(),
            peer_addr: listener.local_addr()?.to_string(),
        });
        nodes.push(
            RaftNode::start(NodeConfig {
                id,
                data_dir: dir.path().to_path_buf(),
                peer_listener: listener,
                tls: tls(&ca, id)?,
                tuning: RaftTuning::default(),
            })
            .await?,
        );
    }
    let leader = &nodes[0];
    leader.initialize(peers[0].clone()).await?;
    leader.wait_for_leader(T).await.context("no leader")?;
    leader.linearizable_barrier(T).await?;
    // Nodes recorded in the state join the membership through the leader's upkeep.
    leader
        .write(envelope(Command::InitCluster {
            cluster_id: "c-telemetry".into(),
            name: "telemetry".into(),
            ca_cert_pem: ca.cert_pem().to_string(),
        }))
        .await?
        .map_err(|r| anyhow::anyhow!("init: {r:?}"))?;
    for (i, p) in peers.iter().enumerate() {
        leader
            .write(envelope(Command::AddNode {
                id: i as u64 + 1,
                name: p.name.clone(),
                api_addr: p.api_addr.clone(),
                peer_addr: p.peer_addr.clone(),
                version: "test".into(),
            }))
            .await?
            .map_err(|r| anyhow::anyhow!("adding node {}: {r:?}", i + 1))?;
    }
    let deadline = Instant::now() + T;
    while leader.status().members.len() < 3 {
        if Instant::now() > deadline {
            bail!("members never reached 3: {:?}", leader.status().members);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..20 {
        leader
            .write(envelope(Command::SetConfig {
                scope: Scope::Global,
                key: format!("k{i}"),
                value: "v".into(),
            }))
            .await?
            .map_err(|r| anyhow::anyhow!("setting k{i}: {r:?}"))?;
    }

    // Still the leader (nothing deposes it here), the lag series of both followers appear.
    let deadline = Instant::now() + T;
    let text = loop {
        let text = render(leader)?;
        let both = ["2", "3"].iter().all(|f| {
            let entries = format!("outpost_raft_replication_lag_entries{{follower=\"{f}\"}}");
            let seconds = format!("outpost_raft_replication_lag_seconds{{follower=\"{f}\"}}");
            value(&text, &entries).is_some() && value(&text, &seconds).is_some()
        });
        if both {
            break text;
        }
        if Instant::now() > deadline {
            bail!("no lag series for both followers:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!text.contains("follower=\"1\""), "{text}");
    let commits = value(&text, "outpost_raft_commit_duration_seconds_count").unwrap_or(0.0);
    assert!(commits >= 20.0, "commits {commits}:\n{text}");
    let writes = value(&text, "outpost_raft_batch_writes_sum").unwrap_or(0.0);
    assert!(writes >= 23.0, "writes {writes}:\n{text}");
    let fsyncs = value(&text, "outpost_raft_log_fsync_duration_seconds_count").unwrap_or(0.0);
    assert!(fsyncs >= 1.0, "{text}");
    let applies = value(&text, "outpost_raft_apply_duration_seconds_count").unwrap_or(0.0);
    assert!(applies >= 1.0, "{text}");
    let leaderships = value(&text, "outpost_raft_leader_changes_total").unwrap_or(0.0);
    assert!(leaderships >= 1.0, "{text}");

    // A follower has no lag series and proposed nothing, but it appended and applied.
    let follower = render(&nodes[1])?;
    assert!(!follower.contains("follower="), "{follower}");
    assert_eq!(
        value(&follower, "outpost_raft_commit_duration_seconds_count"),
        Some(0.0),
        "{follower}"
    );
    let deadline = Instant::now() + T;
    while value(
        &render(&nodes[1])?,
        "outpost_raft_apply_duration_seconds_count",
    )
    .unwrap_or(0.0)
        < 1.0
    {
        if Instant::now() > deadline {
            bail!("the follower never applied:\n{}", render(&nodes[1])?);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in &nodes {
        n.shutdown().await;
    }
    Ok(())
}
