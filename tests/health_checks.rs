//! Client health checks end to end (issue 23), on a one-node loopback cluster with real
//! agents: a signed config bundle declares `agent.check.*`; each agent runs the checks at its
//! sync and reports them in its facts; `client list --failing` shows the client whose check
//! fails, `client show` its detail, and fixing the cause clears it at the next sync. A disk
//! check fails only past its share. `agent status` shows the last results on the machine.
//! `config set agent.check.*` is refused (signed only), and `client list --unseen` shows a
//! client that never synced.

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use outpost::harness::localcluster::LocalCluster;
use outpost::wire::ClientRecord;
use support::agents::{Agent, Fleet};
use support::local::{enroll_agent, trusted_cluster};
use support::{exe, or_dump, s, serial, wait_for};

/// A signed bundle (key `key`) whose config payload declares the checks: everyone runs
/// `cmd.flag` (fails while `./flag` exists in the agent's working directory, its state
/// directory); group `disk` also runs a disk check that cannot fail (100 %) and one that
/// cannot pass (0 %).
fn checks_bundle(c: &LocalCluster, root: &Path, key: &Path) -> Result<String> {
    let usb = root.join("usb");
    std::fs::create_dir_all(usb.join("files"))?;
    std::fs::write(
        usb.join("files/checks.toml"),
        "[global]\n\"agent.check.cmd.flag\" = \"test ! -e flag\"\n\
         \"agent.check.timeout\" = \"20s\"\n\n\
         [group.disk]\n\"agent.check.disk.full\" = \"/ 100%\"\n\"agent.check.disk.none\" = \"/ 0%\"\n",
    )?;
    let spec = usb.join("spec.toml");
    std::fs::write(
        &spec,
        "channel = \"site\"\nversion = 1\n\n[[payload]]\npath = \"files/checks.toml\"\nkind = \"config\"\n",
    )?;
    let bundle = usb.join("checks-1.obundle");
    c.run_ok(&[
        "bundle",
        "create",
        "--spec",
        s(&spec),
        "--key",
        s(key),
        "-o",
        s(&bundle),
    ])?;
    Ok(s(&bundle).to_string())
}

/// `client list --json` with `extra` filters.
fn list(c: &LocalCluster, extra: &[&str]) -> Result<Vec<ClientRecord>> {
    let mut args = vec!["client", "list", "--json"];
    args.extend(extra);
    Ok(serde_json::from_str(&c.cli(0, &args)?)?)
}

fn ids(list: &[ClientRecord]) -> Vec<String> {
    list.iter().map(|c| c.id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_check_shows_on_its_client_and_clears_when_fixed() {
    let _g = serial();
    let root = tempfile::tempdir().expect("tempdir");
    let (key, c) = trusted_cluster(root.path(), "release", "cluster", 1, &[])
        .await
        .expect("one trusting node");
    let r = async {
        // Signed only: no admin sets a check, not even one that only reads.
        for (key, value) in [("agent.check.cmd.x", "true"), ("agent.check.disk", "/ 90%")] {
            let refused = c
                .cli(0, &["config", "set", key, value])
                .expect_err("config set of a check key");
            assert!(
                format!("{refused:#}").contains("signed bundle"),
                "{key}: {refused:#}"
            );
        }
        let bundle = checks_bundle(&c, root.path(), &key)?;
        c.cli(0, &["bundle", "import", &bundle])?;

        let fleet = Fleet::new(&exe());
        let server = vec![c.nodes[0].api_addr.clone()];
        let token = |group: &str| -> Result<String> {
            let mut args = vec!["token", "create", "--kind", "client"];
            if !group.is_empty() {
                args.extend(["--group", group]);
            }
            Ok(c.cli(0, &args)?.trim().to_string())
        };
        // `bad` starts with the flag its check looks for; `disky` is in group disk.
        let agents = root.path().join("agents");
        std::fs::create_dir_all(agents.join("bad-0"))?;
        std::fs::write(agents.join("bad-0/flag"), b"x")?;
        let bad: Agent = fleet
            .enroll(&agents, "bad", 1, &token("")?, &server)?
            .remove(0);
        let disky: Agent = fleet
            .enroll(&agents, "disky", 1, &token("disk")?, &server)?
            .remove(0);
        // Enrolled, never synced.
        let silent_dir = agents.join("silent");
        std::fs::create_dir_all(&silent_dir)?;
        let silent = enroll_agent(
            |args| fleet.run_in(&silent_dir, args),
            &token("")?,
            &server[0],
            &silent_dir,
            &["--hostname", "silent"],
        )?;

        // Failing: `bad` with its flag check only, `disky` with the 0 % disk check only.
        let failing = list(&c, &["--failing"])?;
        let mut want = vec![bad.id.clone(), disky.id.clone()];
        want.sort();
        assert_eq!(ids(&failing), want, "{failing:?}");
        for record in &failing {
            let expect: &[&str] = if record.id == bad.id {
                &["cmd.flag"]
            } else {
                &["disk.none"]
            };
            assert_eq!(record.failing, expect, "{}", record.id);
        }
        let table = c.cli(0, &["client", "list", "--failing"])?;
        assert!(
            table.contains("FAILING") && table.contains("cmd.flag") && !table.contains("silent"),
            "{table}"
        );
        let shown = c.cli(0, &["client", "show", &bad.id])?;
        assert!(
            shown.contains("failing checks:") && shown.contains("cmd.flag: exit 1"),
            "{shown}"
        );
        // The agent keeps its last results for `agent status`.
        let status = fleet.run_in(&bad.dir, &["agent", "status", "--state-dir", s(&bad.dir)])?;
        assert!(
            status.contains("failing: 1") && status.contains("cmd.flag: exit 1"),
            "{status}"
        );
        let shown = c.cli(0, &["client", "show", &disky.id])?;
        assert!(
            shown.contains("disk.none: /:") && shown.contains("% used, over 0%"),
            "{shown}"
        );
        assert!(!shown.contains("disk.full"), "100% never fails: {shown}");
        let all = list(&c, &[])?;
        let silent_record = all.iter().find(|r| r.id == silent).context("silent")?;
        assert!(silent_record.failing.is_empty() && silent_record.last_seen.is_none());

        // Fixed: the next sync clears it.
        std::fs::remove_file(bad.dir.join("flag"))?;
        fleet.sync(&bad)?;
        assert_eq!(
            ids(&list(&c, &["--failing"])?),
            std::slice::from_ref(&disky.id)
        );
        assert!(
            c.cli(0, &["client", "show", &bad.id])?
                .contains("failing checks: none")
        );

        // Unseen: once the node has recorded the two syncs (it flushes last-seen times every
        // few seconds), `--unseen 1h` is the client that never synced, alone.
        wait_for(
            Duration::from_secs(60),
            "the syncs recorded as seen",
            || {
                let all = list(&c, &[]).ok()?;
                all.iter()
                    .filter(|r| r.id != silent)
                    .all(|r| r.last_seen.is_some())
                    .then_some(())
            },
        );
        assert_eq!(
            ids(&list(&c, &["--unseen", "1h"])?),
            std::slice::from_ref(&silent)
        );
        assert!(ids(&list(&c, &["--unseen", "1h", "--failing"])?).is_empty());
        let bad_duration = c
            .cli(0, &["client", "list", "--unseen", "soon"])
            .expect_err("not a duration");
        assert!(
            format!("{bad_duration:#}").contains("soon"),
            "{bad_duration:#}"
        );
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}
