//! `outpost demo`: a three-node cluster on 127.0.0.1 in a temporary directory, formed through
//! the same init/join/serve path an operator uses, then shown working.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::harness::localcluster::{LocalCluster, LocalOptions};

pub async fn run(exit: bool) -> Result<()> {
    let root = tempfile::Builder::new()
        .prefix("outpost-demo-")
        .tempdir()
        .context("creating a temp dir")?;
    let exe = std::env::current_exe()?;
    println!(
        "Outpost demo: three nodes on 127.0.0.1, data under {}",
        root.path().display()
    );
    println!(
        "- outpost init (node1), outpost serve, then token create + join + serve for node2 and node3 ..."
    );
    // The release key a vendor would keep offline; the cluster pins its public half at init.
    let keys = root.path().join("keys");
    std::fs::create_dir_all(&keys)?;
    let release_key = keys.join("release");
    outpost_bundles::keygen(&release_key)?;
    let release_pub = format!("{}.pub", release_key.display());
    println!("- outpost bundle keygen -o {}", release_key.display());
    let opts = LocalOptions {
        log_level: "warn".into(),
        init_args: vec!["--bundle-trust".into(), release_pub.clone()],
        ..LocalOptions::default()
    };
    let mut cluster = LocalCluster::start(root.path(), &exe, 3, opts).await?;
    for n in &cluster.nodes {
        println!(
            "  {:<6} api https://{}  peer {}  data {}",
            n.name,
            n.api_addr,
            n.peer_addr,
            n.dir.display()
        );
    }
    let leader = cluster.leader(Duration::from_secs(10)).await?;
    let status = cluster.status(0).await?;
    println!(
        "- cluster {} formed: {} voters, leader {} (term {})",
        status.cluster_id,
        status.members.iter().filter(|m| m.voter).count(),
        cluster.nodes[leader].name,
        status.term
    );
    let follower = (leader + 1) % cluster.nodes.len();
    let reader = (leader + 2) % cluster.nodes.len();
    let out = cluster.cli(follower, &["config", "set", "site.name", "Demo plant"])?;
    println!(
        "- config set site.name \"Demo plant\" on follower {}: {}",
        cluster.nodes[follower].name,
        out.trim()
    );
    let value = cluster.cli(reader, &["config", "get", "site.name", "--linearizable"])?;
    println!(
        "- config get site.name --linearizable on {}: {}",
        cluster.nodes[reader].name,
        value.trim()
    );
    // One signed bundle, as it would arrive on a USB stick, imported on a follower.
    let usb = root.path().join("usb");
    std::fs::create_dir_all(usb.join("files"))?;
    std::fs::write(
        usb.join("files/hello.sh"),
        "#!/bin/sh\necho \"hello from the demo bundle\"\n",
    )?;
    std::fs::write(
        usb.join("files/site.toml"),
        // The lab group's install handler comes with the signed bundle: code that runs on
        // clients is never set by `config set`.
        "[group.lab]\nmotd = \"Welcome to the demo plant\"\n\"agent.handler.artifact\" = 'sh \"$OUTPOST_ARTIFACT\"'\n",
    )?;
    let spec = usb.join("spec.toml");
    std::fs::write(
        &spec,
        "channel = \"site\"\nversion = 1\n\n[[payload]]\npath = \"files/hello.sh\"\nkind = \"artifact\"\nname = \"hello\"\n\n[[payload]]\npath = \"files/site.toml\"\nkind = \"config\"\n",
    )?;
    let bundle = usb.join("site-1.obundle");
    let (spec_s, bundle_s, key_s) = (
        spec.to_string_lossy().to_string(),
        bundle.to_string_lossy().to_string(),
        release_key.to_string_lossy().to_string(),
    );
    let created = run_ok(
        &cluster,
        &[
            "bundle", "create", "--spec", &spec_s, "--key", &key_s, "-o", &bundle_s,
        ],
    )?;
    println!("- outpost bundle create: {}", created.trim());
    let imported = cluster.cli(follower, &["bundle", "import", &bundle_s])?;
    println!(
        "- outpost bundle import on {}: {}",
        cluster.nodes[follower].name,
        imported.trim()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let listing = loop {
        let listing = cluster.cli(leader, &["bundle", "list"])?;
        let everywhere = listing
            .lines()
            .filter(|l| l.contains(" bytes "))
            .all(|l| l.contains(&format!("on {0}/{0}", cluster.nodes.len())));
        if everywhere || std::time::Instant::now() > deadline {
            break listing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("- outpost bundle list (blobs replicated to every node by sha256):");
    for line in listing.lines() {
        println!("  {line}");
    }

    // One agent: a client token for group "lab", enrollment through node3, one sync.
    cluster.cli(
        0,
        &["config", "set", "ntp.server", "10.0.0.1", "--group", "lab"],
    )?;
    let token = cluster.cli(
        0,
        &["token", "create", "--kind", "client", "--group", "lab"],
    )?;
    let agent_dir = root.path().join("agent");
    let agent = agent_dir.to_string_lossy().to_string();
    let server = cluster.nodes[2].api_addr.clone();
    let enrolled = run_ok(
        &cluster,
        &[
            "agent",
            "enroll",
            "--token",
            token.trim(),
            "--server",
            &server,
            "--state-dir",
            &agent,
            "--hostname",
            "demo-agent",
        ],
    )?;
    println!("- agent enroll via node3: {}", enrolled.trim());
    // Deploy the bundle's artifact to the lab group; the handler its config payload set runs it.
    let deployed = cluster.cli(
        leader,
        &[
            "deployment",
            "create",
            "--artifact",
            "hello",
            "--group",
            "lab",
        ],
    )?;
    println!(
        "- deployment create --artifact hello --group lab: {}",
        deployed.trim()
    );
    let deployment_id = deployed
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let synced = run_ok(
        &cluster,
        &["agent", "sync", "--once", "--state-dir", &agent],
    )?;
    println!("- agent sync --once:");
    for line in synced.lines() {
        println!("  {line}");
    }
    let status = cluster.cli(reader, &["deployment", "status", &deployment_id])?;
    println!(
        "- deployment status {deployment_id} on {}:",
        cluster.nodes[reader].name
    );
    for line in status.lines() {
        println!("  {line}");
    }
    let config = std::fs::read_to_string(agent_dir.join("config.json"))
        .context("reading the agent's config.json")?;
    println!(
        "  {}/config.json: {}",
        agent,
        config.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    let d = cluster.nodes[0].dir.display().to_string();
    // The web console: every node serves it; a one-time link signs the operator in.
    crate::harness::console::add_account(&cluster, 0, "demo")?;
    let link = cluster.cli(0, &["console", "login", "--as", "demo"])?;
    println!(
        "\nWeb console (every node serves it; the browser must trust {d}/ca.crt, see README 'Console'):"
    );
    for n in &cluster.nodes {
        println!("  {}: https://{}/", n.name, n.api_addr);
    }
    println!(
        "  one-time sign-in link (5 minutes, works once): {}",
        link.trim()
    );
    println!("\nTry, in another terminal:");
    println!("  outpost status --data-dir {d}");
    println!("  outpost node list --data-dir {d}");
    println!("  outpost config set greeting hello --group lab --data-dir {d}");
    println!("  outpost audit --data-dir {d}");
    println!("  outpost client list --data-dir {d}");
    println!("  outpost bundle list --data-dir {d}");
    println!("  outpost deployment list --data-dir {d}");
    println!("  outpost bundle inspect {bundle_s}");
    println!("  outpost agent sync --once --state-dir {agent}");
    println!("  outpost bench write --data-dir {d} --clients 64 --seconds 5");
    println!("  outpost console login --data-dir {d}          # another sign-in link");
    if exit {
        println!("\nStopping the demo cluster.");
    } else {
        println!("\nThe cluster runs until Ctrl-C.");
        tokio::signal::ctrl_c().await?;
    }
    for i in 0..cluster.nodes.len() {
        cluster.stop(i, Duration::from_secs(5))?;
    }
    Ok(())
}

fn run_ok(cluster: &LocalCluster, args: &[&str]) -> Result<String> {
    let out = cluster.run(args)?;
    if !out.status.success() {
        anyhow::bail!(
            "outpost {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}
