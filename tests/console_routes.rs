//! The console's routes over HTTPS without a browser (`outpost::harness::console::request`):
//! what is open without a session, the login link, password sign-in and its rate limit,
//! every page with a session, the origin and CSRF checks of every action, pagination, and
//! sessions ended from the CLI and from the console.

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

const PAGES: [&str; 11] = [
    "/",
    "/clients",
    "/clients/c-1",
    "/clients/c-1/revoke",
    "/inventory",
    "/config",
    "/bundles",
    "/deployments",
    "/deployments/d-1",
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
        assert!(
            a.body.contains("120 clients") && a.body.contains("No alarms"),
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
        assert!(audit.contains("\"actor\": \"console:alice\""), "{audit}");

        // Revoke through the console.
        let list: Vec<outpost_storage::ClientRecord> =
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
