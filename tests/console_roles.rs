//! The console under roles, over HTTPS without a browser: every console route's rule
//! (`outpost::console::route_rules()`) called as a viewer, an operator scoped to a label and
//! an admin (roles set with `SetRole` through the local socket), each with a valid session
//! and CSRF token: allowed or 403 as the rule says, before the handler acts. Then the scope:
//! the client list filtered to reach, a client outside reach refused, labels and config
//! beyond it refused; the header naming role and scope; forms shown by role; the People page
//! and the audit filtered by actor.

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::{exe, or_dump, serial};

use anyhow::{Context, Result, bail};
use hyper::Method;
use outpost::api::access::Need;
use outpost::harness::console::{Answer, request};
use outpost::harness::localcluster::{LocalCluster, LocalOptions};
use outpost::shared::client::local_client;
use outpost::shared::datadir::DataDir;
use outpost::wire::{RoleRequest, RoleView};
use outpost_storage::PersonRole;

struct Node<'a> {
    c: &'a LocalCluster,
    ca: String,
}

impl Node<'_> {
    async fn get(&self, path: &str, cookie: &str) -> Result<Answer> {
        request(
            &self.c.nodes[0].api_addr,
            &self.ca,
            Method::GET,
            path,
            &[("cookie", cookie)],
            None,
        )
        .await
    }

    /// A POST as a browser sends a form: the session cookie, this origin, and the session's
    /// CSRF token as the form's first field.
    async fn post(&self, path: &str, s: &Session, body: &str) -> Result<Answer> {
        let origin = format!("https://{}", self.c.nodes[0].api_addr);
        let body = if body.is_empty() {
            format!("csrf={}", s.csrf)
        } else {
            format!("csrf={}&{body}", s.csrf)
        };
        request(
            &self.c.nodes[0].api_addr,
            &self.ca,
            Method::POST,
            path,
            &[("cookie", &s.cookie), ("origin", &origin)],
            Some(&body),
        )
        .await
    }
}

/// A signed-in person: name, role, the session cookie and its CSRF token.
struct Session {
    name: &'static str,
    role: PersonRole,
    cookie: String,
    csrf: String,
}

/// The CSRF token in a page's forms (the sign-out form is on every page).
fn csrf(page: &str) -> Result<String> {
    let at = page
        .find("name=\"csrf\" value=\"")
        .context("no csrf field")?
        + 19;
    Ok(page[at..at + 64].to_string())
}

/// Sets `name`'s role through node 0's local socket (root: always an admin), as
/// `PUT /v1/roles/NAME` from `outpost role set` does.
async fn set_role(c: &LocalCluster, name: &str, role: &str, scopes: &[&str]) -> Result<RoleView> {
    let req = RoleRequest {
        role: role.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    };
    local_client(&c.nodes[0].dir)
        .call(Method::PUT, &format!("/v1/roles/{name}"), Some(&req))
        .await
}

/// A new session of account `name` through a one-time link, and its CSRF token.
async fn session(n: &Node<'_>, name: &'static str, role: PersonRole) -> Result<Session> {
    let link = n.c.cli(0, &["console", "login", "--as", name])?;
    let path = link
        .trim()
        .split_once("/login/link/")
        .map(|(_, t)| format!("/login/link/{t}"))
        .context("a login link")?;
    let a = request(&n.c.nodes[0].api_addr, &n.ca, Method::GET, &path, &[], None).await?;
    if a.status != 303 {
        bail!("the login link of {name} answered {}: {}", a.status, a.body);
    }
    let cookie = a
        .cookie("__Host-outpost-session")
        .context("no session cookie")?;
    let page = n.get("/", &cookie).await?;
    if page.status != 200 {
        bail!("the overview as {name}: {} {}", page.status, page.body);
    }
    Ok(Session {
        name,
        role,
        csrf: csrf(&page.body)?,
        cookie,
    })
}

/// A page's HTML with the apostrophe askama escapes put back, to match messages.
fn text(a: &Answer) -> String {
    a.body.replace("&#39;", "'").replace("&#x27;", "'")
}

/// The ids of the clients of `group` (by `outpost client list`).
fn ids_of(c: &LocalCluster, group: &str) -> Result<Vec<String>> {
    let list: Vec<outpost::wire::ClientRecord> =
        serde_json::from_str(&c.cli(0, &["client", "list", "--json"])?)?;
    let mut ids: Vec<String> = list
        .into_iter()
        .filter(|r| r.groups.iter().any(|g| g == group))
        .map(|r| r.id)
        .collect();
    ids.sort();
    Ok(ids)
}

/// What each console route is called with in the matrix: the path with its parameters,
/// the form's fields after the CSRF token, and the status a person the rule allows gets
/// (None: any answer but 401 and a role's 403). A route missing here fails the test, so
/// a new route comes with its case.
fn case(method: &Method, route: &str, reach: &str) -> Option<(String, String, Option<u16>)> {
    let get = *method == Method::GET;
    let c = |p: &str, b: &str, s: Option<u16>| Some((p.to_string(), b.to_string(), s));
    match (get, route) {
        (true, "/") => c("/", "", Some(200)),
        // Signed in already: the sign-in page sends to the overview.
        (true, "/login") => c("/login", "", Some(303)),
        // Open to anyone, refused for a missing sign-in token (not for a role).
        (false, "/login") => c("/login", "name=x&password=y", Some(403)),
        (true, "/login/link/{token}") => c("/login/link/nonsense", "", Some(403)),
        (true, "/static/{file}") => c("/static/console.css", "", Some(200)),
        (true, "/clients") => c("/clients", "", Some(200)),
        (true, "/clients/{id}") => c(&format!("/clients/{reach}"), "", Some(200)),
        (true, "/clients/{id}/revoke") => c(&format!("/clients/{reach}/revoke"), "", Some(200)),
        // A client that does not exist: nothing is revoked by the admin's call.
        (false, "/clients/{id}/revoke") => c("/clients/c-none/revoke", "", None),
        (true, "/inventory") => c("/inventory", "", Some(200)),
        (true, "/config") => c("/config", "", Some(200)),
        (false, "/config/set") => c(
            "/config/set",
            &format!("scope=client:{reach}&key=roles.k&value=v"),
            Some(303),
        ),
        (false, "/config/delete") => c(
            "/config/delete",
            &format!("scope=client:{reach}&key=roles.k"),
            None,
        ),
        (true, "/bundles") => c("/bundles", "", Some(200)),
        (false, "/clients/{id}/labels") => {
            c(&format!("/clients/{reach}/labels"), "add=extra", Some(303))
        }
        (true, "/deployments") => c("/deployments", "", Some(200)),
        // No bundle holds the artifact: refused by the preview's checks (400), after the
        // rule let it through.
        (false, "/deployments") => c(
            "/deployments",
            "step=preview&artifact=nothing&labels=line2",
            Some(400),
        ),
        (true, "/deployments/{id}") => c("/deployments/d-none", "", Some(404)),
        (true, "/deployments/{id}/abort") => c("/deployments/d-none/abort", "", Some(404)),
        (false, "/deployments/{id}/approve") => c("/deployments/d-none/approve", "", None),
        (false, "/deployments/{id}/pause") => c("/deployments/d-none/pause", "", None),
        (false, "/deployments/{id}/resume") => c("/deployments/d-none/resume", "", None),
        (false, "/deployments/{id}/abort") => c("/deployments/d-none/abort", "", None),
        (true, "/audit") => c("/audit", "", Some(200)),
        (true, "/audit/export") => c("/audit/export", "", Some(200)),
        (true, "/sessions") => c("/sessions", "", Some(200)),
        (false, "/sessions/{id}/end") => c("/sessions/0000000000000000/end", "", None),
        (true, "/people") => c("/people", "", Some(200)),
        (false, "/people/set") => c(
            "/people/set",
            "name=zed&role=viewer&scopes=label%3Aline2",
            Some(303),
        ),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_route_as_every_role() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let c = LocalCluster::start(dir.path(), &exe(), 1, LocalOptions::default())
        .await
        .expect("one node");
    let r = async {
        let ca = std::fs::read_to_string(c.nodes[0].dir.join("ca.crt"))?;
        let n = Node { c: &c, ca };
        // Five clients: three in plant-a (two of them labelled line2), two in plant-b.
        let dd = DataDir::new(&c.nodes[0].dir);
        outpost::harness::bench::agents::enroll(&dd, 3, "plant-a").await?;
        outpost::harness::bench::agents::enroll(&dd, 2, "plant-b").await?;
        let plant_a = ids_of(&c, "plant-a")?;
        let plant_b = ids_of(&c, "plant-b")?;
        assert_eq!((plant_a.len(), plant_b.len()), (3, 2));
        let line2 = &plant_a[..2];
        c.cli(
            0,
            &["client", "label", &line2[0], &line2[1], "--add", "line2"],
        )?;
        let reach = line2[0].clone();
        let outside: Vec<&String> = plant_a[2..].iter().chain(plant_b.iter()).collect();

        // Three accounts, their roles set through the local socket (root is an admin).
        for name in ["ada", "otto", "vic"] {
            outpost::harness::console::add_account(&c, 0, name)?;
        }
        let v = set_role(&c, "otto", "operator", &["label:line2"]).await?;
        assert_eq!((v.role.as_str(), v.scopes.len()), ("operator", 1));
        set_role(&c, "vic", "viewer", &[]).await?;
        set_role(&c, "ada", "admin", &[]).await?;
        let people = [
            session(&n, "vic", PersonRole::Viewer).await?,
            session(&n, "otto", PersonRole::Operator).await?,
            session(&n, "ada", PersonRole::Admin).await?,
        ];

        // Every rule, as every role.
        let rules = outpost::console::route_rules();
        assert!(rules.len() >= 30, "{} console rules", rules.len());
        let mut refused = 0;
        for s in &people {
            for rule in &rules {
                if rule.path == "/logout" {
                    continue; // below, with a session of its own
                }
                let (path, body, want) = case(&rule.method, rule.path, &reach)
                    .with_context(|| format!("no case for {} {}", rule.method, rule.path))?;
                let a = if rule.method == Method::GET {
                    n.get(&path, &s.cookie).await?
                } else {
                    n.post(&path, s, &body).await?
                };
                let what = format!("{} {} as {} ({})", rule.method, path, s.name, s.role);
                let allowed = match rule.need {
                    Need::Open => true,
                    Need::Person(need) => s.role >= need,
                    Need::Agent => bail!("{what}: an agent route in the console"),
                };
                let role_refusal = a.status == 403 && a.body.contains("needs the ");
                if allowed {
                    assert!(
                        a.status != 401 && !role_refusal,
                        "{what} was refused: {} {}",
                        a.status,
                        a.body
                    );
                    if let Some(want) = want {
                        assert_eq!(a.status, want, "{what}: {}", a.body);
                    }
                } else {
                    let Need::Person(need) = rule.need else {
                        unreachable!("only a person's rule refuses")
                    };
                    let article = if s.role == PersonRole::Admin {
                        "an"
                    } else {
                        "a"
                    };
                    let says = format!(
                        "{} is {article} {}: {} {} needs the {need} role",
                        s.name, s.role, rule.method, path
                    );
                    assert_eq!(a.status, 403, "{what}: {}", a.body);
                    assert!(a.body.contains(&says), "{what}: {}", a.body);
                    refused += 1;
                }
            }
            // Sign-out is open to every role: a second session of the same person ends.
            let spare = session(&n, s.name, s.role).await?;
            let a = n.post("/logout", &spare, "").await?;
            assert_eq!(
                (a.status, a.header("location")),
                (303, "/login"),
                "{}",
                a.body
            );
            assert_eq!(n.get("/", &spare.cookie).await?.status, 401);
        }
        // The viewer is refused every change (13 routes), the operator the admin's (4).
        assert_eq!(refused, 17, "refusals in the matrix");
        // What the refused POSTs did not do: zed's role was set by the admin alone, once.
        let audit = c.cli(0, &["audit", "--json", "--limit", "200"])?;
        assert_eq!(
            audit.matches("\"target\": \"person:zed\"").count(),
            1,
            "{audit}"
        );
        assert!(
            audit.contains("\"actor\": \"console:ada as admin\""),
            "{audit}"
        );
        assert!(
            audit.contains("\"actor\": \"console:otto as operator of label:line2\""),
            "the scoped operator's config change: {audit}"
        );

        // The scope: the client list shows the two line2 clients, the viewer (whole site)
        // all five.
        let [vic, otto, ada] = &people;
        let a = n.get("/clients", &otto.cookie).await?;
        assert!(a.body.contains("2 matching"), "{}", a.body);
        for id in line2 {
            assert!(a.body.contains(&format!("/clients/{id}\"")), "{id}");
        }
        for id in &outside {
            assert!(!a.body.contains(id.as_str()), "{id} shown to otto");
        }
        let a = n.get("/clients?q=bench", &otto.cookie).await?;
        assert!(a.body.contains("2 matching"), "{}", a.body);
        let a = n.get("/clients", &vic.cookie).await?;
        assert!(a.body.contains("5 matching"), "{}", a.body);
        let a = n
            .get(&format!("/clients/{}", outside[0]), &otto.cookie)
            .await?;
        assert_eq!(a.status, 403, "{}", a.body);
        assert!(
            text(&a).contains(&format!(
                "otto's scope (label:line2) does not reach client {}",
                outside[0]
            )),
            "{}",
            a.body
        );
        // Changes beyond the scope: refused, nothing changed.
        let a = n
            .post(
                &format!("/clients/{}/labels", outside[0]),
                otto,
                "add=line2",
            )
            .await?;
        assert_eq!(a.status, 403, "{}", a.body);
        assert!(a.body.contains("1 client outside otto"), "{}", a.body);
        // Config: the keys of clients outside the scope are neither listed nor shown.
        for id in [&reach, outside[0]] {
            c.cli(
                0,
                &["config", "set", "roles.c", "1", "--client", id.as_str()],
            )?;
        }
        let a = n.get("/config", &otto.cookie).await?;
        assert!(
            a.body.contains(&format!("client:{reach}")) && !a.body.contains(outside[0].as_str()),
            "{}",
            a.body
        );
        let a = n.get("/config", &vic.cookie).await?;
        assert!(a.body.contains(outside[0].as_str()), "{}", a.body);
        let a = n
            .get(
                &format!("/config?scope=client:{}", outside[0]),
                &otto.cookie,
            )
            .await?;
        assert_eq!(a.status, 403, "{}", a.body);
        let a = n
            .post("/config/set", otto, "scope=global&key=roles.g&value=1")
            .await?;
        assert_eq!(a.status, 403, "{}", a.body);
        assert!(
            a.body.contains("does not reach the global config"),
            "{}",
            a.body
        );
        assert!(c.cli(0, &["config", "get", "roles.g"]).is_err());
        let shown: Vec<outpost::wire::ClientRecord> =
            serde_json::from_str(&c.cli(0, &["client", "list", "--json"])?)?;
        let labelled = shown
            .iter()
            .filter(|r| r.labels.iter().any(|l| l == "line2"))
            .count();
        assert_eq!(labelled, 2, "a refused label went through");
        // A deployment whose selector reaches beyond the scope is refused at its preview.
        let a = n
            .post(
                "/deployments",
                otto,
                "step=preview&artifact=nothing&groups=plant-a",
            )
            .await?;
        assert_eq!(a.status, 403, "{}", a.body);
        assert!(
            text(&a).contains(&format!(
                "the selector reaches 1 client outside otto's scope (label:line2): {}<",
                plant_a[2]
            )),
            "{}",
            a.body
        );

        // The header names person, role and scope; forms follow the role.
        let a = n.get(&format!("/clients/{reach}"), &otto.cookie).await?;
        assert!(
            a.body.contains("otto · operator · label:line2"),
            "{}",
            a.body
        );
        assert!(a.body.contains("/labels\"") && !a.body.contains("Revoke this client"));
        let a = n.get(&format!("/clients/{reach}"), &vic.cookie).await?;
        assert!(a.body.contains("vic · viewer · whole site"), "{}", a.body);
        assert!(!a.body.contains("/labels\"") && !a.body.contains("Revoke this client"));
        let a = n.get(&format!("/clients/{reach}"), &ada.cookie).await?;
        assert!(a.body.contains("/labels\"") && a.body.contains("Revoke this client"));
        for page in ["/config", "/deployments", "/sessions", "/people"] {
            let a = n.get(page, &vic.cookie).await?;
            assert_eq!(
                a.body.matches("method=\"post\"").count(),
                1,
                "{page}: only the sign-out form for a viewer: {}",
                a.body
            );
        }
        let a = n.get("/people", &ada.cookie).await?;
        assert!(a.body.contains("action=\"/people/set\""), "{}", a.body);
        let a = n.get("/people", &otto.cookie).await?;
        assert!(!a.body.contains("action=\"/people/set\""), "{}", a.body);
        assert!(
            a.body.contains("<td>otto</td>") && a.body.contains("label:line2"),
            "{}",
            a.body
        );

        // The audit by actor: otto's records only.
        let a = n.get("/audit?actor=otto", &vic.cookie).await?;
        assert!(
            a.body.contains("console:otto as operator of label:line2"),
            "{}",
            a.body
        );
        assert!(!a.body.contains("console:ada"), "{}", a.body);
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

/// A signed bundle (key `key`) with an artifact `tool`.
fn tool_bundle(c: &LocalCluster, root: &std::path::Path, key: &std::path::Path) -> Result<String> {
    let usb = root.join("usb");
    std::fs::create_dir_all(usb.join("files"))?;
    std::fs::write(usb.join("files/tool.sh"), "#!/bin/sh\nexit 0\n")?;
    let spec = usb.join("spec.toml");
    std::fs::write(
        &spec,
        "channel = \"site\"\nversion = 1\n\n[[payload]]\npath = \"files/tool.sh\"\nkind = \"artifact\"\nname = \"tool\"\n",
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

/// A deployment's state by `outpost deployment status`.
fn state_of(c: &LocalCluster, id: &str) -> Result<String> {
    let v: serde_json::Value =
        serde_json::from_str(&c.cli(0, &["deployment", "status", id, "--json"])?)?;
    Ok(v["state"].as_str().context("state")?.to_string())
}

/// A deployment that reaches beyond an operator's scope: its page shows the operator only
/// the clients in reach and no step; a step sent anyway is refused naming the client
/// outside, and the deployment does not move. One within the scope the operator may pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_beyond_the_scope() {
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
        let bundle = tool_bundle(&c, dir.path(), &key)?;
        c.cli(0, &["bundle", "import", &bundle])?;
        let dd = DataDir::new(&c.nodes[0].dir);
        outpost::harness::bench::agents::enroll(&dd, 3, "plant-a").await?;
        let ids = ids_of(&c, "plant-a")?;
        c.cli(0, &["client", "label", &ids[0], &ids[1], "--add", "line2"])?;
        let create = |args: &[&str]| -> Result<String> {
            let mut all = vec!["deployment", "create", "--artifact", "tool"];
            all.extend_from_slice(args);
            let out = c.cli(0, &all)?;
            Ok(out
                .split_whitespace()
                .next()
                .context("deployment id")?
                .to_string())
        };
        let wide = create(&["--group", "plant-a"])?;
        let narrow = create(&["--label", "line2"])?;
        assert_eq!(state_of(&c, &wide)?, "running");

        outpost::harness::console::add_account(&c, 0, "otto")?;
        outpost::harness::console::add_account(&c, 0, "ada")?;
        set_role(&c, "otto", "operator", &["label:line2"]).await?;
        let otto = session(&n, "otto", PersonRole::Operator).await?;
        let ada = session(&n, "ada", PersonRole::Admin).await?;

        let page = n.get(&format!("/deployments/{wide}"), &otto.cookie).await?;
        assert_eq!(page.status, 200, "{}", page.body);
        for id in &ids[..2] {
            assert!(page.body.contains(&format!("/clients/{id}\"")), "{id}");
        }
        assert!(!page.body.contains(ids[2].as_str()), "{}", page.body);
        assert!(!page.body.contains("class=\"steps\""), "{}", page.body);
        let page = n.get(&format!("/deployments/{wide}"), &ada.cookie).await?;
        assert!(page.body.contains(ids[2].as_str()), "{}", page.body);
        assert!(page.body.contains("class=\"steps\""), "{}", page.body);

        let a = n
            .post(&format!("/deployments/{wide}/pause"), &otto, "reason=x")
            .await?;
        assert_eq!(a.status, 403, "{}", a.body);
        assert!(
            text(&a).contains(&format!(
                "deployment {wide} targets 1 client outside otto's scope (label:line2): {}",
                ids[2]
            )),
            "{}",
            a.body
        );
        assert_eq!(state_of(&c, &wide)?, "running");

        let page = n
            .get(&format!("/deployments/{narrow}"), &otto.cookie)
            .await?;
        assert!(page.body.contains("class=\"steps\""), "{}", page.body);
        let a = n
            .post(&format!("/deployments/{narrow}/pause"), &otto, "reason=x")
            .await?;
        assert_eq!(a.status, 303, "{}", a.body);
        assert_eq!(state_of(&c, &narrow)?, "paused");
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}
