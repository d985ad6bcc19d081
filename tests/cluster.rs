//! Multi-node tests through the real binary: every node is an `outpost serve` process on
//! 127.0.0.1, formed with `outpost init` / `token create` / `join`, driven through the CLI
//! and the local socket. Tests in this file run one at a time (three processes each on a
//! two-core machine is plenty).

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::{cluster, exe, or_dump, serial};

use std::time::Duration;

use anyhow::{Context, Result};
use outpost::harness::localcluster::{LocalCluster, LocalOptions};

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_via_follower_failover_and_catch_up() {
    let _g = serial();
    let (_dir, mut c) = cluster(3, &[]).await.expect("three-node cluster");
    let r = async {
        let leader = c.leader(T).await?;
        let follower = (leader + 1) % 3;
        c.cli(follower, &["config", "set", "site.name", "plant-7"])?;
        for i in 0..3 {
            let v = c.cli(i, &["config", "get", "site.name", "--linearizable"])?;
            assert_eq!(
                v.trim(),
                "plant-7",
                "linearizable read on {}",
                c.nodes[i].name
            );
        }

        // kill -9 the leader: the survivors elect a new one and take writes.
        c.kill9(leader);
        let survivor = (leader + 1) % 3;
        c.cli(survivor, &["config", "set", "after.failover", "yes"])?;
        let new_leader = c.leader(T).await?;
        assert_ne!(new_leader, leader, "a killed node cannot lead");
        let other = (leader + 2) % 3;
        assert_eq!(
            c.cli(
                other,
                &["config", "get", "after.failover", "--linearizable"]
            )?
            .trim(),
            "yes"
        );

        // The killed node comes back and catches up, including what it missed.
        c.serve(leader).await?;
        let applied = c.status(survivor).await?.applied_index;
        c.wait_for(leader, T, "caught up", |s| s.applied_index >= applied)
            .await?;
        assert_eq!(
            c.cli(leader, &["config", "get", "after.failover"])?.trim(),
            "yes"
        );
        let s = c.status(leader).await?;
        assert_eq!(s.members.iter().filter(|m| m.voter).count(), 3);

        // An operator removes a node: it leaves the membership, keeps its id in the node
        // list (ids are never reused), and the two left go on taking writes.
        let gone = s
            .members
            .iter()
            .find(|m| m.api_addr == c.nodes[other].api_addr)
            .context("member")?
            .id;
        c.cli(survivor, &["node", "remove", &gone.to_string()])?;
        c.wait_for(survivor, T, "node removed from membership", |s| {
            s.members.len() == 2 && s.members.iter().all(|m| m.id != gone)
        })
        .await?;
        let nodes: serde_json::Value =
            serde_json::from_str(&c.cli(survivor, &["node", "list", "--json"])?)?;
        let row = nodes
            .as_array()
            .context("list")?
            .iter()
            .find(|n| n["id"] == gone)
            .context("removed row kept")?;
        assert_eq!(row["role"], "removed");
        c.cli(leader, &["config", "set", "after.remove", "ok"])?;
        assert_eq!(
            c.cli(
                survivor,
                &["config", "get", "after.remove", "--linearizable"]
            )?
            .trim(),
            "ok"
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_behind_node_is_brought_up_by_snapshot() {
    let _g = serial();
    let (_dir, mut c) = cluster(3, &["--snapshot-after", "20"])
        .await
        .expect("cluster");
    let r = async {
        let leader = c.leader(T).await?;
        let lagging = (leader + 1) % 3;
        let writer = (leader + 2) % 3;
        c.kill9(lagging);
        for i in 0..120 {
            c.cli(
                writer,
                &["config", "set", &format!("k{i}"), &format!("v{i}")],
            )?;
        }
        let s = c.status(writer).await?;
        let snap = s.snapshot_index.context("the writer built no snapshot")?;
        assert!(snap > 20, "snapshot index {snap}");
        c.serve(lagging).await?;
        let applied = s.applied_index;
        let back = c
            .wait_for(lagging, T, "caught up", |s| s.applied_index >= applied)
            .await?;
        // Its log was purged behind the snapshot on the others: it must hold a snapshot now.
        assert!(
            back.snapshot_index.is_some(),
            "lagging node has no snapshot: {back:?}"
        );
        assert_eq!(c.cli(lagging, &["config", "get", "k119"])?.trim(), "v119");
        assert_eq!(c.cli(lagging, &["config", "get", "k0"])?.trim(), "v0");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_of_all_nodes_loses_no_acknowledged_write() {
    let _g = serial();
    let (_dir, mut c) = cluster(3, &[]).await.expect("cluster");
    let r = async {
        let mut acked = Vec::new();
        for i in 0..30 {
            let (k, v) = (format!("durable.{i}"), format!("value-{i}"));
            c.cli(i % 3, &["config", "set", &k, &v])?;
            acked.push((k, v));
        }
        // SIGTERM is a clean stop: exit code 0 and the admin socket gone.
        assert!(
            c.stop(0, Duration::from_secs(10))?,
            "serve did not exit cleanly on SIGTERM"
        );
        assert!(
            !c.nodes[0].dir.join("admin.sock").exists(),
            "admin socket left behind"
        );
        for i in 0..3 {
            c.kill9(i);
        }
        for i in 0..3 {
            c.serve(i).await?;
        }
        // `serve` returned once each node answered on its socket and API port.
        c.leader(T).await?;
        for (i, (k, v)) in acked.iter().enumerate() {
            let got = c.cli(i % 3, &["config", "get", k, "--linearizable"])?;
            assert_eq!(got.trim(), v, "acknowledged write {k} after restart");
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_five_voters_the_sixth_node_stays_a_learner() {
    let _g = serial();
    let (_dir, mut c) = cluster(5, &[]).await.expect("five voters");
    let r = async {
        let i = c.join_node()?;
        c.serve(i).await?;
        let s = c
            .wait_for(0, T, "six members", |s| {
                s.members.len() == 6 && s.members.iter().filter(|m| m.voter).count() == 5
            })
            .await?;
        let sixth = s
            .members
            .iter()
            .find(|m| m.api_addr == c.nodes[i].api_addr)
            .context("sixth member")?;
        assert!(!sixth.voter, "the sixth node became a voter: {s:?}");
        // `serve` returned once the sixth node answered; a linearizable read on it needs it
        // to know the leader as well.
        c.wait_ready(i, T).await?;
        // A learner still serves reads of everything committed.
        c.cli(0, &["config", "set", "seen.by.learner", "yes"])?;
        assert_eq!(
            c.cli(i, &["config", "get", "seen.by.learner", "--linearizable"])?
                .trim(),
            "yes"
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

/// Log text without its colour codes (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// The Raft id of local node `i`, from a status's membership.
fn member_id(c: &LocalCluster, s: &outpost::wire::StatusView, i: usize) -> Result<u64> {
    Ok(s.members
        .iter()
        .find(|m| m.api_addr == c.nodes[i].api_addr)
        .with_context(|| format!("{} is not a member: {s:?}", c.nodes[i].name))?
        .id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_voter_is_auto_removed_and_the_cluster_stays_writable() {
    let _g = serial();
    let (_dir, mut c) = cluster(4, &["--auto-remove-after", "3s"])
        .await
        .expect("four voters");
    let r = async {
        let leader = c.leader(T).await?;
        let victim = (leader + 1) % 4;
        let watcher = (leader + 2) % 4;
        let s = c.status(watcher).await?;
        assert_eq!(s.members.iter().filter(|m| m.voter).count(), 4, "{s:?}");
        let gone = member_id(&c, &s, victim)?;

        c.kill9(victim);
        c.wait_for(
            watcher,
            Duration::from_secs(30),
            "dead voter auto-removed",
            |s| {
                s.members.len() == 3
                    && s.members.iter().filter(|m| m.voter).count() == 3
                    && s.members.iter().all(|m| m.id != gone)
            },
        )
        .await?;
        let nodes: serde_json::Value =
            serde_json::from_str(&c.cli(watcher, &["node", "list", "--json"])?)?;
        let row = nodes
            .as_array()
            .context("list")?
            .iter()
            .find(|n| n["id"] == gone)
            .context("removed row kept")?;
        assert_eq!(row["role"], "removed", "{nodes}");
        // Audited as the automatic removal, not as an operator's.
        let audit: serde_json::Value =
            serde_json::from_str(&c.cli(watcher, &["audit", "--json", "--limit", "200"])?)?;
        let target = format!("node:{gone}");
        assert!(
            audit.as_array().context("audit")?.iter().any(|a| {
                a["action"] == "node.remove" && a["target"] == target && a["actor"] == "auto-remove"
            }),
            "no auto-remove audit row for {target}: {audit}"
        );

        // Logged at warn by the leader that removed it, with the setting.
        let logged = c.nodes.iter().any(|n| {
            std::fs::read_to_string(&n.log).is_ok_and(|t| {
                strip_ansi(&t).lines().any(|l| {
                    l.contains("removed a member that has not answered")
                        && l.contains(&format!("node={gone}"))
                        && l.contains("auto_remove_after=3s")
                })
            })
        });
        assert!(logged, "no auto-removal warning in the node logs");

        // The three left take writes and every one of them reads it back.
        c.cli(watcher, &["config", "set", "after.auto.remove", "ok"])?;
        for i in (0..4).filter(|&i| i != victim) {
            assert_eq!(
                c.cli(i, &["config", "get", "after.auto.remove", "--linearizable"])?
                    .trim(),
                "ok",
                "read on {}",
                c.nodes[i].name
            );
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_removal_never_leaves_fewer_than_three_voters() {
    let _g = serial();
    let (_dir, mut c) = cluster(3, &["--auto-remove-after", "3s"])
        .await
        .expect("three voters");
    let r = async {
        let leader = c.leader(T).await?;
        let victim = (leader + 1) % 3;
        let watcher = (leader + 2) % 3;
        let gone = member_id(&c, &c.status(watcher).await?, victim)?;
        c.kill9(victim);
        // Well past the setting, the dead voter stays a voter all along.
        let until = std::time::Instant::now() + Duration::from_secs(8);
        while std::time::Instant::now() < until {
            let s = c.status(watcher).await?;
            let voters: Vec<u64> = s.members.iter().filter(|m| m.voter).map(|m| m.id).collect();
            assert_eq!(voters.len(), 3, "a voter was removed from three: {s:?}");
            assert!(voters.contains(&gone), "{s:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let nodes: serde_json::Value =
            serde_json::from_str(&c.cli(watcher, &["node", "list", "--json"])?)?;
        let row = nodes
            .as_array()
            .context("list")?
            .iter()
            .find(|n| n["id"] == gone)
            .context("row")?;
        assert_eq!(row["role"], "voter", "{nodes}");
        // Two of three still commit.
        c.cli(watcher, &["config", "set", "two.of.three", "yes"])?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

/// A write forwarded by a follower commits on the leader, whose reply is then lost (fault
/// injection: the leader never answers the first forward). The follower sends the same bytes
/// again after its attempt timeout; the request id makes the leader's state machine answer
/// with the first outcome instead of applying the write a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_whose_reply_is_lost_applies_once() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = LocalOptions {
        env: vec![("OUTPOST_FAULT_DROP_FORWARD_REPLIES".into(), "1".into())],
        log_level: "info".into(),
        ..LocalOptions::default()
    };
    let mut c = LocalCluster::start(dir.path(), &exe(), 3, opts)
        .await
        .expect("three-node cluster");
    let r = async {
        let leader = c.leader(Duration::from_secs(20)).await?;
        let follower = (leader + 1) % 3;
        let out = c.cli(follower, &["config", "set", "lost.reply", "v"])?;
        assert_eq!(out.trim(), "version 1", "applied twice: {out}");
        let log = std::fs::read_to_string(&c.nodes[leader].log)?;
        assert!(
            log.contains("fault injection: the reply to a committed forward is dropped"),
            "the fault did not fire"
        );
        let entry = c.cli(leader, &["config", "get", "lost.reply", "--linearizable"])?;
        assert_eq!(entry.trim(), "v");
        let audit: Vec<serde_json::Value> =
            serde_json::from_str(&c.cli(leader, &["audit", "--json", "--limit", "1000"])?)?;
        let sets = audit
            .iter()
            .filter(|a| a["action"] == "config.set" && a["target"] == "config:global/lost.reply")
            .count();
        assert_eq!(sets, 1, "audit: {audit:?}");
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

/// One PUT /v1/config over the node's local socket with the request id `rid`; the version
/// it answers.
fn put_config(dir: &std::path::Path, rid: &str, value: &str) -> Result<u64> {
    use std::io::{Read, Write};
    let body = format!(r#"{{"key":"retried","value":"{value}","scope":"global"}}"#);
    let mut s = std::os::unix::net::UnixStream::connect(dir.join("admin.sock"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "PUT /v1/config HTTP/1.1\r\nHost: outpost\r\nContent-Type: application/json\r\noutpost-request-id: {rid}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let json = answer
        .split("\r\n\r\n")
        .nth(1)
        .with_context(|| format!("no body in {answer:?}"))?;
    let v: serde_json::Value = serde_json::from_str(json.trim())
        .or_else(|_| {
            // A chunked body: the JSON is on the line between the chunk sizes.
            json.lines()
                .find(|l| l.starts_with('{'))
                .map(serde_json::from_str)
                .unwrap_or_else(|| serde_json::from_str(""))
        })
        .with_context(|| format!("answer {answer:?}"))?;
    v["version"].as_u64().with_context(|| format!("{v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_again_by_its_client_applies_once() {
    let _g = serial();
    let (_d, c) = cluster(1, &[]).await.expect("one-node cluster");
    let r = async {
        let dir = c.nodes[0].dir.clone();
        // The client's retry of the same request (same id) gets the first outcome back.
        assert_eq!(put_config(&dir, "retry-0123456789abcdef", "a")?, 1);
        assert_eq!(put_config(&dir, "retry-0123456789abcdef", "a")?, 1);
        assert_eq!(c.cli(0, &["config", "get", "retried"])?.trim(), "a");
        // Another request is another write.
        assert_eq!(put_config(&dir, "retry-fedcba9876543210", "b")?, 2);
        let audit = c.cli(0, &["audit", "--json"])?;
        let sets = audit.matches("config:global/retried").count();
        assert_eq!(sets, 2, "{audit}");
        Ok(())
    }
    .await;
    or_dump(&c, r);
}

/// kill -9 of the leader: its kernel closes the connections it had opened to the followers,
/// and they campaign at once instead of waiting out the lease and the election timeout (fast
/// failover, `raft/src/failover.rs`). The election timeouts here are long (2-4 s, so no
/// follower campaigns on a timer for at least 6 s after the last heartbeat), so the leader that
/// follows can only come from that path, and it shows: its term is the term of its own fast
/// campaign. Before that, a killed follower changes nothing: only the leader's connections
/// closing count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_by_a_fast_election() {
    let _g = serial();
    let (_dir, mut c) = cluster(3, &["--election-timeout-ms", "2000-4000"])
        .await
        .expect("three-node cluster");
    let r = async {
        let leader = c.leader(T).await?;
        let before = c.status(leader).await?;

        // A follower killed and back: same leader, same term, no campaign anywhere.
        let follower = (leader + 1) % 3;
        c.kill9(follower);
        c.cli(leader, &["config", "set", "while.follower.down", "yes"])?;
        c.serve(follower).await?;
        let applied = c.status(leader).await?.applied_index;
        c.wait_for(follower, T, "caught up", |s| s.applied_index >= applied)
            .await?;
        for i in 0..3 {
            let s = c.status(i).await?;
            assert_eq!(
                (s.leader_id, s.term, s.fast_elections),
                (before.leader_id, before.term, 0),
                "{} after a follower's restart",
                c.nodes[i].name
            );
        }

        // The leader killed: a survivor wins the term it campaigned for at once.
        c.kill9(leader);
        let new_leader = c.leader(T).await?;
        assert_ne!(new_leader, leader, "a killed node cannot lead");
        let s = c
            .wait_for(new_leader, T, "leads", |s| s.leader_id == Some(s.node_id))
            .await?;
        assert!(s.term > before.term, "{s:?}");
        assert!(s.fast_elections >= 1, "no fast campaign: {s:?}");
        assert_eq!(
            s.fast_election_term,
            Some(s.term),
            "the leader did not win its fast campaign's term: {s:?}"
        );
        let metrics = outpost::shared::client::local_client(&c.nodes[new_leader].dir)
            .call_raw(hyper::Method::GET, "/metrics", None::<&()>)
            .await?;
        let metrics = String::from_utf8_lossy(&metrics);
        assert!(
            metrics.contains(&format!(
                "outpost_raft_fast_elections_total {}\n",
                s.fast_elections
            )),
            "{metrics}"
        );
        let other = (0..3)
            .find(|i| *i != leader && *i != new_leader)
            .context("the third node")?;
        c.cli(other, &["config", "set", "after.fast.failover", "yes"])?;
        assert_eq!(
            c.cli(new_leader, &["config", "get", "after.fast.failover"])?
                .trim(),
            "yes"
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}
