//! The Raft entry cap through a real one-node `RaftNode` (its own peer listener on loopback):
//! concurrent writes share an entry until the next one would pass `MAX_ENTRY_BYTES`, and a
//! command too large for an entry of its own is refused before it reaches Raft.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use outpost_certs::{CertAuthority, ClientAuth, Role, TlsIdentity, Validity};
use outpost_raft::{NodeConfig, PEER_ALPN, PeerNode, PeerTls, RaftNode, RaftTuning, WriteError};
use outpost_storage::{Command, Envelope, MAX_ENTRY_BYTES, Scope};
use tokio::net::TcpListener;

const T: Duration = Duration::from_secs(20);

fn now() -> i64 {
    outpost_raft::now_ms() / 1000
}

fn set(value_len: usize) -> Envelope {
    Envelope {
        at_ms: outpost_raft::now_ms(),
        actor: "test".into(),
        command: Command::SetConfig {
            scope: Scope::Global,
            key: "k".into(),
            value: "v".repeat(value_len),
        },
    }
}

async fn one_node(dir: &std::path::Path) -> Result<RaftNode> {
    let ca = CertAuthority::generate("c-cap", "cap")?;
    let (cert, key) = ca.issue_with_new_key(&Role::Node(1), &Validity::days_from(now(), 1))?;
    let identity = TlsIdentity::from_pem(&cert, &key, ca.cert_pem())?;
    let tls = PeerTls {
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
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let peer_addr = listener.local_addr()?.to_string();
    let node = RaftNode::start(NodeConfig {
        id: 1,
        data_dir: dir.to_path_buf(),
        peer_listener: listener,
        tls,
        tuning: RaftTuning::default(),
    })
    .await?;
    node.initialize(PeerNode {
        name: "n1".into(),
        api_addr: "127.0.0.1:1".into(),
        peer_addr,
    })
    .await?;
    node.wait_for_leader(T).await.context("no leader")?;
    node.linearizable_barrier(T).await?;
    Ok(node)
}

/// Writes `envs` concurrently and returns how many log entries they took. On this
/// current-thread runtime every write is queued before the batcher runs.
async fn entries_for(node: &RaftNode, envs: Vec<Envelope>) -> Result<u64> {
    let before = node.status().last_log_index;
    let results = futures::future::join_all(envs.into_iter().map(|e| node.write(e))).await;
    for r in results {
        // Applied or rejected by storage: either way it went through an entry.
        let _outcome = r?;
    }
    Ok(node.status().last_log_index - before)
}

#[tokio::test]
async fn writes_are_packed_within_the_entry_cap() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = one_node(dir.path()).await?;

    // Small writes share one entry.
    assert_eq!(
        entries_for(&node, (0..4).map(|_| set(10)).collect()).await?,
        1
    );

    // Three-eighths of the cap each: two fit an entry, a third does not, so four writes
    // make two entries and none is dropped.
    let big = MAX_ENTRY_BYTES * 3 / 8;
    assert_eq!(
        entries_for(&node, (0..4).map(|_| set(big)).collect()).await?,
        2
    );

    // A command over the cap on its own is refused and never reaches the log.
    let before = node.status().last_log_index;
    match node.write(set(MAX_ENTRY_BYTES)).await {
        Err(WriteError::TooLarge { bytes, cap }) => {
            assert_eq!(cap, MAX_ENTRY_BYTES);
            assert!(bytes > cap, "{bytes}");
        }
        other => bail!("expected TooLarge, got {other:?}"),
    }
    // The batcher goes on: a write after the refusal commits.
    assert_eq!(entries_for(&node, vec![set(1)]).await?, 1);
    assert_eq!(node.status().last_log_index, before + 1);

    node.shutdown().await;
    Ok(())
}
