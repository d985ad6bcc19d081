//! The web console in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
//! driven through WebDriver by fantoccini), against three real nodes on 127.0.0.1.
//!
//! The browser verifies the nodes' certificates: the cluster CA is trusted in a scratch NSS
//! database (certutil), as an operator imports `ca.crt` once, and the name the node
//! certificates carry (`any.node.outpost`) is mapped to 127.0.0.1 (`--host-resolver-rules`).
//! A screenshot of every page is saved under the test's temp dir and copied to
//! `/work/console-shots/` when that directory can be made.
//!
//! The rollout steps (labels from a client's page, a new deployment through its preview, the
//! brake's halt, the abort's confirmation) run between the deployment and the revocation.
//!
//! Without chromium, chromedriver or certutil the test fails under `CI` and is skipped with a
//! printed reason elsewhere (`.ci/deps-console.sh` installs them).

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::{exe, local::trusting, or_dump, run_ok, serial};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use outpost::harness::localcluster::{LocalCluster, free_port};

const T: Duration = Duration::from_secs(30);
const HOST: &str = "any.node.outpost";

/// A program on PATH, or where Debian puts it.
fn find(name: &str, also: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .chain(also.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// chromium (the binary itself, not Debian's wrapper script), chromedriver and certutil, or
/// why not.
fn tools() -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let chromium = find("chromium", &[])
        .map(|p| {
            let real = PathBuf::from("/usr/lib/chromium/chromium");
            if real.is_file() { real } else { p }
        })
        .ok_or("chromium is not installed")?;
    let driver = find("chromedriver", &["/usr/lib/chromium/chromedriver"])
        .ok_or("chromedriver is not installed (chromium-driver)")?;
    let certutil = find("certutil", &[]).ok_or("certutil is not installed (libnss3-tools)")?;
    Ok((chromium, driver, certutil))
}

/// chromedriver on a loopback port with HOME in `home` (Chromium reads trusted roots from
/// `$HOME/.pki/nssdb`); killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver(driver: &Path, home: &Path, log: &Path) -> Result<Driver> {
    let port = free_port()?;
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .arg(format!("--log-path={}", log.display()))
        .env("HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting chromedriver")?;
    let d = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("chromedriver did not listen on {port} within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(d)
}

/// Trusts the cluster CA in a new NSS database under `home`.
fn trust_ca(certutil: &Path, home: &Path, ca: &Path) -> Result<()> {
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db)?;
    let db = format!("sql:{}", db.display());
    for args in [
        vec!["-N", "-d", &db, "--empty-password"],
        vec![
            "-A",
            "-d",
            &db,
            "-t",
            "C,,",
            "-n",
            "outpost-cluster-ca",
            "-i",
            ca.to_str().context("utf-8 path")?,
        ],
    ] {
        let out = Command::new(certutil).args(&args).output()?;
        if !out.status.success() {
            bail!(
                "certutil {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}

async fn browser(driver: &Driver, chromium: &Path, profile: &Path) -> Result<Client> {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--window-size=1360,1000",
                format!("--user-data-dir={}", profile.display()),
                format!("--host-resolver-rules=MAP {HOST} 127.0.0.1"),
            ],
        }),
    );
    Ok(ClientBuilder::new(hyper_util_connector())
        .capabilities(caps)
        .connect(&driver.url)
        .await?)
}

/// chromedriver speaks plain HTTP on loopback.
fn hyper_util_connector() -> hyper_util::client::legacy::connect::HttpConnector {
    hyper_util::client::legacy::connect::HttpConnector::new()
}

/// The body's text once it contains `needle` (the page may still be loading after a click).
async fn wait_text(c: &Client, needle: &str) -> Result<String> {
    let deadline = Instant::now() + T;
    loop {
        let text = match c.find(Locator::Css("body")).await {
            Ok(b) => b.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(needle) {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!("the page never showed {needle:?}; it shows:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn body(c: &Client) -> Result<String> {
    Ok(c.find(Locator::Css("body")).await?.text().await?)
}

/// Saves a screenshot of the page as `name.png` in `dir` and in /work/console-shots/.
async fn shot(c: &Client, dir: &Path, name: &str) -> Result<()> {
    let png = c.screenshot().await?;
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, &png)?;
    let review = Path::new("/work/console-shots");
    if std::fs::create_dir_all(review).is_ok() {
        let _ = std::fs::write(review.join(format!("{name}.png")), &png);
    }
    println!("screenshot {}", path.display());
    Ok(())
}

/// The API address of node `i` under the name its certificate carries.
fn url(c: &LocalCluster, i: usize, path: &str) -> String {
    let port = c.nodes[i].api_addr.rsplit(':').next().unwrap_or_default();
    format!("https://{HOST}:{port}{path}")
}

/// One signed bundle of channel `site` at `version`: an artifact whose handler fails (so the
/// deployments page has a failure to show), the lab group's handler and settings, and
/// `global` (TOML lines of the `[global]` table) when not empty.
fn make_bundle(
    c: &LocalCluster,
    root: &Path,
    key: &Path,
    version: u64,
    global: &str,
) -> Result<PathBuf> {
    let usb = root.join("usb");
    std::fs::create_dir_all(usb.join("files"))?;
    std::fs::write(
        usb.join("files/tool.sh"),
        "#!/bin/sh\necho 'installing tool 1.4'\necho 'tool: /opt/tool is on a read-only file system' >&2\nexit 3\n",
    )?;
    std::fs::write(
        usb.join("files/site.toml"),
        format!(
            "[group.lab]\nmotd = \"Welcome to the lab\"\n\"agent.handler.artifact\" = 'sh \"$OUTPOST_ARTIFACT\"'\n{}",
            if global.is_empty() {
                String::new()
            } else {
                format!("[global]\n{global}\n")
            }
        ),
    )?;
    let spec = usb.join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "channel = \"site\"\nversion = {version}\n\n[[payload]]\npath = \"files/tool.sh\"\nkind = \"artifact\"\nname = \"tool\"\n\n[[payload]]\npath = \"files/site.toml\"\nkind = \"config\"\n"
        ),
    )?;
    let bundle = usb.join(format!("site-{version}.obundle"));
    let s = |p: &Path| p.to_string_lossy().into_owned();
    run_ok(
        c,
        &[
            "bundle",
            "create",
            "--spec",
            &s(&spec),
            "--key",
            &s(key),
            "-o",
            &s(&bundle),
        ],
    )?;
    Ok(bundle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    let _g = serial();
    let (chromium, driver_bin, certutil) = match tools() {
        Ok(t) => t,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("the console's browser test needs {why}: run .ci/deps-console.sh")
        }
        Err(why) => {
            println!("skipped: {why} (.ci/deps-console.sh installs it)");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let key = root.join("release");
    outpost_bundles::keygen(&key).expect("keygen");
    let opts = trusting(&key);
    let c = LocalCluster::start(&root.join("cluster"), &exe(), 3, opts)
        .await
        .expect("three-node cluster");
    let r = walk(&c, &root, &key, (&chromium, &driver_bin, &certutil)).await;
    or_dump(&c, r);
}

async fn walk(
    c: &LocalCluster,
    root: &Path,
    key: &Path,
    (chromium, driver_bin, certutil): (&Path, &Path, &Path),
) -> Result<()> {
    let shots = root.join("shots");
    std::fs::create_dir_all(&shots)?;
    // Some state for the pages to show: configuration, a client in group lab with facts, a
    // bundle, and a deployment that fails on it.
    c.cli(0, &["config", "set", "ntp.server", "10.0.0.1"])?;
    c.cli(0, &["config", "set", "site.name", "North plant"])?;
    c.cli(
        1,
        &["config", "set", "syslog.host", "10.0.0.5", "--group", "lab"],
    )?;
    let token = c.cli(
        0,
        &["token", "create", "--kind", "client", "--group", "lab"],
    )?;
    let agent = root.join("agent");
    let agent_s = agent.to_string_lossy().into_owned();
    let enrolled = run_ok(
        c,
        &[
            "agent",
            "enroll",
            "--token",
            token.trim(),
            "--server",
            &c.nodes[1].api_addr,
            "--state-dir",
            &agent_s,
            "--hostname",
            "press-07",
        ],
    )?;
    let client_id = enrolled
        .split_whitespace()
        .nth(3)
        .context("client id in the enroll output")?
        .to_string();
    let bundle = make_bundle(c, root, key, 1, "")?;
    // Imported later: the four-eyes rule, which only a signed bundle may set.
    let approval = make_bundle(c, root, key, 2, "\"deploy.approval_above\" = \"0\"")?;
    c.cli(0, &["bundle", "import", &bundle.to_string_lossy()])?;
    let created = c.cli(
        0,
        &[
            "deployment",
            "create",
            "--artifact",
            "tool",
            "--group",
            "lab",
        ],
    )?;
    let deployment = created
        .split_whitespace()
        .next()
        .context("deployment id")?
        .to_string();
    let synced = run_ok(c, &["agent", "sync", "--once", "--state-dir", &agent_s])?;
    println!("agent sync: {}", synced.trim());
    let deadline = Instant::now() + T;
    // The JSON's results, not the text: every phase line of the text says "N failed".
    let failed = |out: &str| -> bool {
        serde_json::from_str::<serde_json::Value>(out).is_ok_and(|v| {
            v["results"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|r| r["status"] == "failed"))
        })
    };
    while !failed(&c.cli(0, &["deployment", "status", &deployment, "--json"])?) {
        if Instant::now() > deadline {
            bail!("the failed result never reached node 1");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let home = root.join("browser-home");
    trust_ca(certutil, &home, &c.nodes[0].dir.join("ca.crt"))?;
    let driver = start_driver(driver_bin, &home, &root.join("chromedriver.log"))?;
    let b = browser(&driver, chromium, &root.join("profile")).await?;
    let r = pages(c, &b, &shots, &client_id, &deployment, &agent, &approval).await;
    let _ = b.close().await;
    r
}

async fn pages(
    c: &LocalCluster,
    b: &Client,
    shots: &Path,
    client_id: &str,
    deployment: &str,
    agent: &Path,
    approval: &Path,
) -> Result<()> {
    let status = c.status(0).await?;
    // No session: the sign-in page and nothing of the cluster, on every route.
    b.goto(&url(c, 0, "/")).await?;
    let text = wait_text(b, "Sign in").await?;
    assert!(
        !text.contains("node2") && !text.contains(&status.cluster_id),
        "{text}"
    );
    shot(b, shots, "01-signin").await?;
    b.goto(&url(c, 0, &format!("/clients?q={client_id}")))
        .await?;
    let text = wait_text(b, "Sign in").await?;
    assert!(
        !text.contains(client_id) && !text.contains("press-07"),
        "{text}"
    );

    // The one-time link lands on the overview: three nodes and the leader.
    outpost::harness::console::add_account(c, 0, "alice")?;
    let link = c.cli(0, &["console", "login", "--as", "alice"])?;
    let link = link
        .trim()
        .replacen(&c.nodes[0].api_addr, &format!("{HOST}:{}", port(c, 0)), 1);
    let t = Instant::now();
    b.goto(&link).await?;
    let text = wait_text(b, "Nodes").await?;
    println!(
        "link to overview: {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let now = b.current_url().await?;
    assert_eq!(now.path(), "/", "{now}");
    for n in &c.nodes {
        assert!(text.contains(&n.name), "{} missing:\n{text}", n.name);
    }
    let leader = status.leader_id.context("a leader")?;
    let leader_name = &status
        .members
        .iter()
        .find(|m| m.id == leader)
        .context("leader row")?
        .name;
    assert!(
        text.contains(&format!("Leader: {leader_name} (node {leader})")),
        "{text}"
    );
    assert!(text.contains("leader"), "{text}");
    assert!(
        text.contains("failed on 1 of 1 clients"),
        "the failing deployment's alarm:\n{text}"
    );
    shot(b, shots, "02-overview").await?;

    // The same link a second time: refused.
    b.goto(&link).await?;
    let text = wait_text(b, "does not work").await?;
    assert!(text.contains("already used"), "{text}");
    shot(b, shots, "03-link-used").await?;

    // The session is valid on another node (same host name, same cookie).
    b.goto(&url(c, 2, "/config")).await?;
    let text = wait_text(b, "ntp.server").await?;
    assert!(text.contains("10.0.0.1"), "{text}");
    // Set a key through the form: committed as console:alice (an admin: no role was set).
    b.find(Locator::Css("form.setkey input[name=key]"))
        .await?
        .send_keys("console.greeting")
        .await?;
    b.find(Locator::Css("form.setkey input[name=value]"))
        .await?
        .send_keys("set in a browser")
        .await?;
    b.find(Locator::Css("form.setkey button"))
        .await?
        .click()
        .await?;
    wait_text(b, "console.greeting").await?;
    assert_eq!(
        c.cli(0, &["config", "get", "console.greeting", "--linearizable"])?
            .trim(),
        "set in a browser"
    );
    shot(b, shots, "04-config").await?;
    b.goto(&url(c, 0, "/config?scope=group:lab")).await?;
    let text = wait_text(b, "agent.handler.artifact").await?;
    assert!(
        text.contains("from a signed bundle"),
        "handler keys are read-only:\n{text}"
    );
    shot(b, shots, "05-config-group").await?;

    // Clients: search, one client, revoke with a confirmation.
    b.goto(&url(c, 0, "/clients?q=press")).await?;
    let text = wait_text(b, client_id).await?;
    assert!(
        text.contains("1 matching") && text.contains("lab"),
        "{text}"
    );
    shot(b, shots, "06-clients").await?;
    b.find(Locator::LinkText(client_id)).await?.click().await?;
    let text = wait_text(b, "Facts").await?;
    assert!(
        text.contains("os") && text.contains("syslog.host"),
        "{text}"
    );
    shot(b, shots, "07-client").await?;
    b.goto(&url(c, 0, "/inventory?fact=os.id%3Ddebian")).await?;
    wait_text(b, "clients' facts read").await?;
    shot(b, shots, "08-inventory").await?;
    b.goto(&url(c, 0, "/bundles")).await?;
    let text = wait_text(b, "Import history").await?;
    assert!(
        text.contains("site version 1") && text.contains("3 of 3"),
        "{text}"
    );
    shot(b, shots, "09-bundles").await?;
    b.goto(&url(c, 0, "/deployments")).await?;
    wait_text(b, deployment).await?;
    shot(b, shots, "10-deployments").await?;
    b.goto(&url(c, 0, &format!("/deployments/{deployment}")))
        .await?;
    let text = wait_text(b, "Failures").await?;
    assert!(
        text.contains("read-only file system"),
        "the handler's stderr:\n{text}"
    );
    shot(b, shots, "11-deployment").await?;
    rollout(c, b, shots, (client_id, agent)).await?;
    four_eyes(c, b, shots, approval).await?;

    b.goto(&url(c, 1, &format!("/clients/{client_id}"))).await?;
    b.find(Locator::LinkText("Revoke this client…"))
        .await?
        .click()
        .await?;
    wait_text(b, "will be refused by every node").await?;
    shot(b, shots, "12-revoke-confirm").await?;
    b.find(Locator::Css("section.confirm button"))
        .await?
        .click()
        .await?;
    wait_text(b, "Revoked: every node refuses").await?;
    // Every node refuses the revoked client: one sync per node, each with only that node.
    let file = agent.join("agent.json");
    let original = std::fs::read_to_string(&file)?;
    for (i, n) in c.nodes.iter().enumerate() {
        let mut v: serde_json::Value = serde_json::from_str(&original)?;
        v["servers"] = serde_json::json!([n.api_addr]);
        std::fs::write(&file, serde_json::to_vec(&v)?)?;
        let deadline = Instant::now() + T;
        let err = loop {
            let out = c.run(&[
                "agent",
                "sync",
                "--once",
                "--state-dir",
                &agent.to_string_lossy(),
            ])?;
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            if !out.status.success() {
                break err;
            }
            if Instant::now() > deadline {
                bail!("node {} still serves the revoked client", i + 1);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(err.contains("revoked"), "node {}: {err}", i + 1);
        println!("{}: sync refused: {}", n.name, err.trim());
    }
    std::fs::write(&file, original)?;

    b.goto(&url(c, 0, "/audit")).await?;
    let text = wait_text(b, "Hash chain intact").await?;
    assert!(
        text.contains("console:alice as admin") && text.contains("client.revoke"),
        "{text}"
    );
    shot(b, shots, "13-audit").await?;
    b.goto(&url(c, 0, "/sessions")).await?;
    wait_text(b, "this one").await?;
    shot(b, shots, "14-sessions").await?;

    // A cross-site form posting to the console: refused, nothing changed.
    let evil = evil_page(&url(c, 0, "/config/set"))?;
    b.goto(&evil).await?;
    let deadline = Instant::now() + T;
    loop {
        let u = b.current_url().await?;
        if u.path() == "/config/set" {
            break;
        }
        if Instant::now() > deadline {
            bail!("the cross-site form never posted; at {u}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = body(b).await?;
    assert!(
        text.contains("refused") || text.contains("sign in first"),
        "{text}"
    );
    shot(b, shots, "15-cross-site-refused").await?;
    let got = c.run(&[
        "config",
        "get",
        "evil.key",
        "--data-dir",
        &c.nodes[0].dir.to_string_lossy(),
    ])?;
    assert!(!got.status.success(), "the cross-site POST set a key");

    // Sign out: the session ends everywhere; pages show the sign-in form again.
    b.goto(&url(c, 0, "/")).await?;
    wait_text(b, "Sign out").await?;
    b.find(Locator::Css("form.who button"))
        .await?
        .click()
        .await?;
    wait_text(b, "Sign in").await?;
    b.goto(&url(c, 1, "/audit")).await?;
    let text = wait_text(b, "Sign in").await?;
    assert!(!text.contains("console:alice"), "{text}");
    viewer(c, b, shots, deployment).await
}

/// The buttons and POST forms of the page a person could act with: every one but the
/// sign-out form's and those of search forms (GET), and the link-buttons (Revoke…, Abort…).
const ACTIONS: &str = "return Array.from(document.querySelectorAll('button, a.button'))\
    .filter(e => !e.closest('form.who') && !e.hidden)\
    .filter(e => { const f = e.closest('form'); return !f || f.method.toLowerCase() !== 'get'; })\
    .map(e => (e.closest('form') ? e.closest('form').getAttribute('action') + ': ' : '') + e.textContent.trim());";

/// A viewer (role set through the local socket) signs in: no page shows an action; a POST
/// made by hand in the page, with the session's own valid CSRF token, is refused (403) and
/// changes nothing.
async fn viewer(c: &LocalCluster, b: &Client, shots: &Path, deployment: &str) -> Result<()> {
    outpost::harness::console::add_account(c, 0, "vera")?;
    let req = outpost::wire::RoleRequest {
        role: "viewer".into(),
        scopes: Vec::new(),
    };
    let _: outpost::wire::RoleView = outpost::shared::client::local_client(&c.nodes[0].dir)
        .call(hyper::Method::PUT, "/v1/roles/vera", Some(&req))
        .await?;
    let link = c.cli(0, &["console", "login", "--as", "vera"])?;
    let link = link
        .trim()
        .replacen(&c.nodes[0].api_addr, &format!("{HOST}:{}", port(c, 0)), 1);
    b.goto(&link).await?;
    let text = wait_text(b, "Nodes").await?;
    assert!(text.contains("vera · viewer · whole site"), "{text}");
    // Pages that show forms to an admin: the config (set, delete), deployments (new, the
    // waiting one's approve and abort), sessions (end), people (set a role).
    let pages = [
        "/config".to_string(),
        "/config?scope=group:lab".to_string(),
        "/deployments".to_string(),
        "/deployments/d-all".to_string(),
        format!("/deployments/{deployment}"),
        "/sessions".to_string(),
        "/people".to_string(),
    ];
    for (i, page) in pages.iter().enumerate() {
        b.goto(&url(c, 0, page)).await?;
        wait_text(b, "vera · viewer").await?;
        let actions = b.execute(ACTIONS, vec![]).await?;
        assert_eq!(
            actions,
            serde_json::json!([]),
            "{page} offers a viewer actions"
        );
        shot(
            b,
            shots,
            &format!("3{i}-viewer{}", page.replace(['/', '?', ':', '='], "-")),
        )
        .await?;
    }
    // Sign-out is still offered (it acts on nothing but the session).
    assert!(b.find(Locator::Css("form.who button")).await.is_ok());
    let text = body(b).await?;
    assert!(text.contains("vera") && text.contains("viewer"), "{text}");

    // A form made by hand in the page with the session's valid token: refused by the rule.
    b.execute(
        "const f = document.createElement('form'); f.method = 'post'; f.action = '/config/set';\
         const csrf = document.querySelector('form.who input[name=csrf]').value;\
         for (const [k, v] of [['csrf', csrf], ['scope', 'global'], ['key', 'viewer.key'], ['value', '1']]) {\
           const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i); }\
         document.body.appendChild(f); f.submit();",
        vec![],
    )
    .await?;
    let text = wait_text(b, "403 Forbidden").await?;
    assert!(
        text.contains("vera is a viewer: POST /config/set needs the operator role"),
        "{text}"
    );
    assert_eq!(b.current_url().await?.path(), "/config/set");
    shot(b, shots, "39-viewer-post-refused").await?;
    let got = c.run(&[
        "config",
        "get",
        "viewer.key",
        "--data-dir",
        &c.nodes[0].dir.to_string_lossy(),
    ])?;
    assert!(!got.status.success(), "the viewer's POST set a key");
    Ok(())
}

/// A client's phase in deployment `id` by the contract's rule (the first 8 bytes of
/// sha256(id, 0, client) as a number, modulo 10,000, against the cumulative percents).
fn phase_of(id: &str, client: &str, phases: &[u64]) -> usize {
    let mut data = id.as_bytes().to_vec();
    data.push(0);
    data.extend(client.as_bytes());
    let hex = support::sha256_hex(&data);
    let b = u64::from_str_radix(&hex[..16], 16).unwrap_or(0) % 10_000;
    phases
        .iter()
        .position(|p| b < p * 100)
        .unwrap_or(phases.len())
}

/// Create-with-preview and abort: label two clients from their pages, fill the new
/// deployment form (label line2, two phases, a brake of 0, a long soak), see the preview
/// list exactly the labelled two, confirm; the first phase's client fails, which halts the
/// rollout (the second phase's client gets nothing at its sync); abort it through the
/// confirmation page.
async fn rollout(
    c: &LocalCluster,
    b: &Client,
    shots: &Path,
    (first, first_state): (&str, &Path),
) -> Result<()> {
    let root = shots.parent().context("the test's root")?;
    let token = c.cli(
        0,
        &[
            "token", "create", "--kind", "client", "--group", "lab", "--uses", "2",
        ],
    )?;
    // Two more clients of lab for the rollout: press-08 is labelled line2 with press-07,
    // press-09 is not.
    let mut others = Vec::new();
    for host in ["press-08", "press-09"] {
        let state = root.join(host);
        let out = run_ok(
            c,
            &[
                "agent",
                "enroll",
                "--token",
                token.trim(),
                "--server",
                &c.nodes[0].api_addr,
                "--state-dir",
                &state.to_string_lossy(),
                "--hostname",
                host,
            ],
        )?;
        let id = out
            .split_whitespace()
            .nth(3)
            .context("client id in the enroll output")?
            .to_string();
        others.push((id, state));
    }
    let (second, second_state) = (&others[0].0, &others[0].1);
    let outsider = &others[1].0;
    for id in [first, second.as_str()] {
        b.goto(&url(c, 0, &format!("/clients/{id}"))).await?;
        wait_text(b, "Change labels").await?;
        b.find(Locator::Css("form.labels input[name=add]"))
            .await?
            .send_keys("line2")
            .await?;
        b.find(Locator::Css("form.labels button"))
            .await?
            .click()
            .await?;
        wait_text(b, "Labels changed").await?;
    }
    shot(b, shots, "16-client-labels").await?;
    // An id that puts the first client in phase 1 and the second in phase 2 (bounded search).
    let id = (0..200)
        .map(|i| format!("d-line2-{i}"))
        .find(|id| phase_of(id, first, &[50, 100]) == 0 && phase_of(id, second, &[50, 100]) == 1)
        .context("no id of the 200 splits the two clients")?;

    b.goto(&url(c, 0, "/deployments")).await?;
    wait_text(b, "New deployment").await?;
    for (name, value) in [
        ("artifact", "tool"),
        ("labels", "line2"),
        ("phases", "50%,100%"),
        ("soak", "1h"),
        ("max_failures", "0"),
        ("id", id.as_str()),
    ] {
        b.find(Locator::Css(&format!("form.rollout [name={name}]")))
            .await?
            .send_keys(value)
            .await?;
    }
    shot(b, shots, "17-new-deployment").await?;
    b.find(Locator::Css("form.rollout button[type=submit]"))
        .await?
        .click()
        .await?;
    let text = wait_text(b, &format!("Preview of deployment {id}")).await?;
    assert!(
        text.contains(first) && text.contains(second) && !text.contains(outsider),
        "the preview lists exactly the two labelled clients:\n{text}"
    );
    assert!(
        text.contains("Clients reached\n2") || text.contains("Clients reached 2"),
        "{text}"
    );
    shot(b, shots, "18-preview").await?;
    b.find(Locator::Css("div.confirmbar form button"))
        .await?
        .click()
        .await?;
    let text = wait_text(b, "Created.").await?;
    assert!(text.contains("running"), "{text}");

    // Both clients sync: the first fails in phase 1, which halts the rollout; the second,
    // in phase 2, installs nothing.
    for state in [first_state, second_state.as_path()] {
        let _ = c.run(&[
            "agent",
            "sync",
            "--once",
            "--state-dir",
            &state.to_string_lossy(),
        ])?;
    }
    let page = url(c, 0, &format!("/deployments/{id}"));
    let deadline = Instant::now() + T;
    let text = loop {
        b.goto(&page).await?;
        let text = wait_text(b, "Phases").await?;
        if text.contains("halted") {
            break text;
        }
        if Instant::now() > deadline {
            bail!("the rollout never halted:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        text.contains("read-only file system") && text.contains(first),
        "the failure and the handler's output:\n{text}"
    );
    assert!(
        text.contains("1 failed") && text.contains("1 waiting"),
        "{text}"
    );
    shot(b, shots, "19-rollout-halted").await?;
    let status = c.cli(0, &["deployment", "status", &id, "--json"])?;
    let v: serde_json::Value = serde_json::from_str(&status)?;
    assert_eq!(v["state"], "halted", "{status}");
    let installed: Vec<_> = v["results"]
        .as_array()
        .context("results")?
        .iter()
        .filter(|r| r["status"] != "failed")
        .collect();
    assert!(
        installed.is_empty(),
        "only the failure after the halt: {installed:?}"
    );

    // The overview names the halt and its reason.
    b.goto(&url(c, 0, "/")).await?;
    let text = wait_text(b, &format!("Deployment {id} halted")).await?;
    assert!(
        text.contains(first),
        "the halt names the failed client:\n{text}"
    );
    b.goto(&page).await?;
    wait_text(b, "Phases").await?;

    // Abort through the confirmation page, with the uninstall box ticked.
    b.find(Locator::LinkText("Abort…")).await?.click().await?;
    wait_text(b, "Also uninstall where installed").await?;
    b.find(Locator::Css("form.abort input[name=uninstall]"))
        .await?
        .click()
        .await?;
    b.find(Locator::Css("form.abort input[name=reason]"))
        .await?
        .send_keys("wrong build for line 2")
        .await?;
    shot(b, shots, "20-abort-confirm").await?;
    b.find(Locator::Css("form.abort button"))
        .await?
        .click()
        .await?;
    // The confirmation page also says "remove handler": wait for what only the deployment's
    // page shows once the abort committed.
    let text = wait_text(b, "aborted").await?;
    assert!(text.contains("remove handler"), "{text}");
    shot(b, shots, "21-aborted").await?;
    let v: serde_json::Value =
        serde_json::from_str(&c.cli(0, &["deployment", "status", &id, "--json"])?)?;
    assert_eq!(v["state"], "aborted");
    Ok(())
}

/// With `deploy.approval_above = 0` from a signed bundle, a deployment to all waits for
/// approval (the preview says so), and its creator's own approval is refused on its page.
async fn four_eyes(c: &LocalCluster, b: &Client, shots: &Path, approval: &Path) -> Result<()> {
    c.cli(0, &["bundle", "import", &approval.to_string_lossy()])?;
    b.goto(&url(c, 0, "/deployments")).await?;
    wait_text(b, "New deployment").await?;
    for (name, value) in [("artifact", "tool"), ("groups", "all"), ("id", "d-all")] {
        b.find(Locator::Css(&format!("form.rollout [name={name}]")))
            .await?
            .send_keys(value)
            .await?;
    }
    b.find(Locator::Css("form.rollout button[type=submit]"))
        .await?
        .click()
        .await?;
    let text = wait_text(b, "Preview of deployment d-all").await?;
    assert!(text.contains("it targets all clients"), "{text}");
    shot(b, shots, "22-preview-approval").await?;
    b.find(Locator::Css("div.confirmbar form button"))
        .await?
        .click()
        .await?;
    let text = wait_text(b, "Created.").await?;
    assert!(text.contains("waiting-approval"), "{text}");
    b.find(Locator::Css("form.steps input[name=reason]"))
        .await?
        .send_keys("looks right to me")
        .await?;
    b.find(Locator::Css("form.steps button[formaction$='/approve']"))
        .await?
        .click()
        .await?;
    let text = wait_text(b, "the creator cannot approve their own deployment").await?;
    assert!(text.contains("waiting-approval"), "{text}");
    shot(b, shots, "23-approve-refused").await?;
    let v: serde_json::Value =
        serde_json::from_str(&c.cli(0, &["deployment", "status", "d-all", "--json"])?)?;
    assert_eq!(v["state"], "waiting-approval");
    b.goto(&url(c, 0, "/")).await?;
    wait_text(b, "Deployment d-all waits for approval").await?;
    shot(b, shots, "24-overview-approval").await?;
    b.goto(&url(c, 0, "/deployments")).await?;
    let text = wait_text(b, "d-all").await?;
    assert!(
        text.contains("waiting-approval")
            && text.contains("aborted")
            && text.contains("--label line2"),
        "{text}"
    );
    shot(b, shots, "25-deployments").await?;
    Ok(())
}

fn port(c: &LocalCluster, i: usize) -> &str {
    c.nodes[i].api_addr.rsplit(':').next().unwrap_or_default()
}

/// A page on another origin (plain HTTP on another loopback port) whose form posts to
/// `target` by itself; served to at most four requests by a thread.
fn evil_page(target: &str) -> Result<String> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let html = format!(
        "<!doctype html><form method=post action=\"{target}\"><input name=csrf value=x>\
         <input name=scope value=global><input name=key value=evil.key><input name=value value=1>\
         </form><script>document.forms[0].submit()</script>"
    );
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                html.len()
            );
        }
    });
    Ok(format!("http://{addr}/"))
}
