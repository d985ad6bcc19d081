//! Deployments end to end through the real binary: a bundle's artifact assigned to a group
//! reaches an enrolled agent (download resumed from a partial file, sha256 checked), its
//! handler runs, and the result shows on every node; a failing handler reports `failed`;
//! a client cannot download a blob not assigned to it; a certificate near the end of its
//! life is renewed and the agent keeps syncing with the new one.

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::{
    exe, local::enroll_agent, local::keygen, local::trusting, or_dump, run_ok, s, serial,
    sha256_hex,
};

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use outpost::harness::localcluster::{LocalCluster, LocalOptions};
use outpost::shared::client::{ApiClient, ApiFailure, Endpoint};

const T: Duration = Duration::from_secs(30);
/// Client certificates of this test's nodes live this long (renewal after two thirds).
const CERT_SECS: u64 = 24;

/// A TOML basic string holding `v`.
fn toml_string(v: &str) -> String {
    serde_json::to_string(v).expect("a string serializes")
}

async fn wait_status(
    c: &LocalCluster,
    i: usize,
    id: &str,
    client: &str,
) -> Result<serde_json::Value> {
    let deadline = Instant::now() + T;
    loop {
        let v: serde_json::Value =
            serde_json::from_str(&c.cli(i, &["deployment", "status", id, "--json"])?)?;
        if let Some(r) = v["results"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["client_id"] == client))
        {
            return Ok(r.clone());
        }
        if Instant::now() > deadline {
            bail!("no result of {client} for {id} on node {i}: {v}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_reaches_agents_and_results_come_back() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let key = keygen(&root, "release");
    let opts = LocalOptions {
        env: vec![("OUTPOST_CLIENT_CERT_SECS".into(), CERT_SECS.to_string())],
        ..trusting(&key)
    };
    let c = LocalCluster::start(&root.join("cluster"), &exe(), 3, opts)
        .await
        .expect("three-node cluster");
    let r = async {
        // A bundle with two artifacts.
        let tool: Vec<u8> = (0..400_000u32).map(|i| (i % 241) as u8).collect();
        std::fs::write(root.join("tool.bin"), &tool)?;
        std::fs::write(root.join("secret.bin"), b"not for everyone")?;
        // The lab handler records what it installed; the other group's handler fails. Code
        // that runs on clients comes only from a signed bundle's config payload.
        let marker = root.join("installed.txt");
        let handler = format!(
            "sha256sum \"$OUTPOST_ARTIFACT\" > {} && echo \"$OUTPOST_ARTIFACT_NAME@$OUTPOST_ARTIFACT_VERSION $OUTPOST_DEPLOYMENT\" >> {}",
            marker.display(),
            marker.display()
        );
        let handlers = format!(
            "[group.lab]\n\"agent.handler.artifact\" = {}\n[group.other]\n\"agent.handler.artifact\" = {}\n",
            toml_string(&handler),
            toml_string("echo boom >&2; exit 3")
        );
        std::fs::write(root.join("handlers.toml"), handlers)?;
        std::fs::write(
            root.join("spec.toml"),
            "channel = \"site\"\nversion = 1\n[[payload]]\npath = \"tool.bin\"\nkind = \"artifact\"\nname = \"tool\"\n[[payload]]\npath = \"secret.bin\"\nkind = \"artifact\"\nname = \"secret\"\n[[payload]]\npath = \"handlers.toml\"\nkind = \"config\"\nname = \"handlers\"\n",
        )?;
        let bundle = root.join("b.obundle");
        run_ok(&c, &["bundle", "create", "--spec", s(&root.join("spec.toml")), "--key", s(&key), "-o", s(&bundle)])?;
        c.cli(0, &["bundle", "import", s(&bundle)])?;

        // Agents: A in lab, B in other, C (no group) for renewal.
        let tok = |g: &str| -> Result<String> {
            let mut args = vec!["token", "create", "--kind", "client"];
            if !g.is_empty() {
                args.extend(["--group", g]);
            }
            Ok(c.cli(0, &args)?.trim().to_string())
        };
        let (a, b, cc) = (root.join("a"), root.join("b"), root.join("c"));
        let c_enrolled = Instant::now();
        let id_c = enroll_agent(|args| run_ok(&c, args), &tok("")?, &c.nodes[0].api_addr, &cc, &[])?;
        let id_a = enroll_agent(|args| run_ok(&c, args), &tok("lab")?, &c.nodes[1].api_addr, &a, &[])?;
        let id_b = enroll_agent(|args| run_ok(&c, args), &tok("other")?, &c.nodes[2].api_addr, &b, &[])?;

        // `config set` of a handler is refused with the reason, on any node.
        let refused = c.run(&["config", "set", "agent.handler.artifact", "rm -rf /", "--group", "lab", "--data-dir", s(&c.nodes[1].dir)])?;
        assert!(!refused.status.success());
        assert!(String::from_utf8_lossy(&refused.stderr).contains("signed bundle"), "{}", String::from_utf8_lossy(&refused.stderr));
        let d1 = c.cli(0, &["deployment", "create", "--artifact", "tool@1", "--group", "lab"])?;
        let d1 = d1.split_whitespace().next().context("deployment id")?.to_string();
        let refused = c.run(&["deployment", "create", "--artifact", "tool@9", "--group", "lab", "--data-dir", s(&c.nodes[0].dir)])?;
        assert!(!refused.status.success());
        assert!(String::from_utf8_lossy(&refused.stderr).contains("no artifact tool@9"));

        // Resume: the agent already holds the first 1000 bytes from an interrupted download.
        let sha = sha256_hex(&tool);
        std::fs::create_dir_all(a.join("artifacts/partial"))?;
        std::fs::write(a.join("artifacts/partial").join(&sha), &tool[..1000])?;
        let synced = run_ok(&c, &["agent", "sync", "--once", "--state-dir", s(&a)])?;
        assert!(synced.contains(&format!("deployment {d1} tool@1: installed")), "{synced}");
        let recorded = std::fs::read_to_string(&marker)?;
        assert!(recorded.contains(&sha) && recorded.contains(&format!("tool@1 {d1}")), "{recorded}");
        assert_eq!(std::fs::read(a.join("artifacts").join(&sha))?, tool);
        assert!(!a.join("artifacts/partial").join(&sha).exists());
        for i in 0..3 {
            let r = wait_status(&c, i, &d1, &id_a).await?;
            assert_eq!(r["status"], "installed", "node {i}: {r}");
        }
        // Installed once: the next sync does not run it again.
        let again = run_ok(&c, &["agent", "sync", "--once", "--state-dir", s(&a)])?;
        assert!(!again.contains("deployment "), "{again}");

        // A failing handler reports failed with its exit code and stderr.
        let d2 = c.cli(0, &["deployment", "create", "--artifact", "tool", "--group", "other", "--id", "d-other"])?;
        assert!(d2.starts_with("d-other"));
        let synced = run_ok(&c, &["agent", "sync", "--once", "--state-dir", s(&b)])?;
        assert!(synced.contains("failed"), "{synced}");
        let r = wait_status(&c, 0, "d-other", &id_b).await?;
        assert_eq!(r["status"], "failed");
        let detail = r["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("exit 3") && detail.contains("boom"), "{detail}");
        let st: serde_json::Value = serde_json::from_str(&c.cli(0, &["deployment", "status", &d1, "--json"])?)?;
        assert_eq!(st["pending"].as_array().map(Vec::len), Some(0), "{st}");

        // B may fetch its own assignment but not a blob it was never given.
        let tls = {
            let rd = |f: &str| std::fs::read_to_string(b.join(f));
            let ca = rd("ca.crt")?;
            let id = outpost_certs::TlsIdentity::from_pem(&rd("client.crt")?, &rd("client.key")?, &ca)?;
            outpost_certs::client_config(&ca, Some(&id), &[b"http/1.1"])?
        };
        let api = ApiClient::new(Endpoint::Tls {
            addr: c.nodes[1].api_addr.clone(),
            config: tls,
            server_name: outpost_certs::ANY_NODE_SERVER_NAME.into(),
        });
        let secret_sha = sha256_hex(b"not for everyone");
        let err = api
            .call_raw(hyper::Method::GET, &format!("/v1/agent/artifacts/{secret_sha}"), None::<&()>)
            .await
            .err()
            .context("an unassigned blob was served")?;
        let failure = err.downcast_ref::<ApiFailure>().context("not an API refusal")?;
        assert_eq!(failure.status.as_u16(), 403, "{}", failure.message);
        let own = api
            .call_raw(hyper::Method::GET, &format!("/v1/agent/artifacts/{sha}"), None::<&()>)
            .await?;
        assert_eq!(own.len(), tool.len());

        // Renewal: once two thirds of C's certificate life are gone, a sync renews it.
        let due = c_enrolled + Duration::from_secs(CERT_SECS * 2 / 3 + 1);
        let now = Instant::now();
        if due > now {
            tokio::time::sleep(due - now).await;
        }
        let old_serial = {
            let v: serde_json::Value = serde_json::from_str(&c.cli(0, &["client", "show", &id_c, "--json"])?)?;
            v["cert_serial"].as_str().unwrap_or_default().to_string()
        };
        let synced = run_ok(&c, &["agent", "sync", "--once", "--state-dir", s(&cc)])?;
        let new_serial = synced
            .lines()
            .find_map(|l| l.strip_prefix("certificate renewed: serial "))
            .with_context(|| format!("not renewed: {synced}"))?
            .trim()
            .to_string();
        assert_ne!(new_serial, old_serial);
        let deadline = Instant::now() + T;
        loop {
            let v: serde_json::Value = serde_json::from_str(&c.cli(2, &["client", "show", &id_c, "--json"])?)?;
            if v["cert_serial"] == new_serial.as_str() {
                break;
            }
            if Instant::now() > deadline {
                bail!("new serial not recorded on node 3: {v}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The new pair works.
        let synced = run_ok(&c, &["agent", "sync", "--once", "--state-dir", s(&cc)])?;
        assert!(synced.starts_with("synced with"), "{synced}");
        assert!(!cc.join("client.crt.new").exists());
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}
