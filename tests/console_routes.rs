//! The console's routes over HTTPS without a browser (`outpost::harness::console::request`):
//! what is open without a session, the login link, password sign-in and its rate limit,
//! every page with a session, the origin and CSRF checks of every action, pagination, and
//! sessions ended from the CLI and from the console; the rollout actions (new deployment with
//! its preview, approve, pause, resume, abort, client labels) and the four-eyes refusal.

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::{exe, or_dump, serial};

use anyhow::{Context, Result};
use hyper::Method;
use outpost::harness::console::{Answer, request};
use outpost::harness::localcluster::{LocalCluster, LocalOptions};
use outpost::shared::datadir::DataDir;

struct Node<'a> {
    c: &'a LocalCluster,
    ca: String,
}

impl Node<'_> {
    async fn get(&self, path: &str, cookie: Option<&str>) -> Result<Answer> {
        let h: Vec<(&str, &str)> = cookie.map(|c| vec![("cookie", c)]).unwrap_or_default();
        request(
            &self.c.nodes[0].api_addr,
            &self.ca,
            Method::GET,
            path,
            &h,
            None,
        )
        .await
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Result<Answer> {
        request(
            &self.c.nodes[0].api_addr,
            &self.ca,
            Method::POST,
            path,
            headers,
            Some(body),
        )
        .await
    }

    fn origin(&self) -> String {
        format!("https://{}", self.c.nodes[0].api_addr)
    }
}

/// The CSRF token in a page's forms.
fn csrf(page: &str) -> Result<String> {
    let at = page
        .find("name=\"csrf\" value=\"")
        .context("no csrf field")?
        + 19;
    Ok(page[at..at + 64].to_string())
}

/// (name, headers, body, status wanted).
type Case<'a> = (&'a str, Vec<(&'a str, String)>, String, u16);

const PAGES: [&str; 12] = [
    "/",
    "/clients",
    "/clients/c-1",
    "/clients/c-1/revoke",
    "/inventory",
    "/config",
    "/bundles",
    "/deployments",
    "/deployments/d-1",
    "/deployments/d-1/abort",
    "/audit",
    "/sessions",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_sessions_csrf_and_pages() {
    let _g = serial();
    let opts = LocalOptions {
        env: vec![("OUTPOST_ENROLL_RATE".into(), "2000".into())],
        ..LocalOptions::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // Three nodes: the enrollments below spread over them (24 at once from one address would
    // crowd one node's anonymous connections per source).
    let c = LocalCluster::start(dir.path(), &exe(), 3, opts)
        .await
        .expect("three nodes");
    let r = async {
        let ca = std::fs::read_to_string(c.nodes[0].dir.join("ca.crt"))?;
        let n = Node { c: &c, ca };
        let cluster = c.status(0).await?.cluster_id;

        // Without a session: the sign-in page on every page, nothing of the cluster.
        for p in PAGES {
            let a = n.get(p, None).await?;
            assert_eq!(a.status, 401, "{p}");
            assert!(
                a.body.contains("Sign in") && !a.body.contains(&cluster),
                "{p}: {}",
                a.body
            );
            assert!(
                a.header("content-security-policy")
                    .starts_with("default-src 'none'"),
                "{p}"
            );
            assert_eq!(a.header("x-content-type-options"), "nosniff");
        }
        let a = n
            .post("/config/set", &[("origin", &n.origin())], "key=a&value=b")
            .await?;
        assert_eq!(a.status, 401, "{}", a.body);
        let a = n.get("/static/console.css", None).await?;
        assert_eq!(
            (a.status, a.header("content-type")),
            (200, "text/css; charset=utf-8")
        );
        assert_eq!(n.get("/static/../node.key", None).await?.status, 404);

        // The one-time link: a cookie for this host only, HttpOnly, Secure, SameSite=Strict.
        outpost::harness::console::add_account(&c, 0, "alice")?;
        let link = c.cli(0, &["console", "login", "--as", "alice"])?;
        let path = format!(
            "/login/link/{}",
            link.trim().rsplit('/').next().context("token")?
        );
        let a = n.get(&path, None).await?;
        assert_eq!((a.status, a.header("location")), (303, "/"), "{}", a.body);
        let set = a.header("set-cookie").to_string();
        for attr in [
            "__Host-outpost-session=",
            "Path=/",
            "Secure",
            "HttpOnly",
            "SameSite=Strict",
        ] {
            assert!(set.contains(attr), "{attr} missing: {set}");
        }
        let alice = a.cookie("__Host-outpost-session").context("cookie")?;
        let again = n.get(&path, None).await?;
        assert_eq!(again.status, 403);
        assert!(
            again.body.contains("already used") && !again.body.contains(&cluster),
            "{}",
            again.body
        );
        let forged = last_char_changed(&path);
        assert_eq!(n.get(&forged, None).await?.status, 403);
        assert_eq!(n.get("/login/link/nonsense", None).await?.status, 403);
        let tampered = last_char_changed(&alice);
        assert_eq!(n.get("/", Some(&tampered)).await?.status, 401);

        // Clients to page through: 120 real enrollments.
        let enrolled = outpost::harness::bench::sync(
            &DataDir::new(&c.nodes[0].dir),
            outpost::harness::bench::SyncBench {
                clients: 120,
                seconds: 1,
                interval: std::time::Duration::from_secs(60),
            },
        )
        .await?;
        println!("120 clients enrolled in {:.1} s", enrolled.enroll_s);
        // Every enrollment applied on node 1 before its pages are read.
        let _ = c.cli(0, &["config", "get", "none", "--linearizable"]);

        // Every page with the session.
        for p in PAGES {
            let a = n.get(p, Some(&alice)).await?;
            let want = if p.contains("c-1") || p.contains("d-1") {
                404
            } else {
                200
            };
            assert_eq!(a.status, want, "{p}: {}", a.body);
        }
        let a = n.get("/clients", Some(&alice)).await?;
        assert!(
            a.body.contains("120 matching") && a.body.contains("page 1 of 3"),
            "{}",
            a.body
        );
        assert_eq!(a.body.matches("<a href=\"/clients/c-").count(), 50);
        let a = n.get("/clients?page=3", Some(&alice)).await?;
        assert_eq!(a.body.matches("<a href=\"/clients/c-").count(), 20);
        assert!(a.body.contains("page 3 of 3"));
        let a = n.get("/clients?q=bench-119", Some(&alice)).await?;
        assert!(
            a.body.contains("1 matching") && a.body.contains("bench-119"),
            "{}",
            a.body
        );
        let a = n.get("/clients?group=nope", Some(&alice)).await?;
        assert!(a.body.contains("0 matching"));
        let a = n.get("/clients?q=%25", Some(&alice)).await?;
        assert!(a.body.contains("0 matching"), "LIKE wildcards are escaped");
        let a = n.get("/audit", Some(&alice)).await?;
        assert!(a.body.contains("Hash chain intact") && a.body.contains("client.enroll"));
        assert!(a.body.contains("/audit?before="), "an older page");
        let a = n.get("/", Some(&alice)).await?;
        // No alarm, but the host's own disk when it is low (doctor's finding, not the test's).
        let alarms = a.body.matches("<li class=\"bad\">").count()
            + a.body.matches("<li class=\"warn\">").count();
        let disk = a
            .body
            .matches("<li class=\"warn\">The data directory of")
            .count();
        assert!(
            a.body.contains("120 clients") && (a.body.contains("No alarms") || alarms == disk),
            "{}",
            a.body
        );
        let token = csrf(&a.body)?;

        // Actions: same origin and the session's token, or refused.
        let ok_origin = n.origin();
        let cookie_and = |extra: Vec<(&'static str, String)>| {
            let mut h = vec![("cookie", alice.clone())];
            h.extend(extra);
            h
        };
        let body = format!("csrf={token}&scope=global&key=console.k&value=v1");
        let cases: Vec<Case> = vec![
            (
                "no token",
                cookie_and(vec![("origin", ok_origin.clone())]),
                "scope=global&key=console.k&value=v1".into(),
                403,
            ),
            (
                "wrong token",
                cookie_and(vec![("origin", ok_origin.clone())]),
                body.replace(&token, &"0".repeat(64)),
                403,
            ),
            (
                "other origin",
                cookie_and(vec![("origin", "https://evil.example".into())]),
                body.clone(),
                403,
            ),
            (
                "cross-site",
                cookie_and(vec![
                    ("origin", ok_origin.clone()),
                    ("sec-fetch-site", "cross-site".into()),
                ]),
                body.clone(),
                403,
            ),
            ("no origin at all", cookie_and(vec![]), body.clone(), 403),
            (
                "null origin",
                cookie_and(vec![("origin", "null".into())]),
                body.clone(),
                403,
            ),
            (
                "handler key",
                cookie_and(vec![("origin", ok_origin.clone())]),
                format!("csrf={token}&scope=global&key=agent.handler.artifact&value=sh"),
                403,
            ),
            (
                "bad scope",
                cookie_and(vec![("origin", ok_origin.clone())]),
                format!("csrf={token}&scope=site:x&key=k&value=v"),
                400,
            ),
        ];
        for (name, headers, body, want) in cases {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let a = n.post("/config/set", &h, &body).await?;
            assert_eq!(a.status, want, "{name}: {}", a.body);
        }
        assert!(
            c.cli(0, &["config", "get", "console.k"]).is_err(),
            "a refused POST set a key"
        );
        assert!(
            c.cli(0, &["config", "get", "agent.handler.artifact"])
                .is_err()
        );
        let h = [("cookie", alice.as_str()), ("origin", ok_origin.as_str())];
        let a = n.post("/config/set", &h, &body).await?;
        assert_eq!(
            (a.status, a.header("location")),
            (303, "/config?scope=global"),
            "{}",
            a.body
        );
        assert_eq!(c.cli(0, &["config", "get", "console.k"])?.trim(), "v1");
        let h2 = [
            ("cookie", alice.as_str()),
            ("sec-fetch-site", "same-origin"),
        ];
        let a = n
            .post(
                "/config/delete",
                &h2,
                &format!("csrf={token}&scope=global&key=console.k"),
            )
            .await?;
        assert_eq!(a.status, 303, "{}", a.body);
        assert!(c.cli(0, &["config", "get", "console.k"]).is_err());
        let audit = c.cli(0, &["audit", "--json", "--limit", "10"])?;
        // A name without a role set is an admin (as before roles), and the audit says so.
        assert!(
            audit.contains("\"actor\": \"console:alice as admin\""),
            "{audit}"
        );

        // Revoke through the console.
        let list: Vec<outpost::wire::ClientRecord> =
            serde_json::from_str(&c.cli(0, &["client", "list", "--json"])?)?;
        let victim = &list[0].id;
        let a = n
            .post(
                &format!("/clients/{victim}/revoke"),
                &h,
                &format!("csrf={token}"),
            )
            .await?;
        assert_eq!(a.status, 303, "{}", a.body);
        assert!(
            c.cli(0, &["client", "show", victim])?
                .contains("revoked: true")
        );
        let a = n
            .post(
                &format!("/clients/{victim}/revoke"),
                &[
                    ("cookie", alice.as_str()),
                    ("origin", "https://evil.example"),
                ],
                &format!("csrf={token}"),
            )
            .await?;
        assert_eq!(a.status, 403);

        // Password accounts: sign-in form, double-submit token, rate limit per source.
        let pass = c.nodes[0].dir.parent().context("root")?.join("bob.pass");
        std::fs::write(&pass, "correct horse battery\n")?;
        c.cli(
            0,
            &[
                "console",
                "user",
                "add",
                "bob",
                "--role",
                "admin",
                "--password-file",
                &pass.to_string_lossy(),
            ],
        )?;
        let users = c.cli(0, &["console", "user", "list", "--json"])?;
        assert!(
            users.contains("\"bob\"") && !users.contains("argon2"),
            "{users}"
        );
        let form = n.get("/login", None).await?;
        let pre = form
            .cookie("__Host-outpost-signin")
            .context("sign-in cookie")?;
        let value = pre.split_once('=').context("cookie value")?.1.to_string();
        let signin =
            |pw: &str, tok: &str| format!("name=bob&password={pw}&token={tok}&next=%2Fsessions");
        let hs = [("cookie", pre.as_str()), ("origin", ok_origin.as_str())];
        assert_eq!(
            n.post("/login", &hs, &signin("correct+horse+battery", "x"))
                .await?
                .status,
            403
        );
        assert_eq!(
            n.post("/login", &hs, &signin("wrong", &value))
                .await?
                .status,
            401
        );
        let a = n
            .post("/login", &hs, &signin("correct+horse+battery", &value))
            .await?;
        assert_eq!(
            (a.status, a.header("location")),
            (303, "/sessions"),
            "{}",
            a.body
        );
        let bob = a.cookie("__Host-outpost-session").context("bob's cookie")?;
        let a = n.get("/sessions", Some(&bob)).await?;
        assert!(
            a.body.contains("password") && a.body.contains("alice"),
            "{}",
            a.body
        );
        let mut limited = false;
        for _ in 0..15 {
            let a = n.post("/login", &hs, &signin("guess", &value)).await?;
            if a.status == 429 {
                assert!(!a.header("retry-after").is_empty());
                limited = true;
                break;
            }
            assert_eq!(a.status, 401);
        }
        assert!(limited, "password guesses were never rate-limited");

        // Sessions: listed by the CLI, ended from the console and from the CLI.
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&c.cli(0, &["console", "session", "list", "--json"])?)?;
        assert!(
            !list.iter().any(|s| s.to_string().contains("secret")),
            "{list:?}"
        );
        let bob_id = list
            .iter()
            .find(|s| s["user"] == "bob")
            .context("bob's session")?["id"]
            .as_str()
            .context("id")?
            .to_string();
        let a = n
            .post(
                &format!("/sessions/{bob_id}/end"),
                &h,
                &format!("csrf={token}"),
            )
            .await?;
        assert_eq!(a.status, 303);
        assert_eq!(
            n.get("/", Some(&bob)).await?.status,
            401,
            "an ended session still works"
        );
        let alice_id = alice
            .split_once('=')
            .and_then(|(_, v)| v.split_once('.'))
            .context("id")?
            .0;
        c.cli(0, &["console", "session", "end", alice_id])?;
        assert_eq!(n.get("/clients", Some(&alice)).await?.status, 401);

        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

/// `s` with its last character replaced by a different one (a fixed '0' left a token or
/// cookie that already ended in '0' unchanged, so the test passed the genuine one).
fn last_char_changed(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(s.chars().count().saturating_sub(1))
        .collect();
    out.push(if s.ends_with('0') { '1' } else { '0' });
    assert_ne!(out, s);
    out
}

/// A signed bundle (key `key`) with an artifact `tool` and a config payload that sets the
/// four-eyes rule `deploy.approval_above = 0` (only a signed bundle may).
fn approval_bundle(
    c: &LocalCluster,
    root: &std::path::Path,
    key: &std::path::Path,
) -> Result<String> {
    let usb = root.join("usb");
    std::fs::create_dir_all(usb.join("files"))?;
    std::fs::write(usb.join("files/tool.sh"), "#!/bin/sh\nexit 0\n")?;
    std::fs::write(
        usb.join("files/site.toml"),
        "[global]\n\"deploy.approval_above\" = \"0\"\n",
    )?;
    let spec = usb.join("spec.toml");
    std::fs::write(
        &spec,
        "channel = \"site\"\nversion = 1\n\n[[payload]]\npath = \"files/tool.sh\"\nkind = \"artifact\"\nname = \"tool\"\n\n[[payload]]\npath = \"files/site.toml\"\nkind = \"config\"\n",
    )?;
    let bundle = usb.join("site-1.obundle");
    let s = |p: &std::path::Path| p.to_string_lossy().into_owned();
    c.run_ok(&[
        "bundle",
        "create",
        "--spec",
        &s(&spec),
        "--key",
        &s(key),
        "-o",
        &s(&bundle),
    ])?;
    Ok(s(&bundle))
}

/// The deployment id in a `/deployments/ID?done=...` location.
fn deployment_of(location: &str) -> Result<String> {
    let rest = location
        .strip_prefix("/deployments/")
        .with_context(|| format!("not a deployment page: {location}"))?;
    Ok(rest.split('?').next().unwrap_or_default().to_string())
}

/// The rollout actions: every new POST needs the session's CSRF token and the same origin;
/// the preview lists the clients a selector reaches; labels change from the client page;
/// a deployment that waits for approval is refused to its creator, approved by another
/// operator, then paused, resumed and aborted, each a commit as `console:NAME`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_actions_csrf_preview_and_four_eyes() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("release");
    outpost_bundles::keygen(&key).expect("keygen");
    let opts = LocalOptions {
        init_args: vec!["--bundle-trust".into(), format!("{}.pub", key.display())],
        ..LocalOptions::default()
    };
    let c = LocalCluster::start(&dir.path().join("cluster"), &exe(), 1, opts)
        .await
        .expect("one node");
    let r = async {
        let ca = std::fs::read_to_string(c.nodes[0].dir.join("ca.crt"))?;
        let n = Node { c: &c, ca };
        let bundle = approval_bundle(&c, dir.path(), &key)?;
        c.cli(0, &["bundle", "import", &bundle])?;
        // Two clients in group lab.
        let mut ids = Vec::new();
        for host in ["hmi-1", "hmi-2"] {
            let token = c.cli(
                0,
                &["token", "create", "--kind", "client", "--group", "lab"],
            )?;
            let state = dir.path().join(host);
            let state_s = state.to_string_lossy().into_owned();
            c.run_ok(&[
                "agent",
                "enroll",
                "--token",
                token.trim(),
                "--server",
                &c.nodes[0].api_addr,
                "--state-dir",
                &state_s,
                "--hostname",
                host,
            ])?;
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(state.join("agent.json"))?)?;
            ids.push(v["client_id"].as_str().context("client id")?.to_string());
        }
        let alice = outpost::harness::console::sign_in(&c, 0, "alice").await?;
        let bob = outpost::harness::console::sign_in(&c, 0, "bob").await?;
        let page = n.get("/deployments", Some(&alice)).await?;
        assert!(page.body.contains("New deployment"), "{}", page.body);
        let token = csrf(&page.body)?;
        let origin = n.origin();

        // Every new POST: without a session 401; without the token, with another's token or
        // from another origin 403; nothing committed.
        // The new deployment form's three buttons share `POST /deployments` (`step`).
        let posts = [
            ("/deployments".to_string(), "preview"),
            ("/deployments".into(), "edit"),
            ("/deployments".into(), "create"),
            ("/deployments/d-x/approve".into(), ""),
            ("/deployments/d-x/pause".into(), ""),
            ("/deployments/d-x/resume".into(), ""),
            ("/deployments/d-x/abort".into(), ""),
            (format!("/clients/{}/labels", ids[0]), ""),
        ];
        let bob_page = n.get("/", Some(&bob)).await?;
        let bob_token = csrf(&bob_page.body)?;
        for (p, step) in &posts {
            let form = format!("step={step}&artifact=tool&groups=all&id=d-x&add=line2&uninstall=on");
            let a = n
                .post(p, &[("origin", &origin)], &format!("csrf={token}&{form}"))
                .await?;
            assert_eq!(a.status, 401, "{p} {step} without a session: {}", a.body);
            for (why, headers, body) in [
                (
                    "no token",
                    vec![("cookie", alice.as_str()), ("origin", origin.as_str())],
                    form.clone(),
                ),
                (
                    "another session's token",
                    vec![("cookie", alice.as_str()), ("origin", origin.as_str())],
                    format!("csrf={bob_token}&{form}"),
                ),
                (
                    "other origin",
                    vec![
                        ("cookie", alice.as_str()),
                        ("origin", "https://evil.example"),
                    ],
                    format!("csrf={token}&{form}"),
                ),
                (
                    "no origin",
                    vec![("cookie", alice.as_str())],
                    format!("csrf={token}&{form}"),
                ),
            ] {
                let a = n.post(p, &headers, &body).await?;
                assert_eq!(a.status, 403, "{p} {step}, {why}: {}", a.body);
            }
        }
        let listed = c.cli(0, &["deployment", "list"])?;
        assert!(!listed.contains("d-x"), "a refused POST created: {listed}");
        let shown = n.get(&format!("/clients/{}", ids[0]), Some(&alice)).await?;
        assert!(!shown.body.contains(">line2<"), "a refused POST labelled");

        let h = [("cookie", alice.as_str()), ("origin", origin.as_str())];
        // Labels from the client page.
        let a = n
            .post(
                &format!("/clients/{}/labels", ids[0]),
                &h,
                &format!("csrf={token}&add=line2%2C+hmi&remove="),
            )
            .await?;
        assert_eq!(a.status, 303, "{}", a.body);
        let shown = n.get(a.header("location"), Some(&alice)).await?;
        assert!(
            shown.body.contains("Labels changed")
                && shown.body.contains(">line2<")
                && shown.body.contains(">hmi<"),
            "{}",
            shown.body
        );
        let a = n
            .post(
                &format!("/clients/{}/labels", ids[0]),
                &h,
                &format!("csrf={token}&remove=hmi"),
            )
            .await?;
        assert_eq!(a.status, 303, "{}", a.body);
        let shown = n.get(&format!("/clients/{}", ids[0]), Some(&alice)).await?;
        assert!(shown.body.contains(">line2<") && !shown.body.contains(">hmi<"));
        let a = n
            .post(
                &format!("/clients/{}/labels", ids[0]),
                &h,
                &format!("csrf={token}&add=bad%20name"),
            )
            .await?;
        assert_eq!(a.status, 400, "a bad label name: {}", a.body);

        // The preview lists the clients the label reaches, and says approval is needed.
        let a = n
            .post(
                "/deployments",
                &h,
                &format!(
                    "csrf={token}&step=preview&artifact=tool&labels=line2&phases=50%25%2C100%25&id=d-lbl"
                ),
            )
            .await?;
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(
            a.body.contains("Preview of deployment d-lbl")
                && a.body.contains(&format!(">{}<", ids[0]))
                && !a.body.contains(&format!(">{}<", ids[1]))
                && a.body.contains("approves it"),
            "{}",
            a.body
        );
        assert!(
            c.cli(0, &["deployment", "status", "d-lbl"]).is_err(),
            "a preview created the deployment"
        );
        // "Change…": the form again, filled in.
        let a = n
            .post(
                "/deployments",
                &h,
                &format!("csrf={token}&step=edit&artifact=tool&labels=line2&id=d-lbl"),
            )
            .await?;
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(
            a.body.contains("value=\"d-lbl\"") && a.body.contains(">line2</textarea>"),
            "{}",
            a.body
        );
        // An artifact no bundle holds: refused at the preview.
        let a = n
            .post(
                "/deployments",
                &h,
                &format!("csrf={token}&step=preview&artifact=toool&groups=lab"),
            )
            .await?;
        assert_eq!(a.status, 400, "{}", a.body);
        assert!(a.body.contains("no imported bundle holds toool"), "{}", a.body);
        // A bad field (no step: a preview): the form again with the refusal and what was typed.
        let a = n
            .post(
                "/deployments",
                &h,
                &format!("csrf={token}&artifact=tool&groups=lab&phases=50%25%2C25%25%2C100%25"),
            )
            .await?;
        assert_eq!(a.status, 400, "{}", a.body);
        assert!(
            a.body.contains("must be above") && a.body.contains("50%,25%,100%"),
            "{}",
            a.body
        );

        // Alice creates a deployment to all: it waits; her own approval is refused.
        let a = n
            .post(
                "/deployments",
                &h,
                &format!("csrf={token}&step=create&artifact=tool&groups=all&id=d-all"),
            )
            .await?;
        assert_eq!(a.status, 303, "{}", a.body);
        let id = deployment_of(a.header("location"))?;
        assert_eq!(id, "d-all");
        let page = n.get(a.header("location"), Some(&alice)).await?;
        assert!(
            page.body.contains("waiting-approval") && page.body.contains("Approve"),
            "{}",
            page.body
        );
        let a = n
            .post(
                &format!("/deployments/{id}/approve"),
                &h,
                &format!("csrf={token}&reason=mine"),
            )
            .await?;
        assert_eq!(a.status, 400, "{}", a.body);
        assert!(
            a.body
                .contains("the creator cannot approve their own deployment")
                && a.body.contains("waiting-approval"),
            "{}",
            a.body
        );
        // Bob approves; alice pauses, resumes, aborts with uninstall.
        let hb = [("cookie", bob.as_str()), ("origin", origin.as_str())];
        let a = n
            .post(
                &format!("/deployments/{id}/approve"),
                &hb,
                &format!("csrf={bob_token}&reason=checked"),
            )
            .await?;
        assert_eq!(a.status, 303, "{}", a.body);
        let page = n.get(a.header("location"), Some(&alice)).await?;
        assert!(
            page.body.contains("Approved")
                && page.body.contains("bob")
                && page.body.contains(">running<"),
            "{}",
            page.body
        );
        for (step, state) in [("pause", "paused"), ("resume", "running")] {
            let a = n
                .post(
                    &format!("/deployments/{id}/{step}"),
                    &h,
                    &format!("csrf={token}&reason=test"),
                )
                .await?;
            assert_eq!(a.status, 303, "{step}: {}", a.body);
            let page = n.get(a.header("location"), Some(&alice)).await?;
            assert!(
                page.body.contains(&format!(">{state}<")),
                "{step}: {}",
                page.body
            );
        }
        let a = n
            .get(&format!("/deployments/{id}/abort"), Some(&alice))
            .await?;
        assert!(
            a.body.contains("Also uninstall where installed"),
            "{}",
            a.body
        );
        let a = n
            .post(
                &format!("/deployments/{id}/abort"),
                &h,
                &format!("csrf={token}&uninstall=on&reason=wrong+file"),
            )
            .await?;
        assert_eq!(a.status, 303, "{}", a.body);
        let page = n.get(a.header("location"), Some(&alice)).await?;
        assert!(
            page.body.contains(">aborted<") && page.body.contains("remove handler"),
            "{}",
            page.body
        );
        // A step the state does not allow: refused, shown on the page.
        let a = n
            .post(
                &format!("/deployments/{id}/resume"),
                &h,
                &format!("csrf={token}"),
            )
            .await?;
        assert_eq!(a.status, 400, "{}", a.body);
        assert!(a.body.contains("is aborted: cannot"), "{}", a.body);
        let audit = c.cli(0, &["audit", "--json", "--limit", "30"])?;
        assert!(
            audit.contains("\"actor\": \"console:bob as admin\"")
                && audit.contains("\"actor\": \"console:alice as admin\""),
            "{audit}"
        );
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

/// The clients page's health filters (issue 23): `failing=1` lists the clients with a failing
/// health check and names the checks on each row; `unseen=7d` lists the clients not seen for
/// seven days, a never-synced one included; a bad duration is refused with a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_filter_by_failing_checks_and_unseen() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("release");
    outpost_bundles::keygen(&key).expect("keygen");
    let opts = LocalOptions {
        init_args: vec!["--bundle-trust".into(), format!("{}.pub", key.display())],
        ..LocalOptions::default()
    };
    let c = LocalCluster::start(&dir.path().join("cluster"), &exe(), 1, opts)
        .await
        .expect("one node");
    let r = async {
        let ca = std::fs::read_to_string(c.nodes[0].dir.join("ca.crt"))?;
        let n = Node { c: &c, ca };
        // A signed check that fails while `./flag` exists in the agent's state directory.
        let usb = dir.path().join("usb");
        std::fs::create_dir_all(usb.join("files"))?;
        std::fs::write(
            usb.join("files/checks.toml"),
            "[global]\n\"agent.check.cmd.flag\" = \"test ! -e flag\"\n",
        )?;
        let spec = usb.join("spec.toml");
        std::fs::write(
            &spec,
            "channel = \"site\"\nversion = 1\n\n[[payload]]\npath = \"files/checks.toml\"\nkind = \"config\"\n",
        )?;
        let bundle = usb.join("checks-1.obundle").to_string_lossy().into_owned();
        let s = |p: &std::path::Path| p.to_string_lossy().into_owned();
        c.run_ok(&[
            "bundle", "create", "--spec", &s(&spec), "--key", &s(&key), "-o", &bundle,
        ])?;
        c.cli(0, &["bundle", "import", &bundle])?;
        let fleet = support::agents::Fleet::new(&exe());
        let server = vec![c.nodes[0].api_addr.clone()];
        let token = c.cli(0, &["token", "create", "--kind", "client"])?;
        let agents = dir.path().join("agents");
        std::fs::create_dir_all(agents.join("flagged-0"))?;
        std::fs::write(agents.join("flagged-0/flag"), b"x")?;
        let flagged = fleet.enroll(&agents, "flagged", 1, token.trim(), &server)?;
        let fine = fleet.enroll(&agents, "fine", 1, token.trim(), &server)?;
        let silent = agents.join("silent");
        std::fs::create_dir_all(&silent)?;
        support::local::enroll_agent(
            |args| fleet.run_in(&silent, args),
            token.trim(),
            &server[0],
            &silent,
            &["--hostname", "silent-host"],
        )?;
        // The two syncs recorded as seen (a node flushes last-seen times every few seconds).
        let synced = [flagged[0].id.clone(), fine[0].id.clone()];
        support::wait_for(std::time::Duration::from_secs(60), "syncs seen", || {
            let list: Vec<outpost::wire::ClientRecord> =
                serde_json::from_str(&c.cli(0, &["client", "list", "--json"]).ok()?).ok()?;
            list.iter()
                .filter(|r| synced.contains(&r.id))
                .all(|r| r.last_seen.is_some())
                .then_some(())
        });

        let alice = outpost::harness::console::sign_in(&c, 0, "alice").await?;
        let a = n.get("/clients", Some(&alice)).await?;
        assert!(a.body.contains("3 matching"), "{}", a.body);
        let a = n.get("/clients?failing=1", Some(&alice)).await?;
        assert!(
            a.body.contains("1 matching")
                && a.body.contains("flagged-0")
                && a.body.contains("cmd.flag")
                && !a.body.contains("fine-0")
                && a.body.contains("value=\"1\" checked"),
            "{}",
            a.body
        );
        let a = n.get("/clients?unseen=7d", Some(&alice)).await?;
        assert!(
            a.body.contains("1 matching")
                && a.body.contains("silent-host")
                && a.body.contains("value=\"7d\" selected"),
            "{}",
            a.body
        );
        let a = n.get("/clients?unseen=7d&failing=1", Some(&alice)).await?;
        assert!(a.body.contains("0 matching"), "{}", a.body);
        let a = n.get("/clients?unseen=soon", Some(&alice)).await?;
        assert_eq!(a.status, 400, "{}", a.body);
        assert!(a.body.contains("not a duration"), "{}", a.body);
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}
