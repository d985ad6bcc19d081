//! Who may call which API route, through a real node: every route the router has
//! (`outpost::api::route_rules`) is called by every kind of caller (a viewer, an operator with
//! a scope, an operator of the whole site, an admin, a name with no role row, no certificate,
//! an enrolled client) and must be refused exactly when its rule forbids that caller, and be
//! found (no 404/405 from the router) when it allows. The expected rules are this file's own
//! table: a route added to the router without a line here, or a rule changed, fails the test.
//!
//! Paths are filled with harmless values (unknown ids, a zero digest) and bodies are `{}`, so
//! an allowed write is answered 4xx by its handler and changes nothing the test relies on.

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hyper::Method;
use outpost::harness::localcluster::LocalCluster;
use outpost::shared::client::{ApiClient, ApiFailure, Endpoint, local_client};
use outpost::wire::{RoleRequest, RoleView};
use outpost_certs::{CertAuthority, Role, TlsIdentity, Validity};
use serde_json::Value;
use support::{local::ca_pem, local::enroll_agent, one_node, or_dump, run_ok, serial};

/// What this test expects a route to ask of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Anyone, with or without a certificate.
    Open,
    /// An enrolled client only.
    Agent,
    /// A person with at least this role.
    Viewer,
    Operator,
    Admin,
}

use Rule::{Admin, Agent, Open, Operator, Viewer};

/// Every API route and its rule, kept by hand: the router must hold exactly these.
const TABLE: &[(&str, &str, Rule)] = &[
    ("GET", "/healthz", Open),
    ("GET", "/readyz", Open),
    ("GET", "/metrics", Viewer),
    ("GET", "/v1/status", Viewer),
    ("GET", "/v1/doctor", Viewer),
    ("POST", "/v1/tokens", Admin),
    ("GET", "/v1/tokens", Viewer),
    ("POST", "/v1/tokens/{id}/revoke", Admin),
    ("POST", "/v1/admins/{name}/revoke", Admin),
    ("GET", "/v1/roles", Viewer),
    ("GET", "/v1/roles/{name}", Viewer),
    ("PUT", "/v1/roles/{name}", Admin),
    ("POST", "/v1/join", Open),
    ("GET", "/v1/nodes", Viewer),
    ("DELETE", "/v1/nodes/{id}", Admin),
    ("GET", "/v1/config", Viewer),
    ("PUT", "/v1/config", Operator),
    ("GET", "/v1/config/{key}", Viewer),
    ("DELETE", "/v1/config/{key}", Operator),
    ("GET", "/v1/audit", Viewer),
    ("GET", "/v1/audit/verify", Viewer),
    ("GET", "/v1/audit/checkpoint", Viewer),
    ("GET", "/v1/audit/export", Viewer),
    ("GET", "/v1/config-effective/{client}", Viewer),
    ("POST", "/v1/enroll", Open),
    ("GET", "/v1/agent/sync", Agent),
    ("GET", "/v1/agent/config", Agent),
    ("GET", "/v1/agent/trust", Agent),
    ("PUT", "/v1/agent/inventory", Agent),
    ("GET", "/v1/inventory", Viewer),
    ("GET", "/v1/inventory/{client}", Viewer),
    ("GET", "/v1/clients", Viewer),
    ("GET", "/v1/clients/{id}", Viewer),
    ("POST", "/v1/clients/{id}/revoke", Admin),
    ("POST", "/v1/clients/labels", Operator),
    ("GET", "/v1/bundles", Viewer),
    ("POST", "/v1/bundles", Admin),
    ("GET", "/v1/bundles/context", Admin),
    ("POST", "/v1/bundles/gc", Admin),
    ("GET", "/v1/deployments", Viewer),
    ("POST", "/v1/deployments", Operator),
    ("POST", "/v1/deployments/plan", Operator),
    ("GET", "/v1/deployments/{id}", Viewer),
    ("POST", "/v1/deployments/{id}/{step}", Operator),
    ("GET", "/v1/agent/assignments", Agent),
    ("GET", "/v1/agent/artifacts/{sha256}", Agent),
    ("POST", "/v1/agent/results", Agent),
    ("POST", "/v1/agent/renew", Agent),
    ("POST", "/v1/agent/renew/confirm", Agent),
    ("POST", "/v1/backup", Admin),
    ("GET", "/v1/upgrade", Viewer),
    ("POST", "/v1/upgrade", Admin),
    ("POST", "/v1/console/links", Admin),
    ("GET", "/v1/console/users", Viewer),
    ("PUT", "/v1/console/users", Admin),
    ("DELETE", "/v1/console/users/{name}", Admin),
    ("GET", "/v1/console/sessions", Viewer),
    ("POST", "/v1/console/sessions/{id}/end", Admin),
];

/// The router's rules in this table's terms.
fn router_rules() -> Vec<(String, String, Rule)> {
    use outpost::api::access::Need;
    use outpost_storage::PersonRole;
    outpost::api::route_rules()
        .into_iter()
        .map(|r| {
            let rule = match r.need {
                Need::Open => Open,
                Need::Agent => Agent,
                Need::Person(PersonRole::Viewer) => Viewer,
                Need::Person(PersonRole::Operator) => Operator,
                Need::Person(PersonRole::Admin) => Admin,
            };
            (r.method.to_string(), r.path.to_string(), rule)
        })
        .collect()
}

/// Where the router and the table disagree, one line each: a route without a line in the
/// table, a line without a route, or a rule other than the table's.
fn disagreements(router: &[(String, String, Rule)], table: &[(&str, &str, Rule)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (method, path, rule) in router {
        if !seen.insert((method.as_str(), path.as_str())) {
            out.push(format!("{method} {path}: twice in the router"));
        }
        match table.iter().find(|(m, p, _)| m == method && p == path) {
            None => out.push(format!(
                "{method} {path}: a route without a line in this test's table (rule {rule:?})"
            )),
            Some((_, _, want)) if want != rule => out.push(format!(
                "{method} {path}: the router's rule is {rule:?}, the table's {want:?}"
            )),
            Some(_) => {}
        }
    }
    for (method, path, rule) in table {
        if !router.iter().any(|(m, p, _)| m == method && p == path) {
            out.push(format!(
                "{method} {path}: in the table ({rule:?}) but not in the router"
            ));
        }
    }
    out
}

#[test]
fn the_router_holds_exactly_the_routes_and_rules_of_the_table() {
    let router = router_rules();
    let diff = disagreements(&router, TABLE);
    assert!(
        diff.is_empty(),
        "the router and this test's table differ:\n  {}",
        diff.join("\n  ")
    );
    assert_eq!(router.len(), TABLE.len());
}

/// The comparison itself: a new route, a dropped one and a changed rule are each reported.
#[test]
fn a_new_route_without_a_rule_in_the_table_fails() {
    let mut router = router_rules();
    router.push(("POST".into(), "/v1/new-thing".into(), Admin));
    let diff = disagreements(&router, TABLE);
    assert_eq!(
        diff,
        ["POST /v1/new-thing: a route without a line in this test's table (rule Admin)"]
    );
    let mut router = router_rules();
    router.retain(|(_, p, _)| p != "/v1/roles/{name}");
    let diff = disagreements(&router, TABLE);
    assert_eq!(diff.len(), 2, "{diff:?}");
    assert!(diff.iter().all(|d| d.ends_with("but not in the router")));
    let mut router = router_rules();
    for r in router
        .iter_mut()
        .filter(|(m, p, _)| m == "PUT" && p == "/v1/config")
    {
        r.2 = Viewer;
    }
    assert_eq!(
        disagreements(&router, TABLE),
        ["PUT /v1/config: the router's rule is Viewer, the table's Operator"]
    );
}

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Viewer,
    /// An operator whose scope is `label:line2`.
    ScopedOperator,
    Operator,
    /// A name whose role was set to admin.
    Admin,
    /// A certificate name with no role row: an admin.
    ImplicitAdmin,
    NoCertificate,
    Client,
}

impl Who {
    const ALL: [Who; 7] = [
        Who::Viewer,
        Who::ScopedOperator,
        Who::Operator,
        Who::Admin,
        Who::ImplicitAdmin,
        Who::NoCertificate,
        Who::Client,
    ];

    /// The certificate name and role of a person, as this test sets it (None: no role row).
    fn person(self) -> Option<(&'static str, Option<RoleRequest>)> {
        let req = |role: &str, scopes: &[&str]| {
            Some(RoleRequest {
                role: role.into(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
            })
        };
        match self {
            Who::Viewer => Some(("vera", req("viewer", &[]))),
            Who::ScopedOperator => Some(("olga", req("operator", &["label:line2"]))),
            Who::Operator => Some(("otto", req("operator", &[]))),
            Who::Admin => Some(("ada", req("admin", &[]))),
            Who::ImplicitAdmin => Some(("ivan", None)),
            Who::NoCertificate | Who::Client => None,
        }
    }

    /// The role a person holds (an implicit admin is an admin).
    fn level(self) -> Option<Rule> {
        match self {
            Who::Viewer => Some(Viewer),
            Who::ScopedOperator | Who::Operator => Some(Operator),
            Who::Admin | Who::ImplicitAdmin => Some(Admin),
            Who::NoCertificate | Who::Client => None,
        }
    }

    /// Whether `rule` forbids this caller.
    fn forbidden_by(self, rule: Rule) -> bool {
        let rank = |r: Rule| match r {
            Viewer => 1,
            Operator => 2,
            Admin => 3,
            Open | Agent => 0,
        };
        match rule {
            Open => false,
            Agent => self != Who::Client,
            need => self.level().is_none_or(|have| rank(have) < rank(need)),
        }
    }
}

/// An admin certificate named `name` (one day) from the first node's CA key, made in-process
/// as root on that node could.
fn person_identity(c: &LocalCluster, name: &str) -> TlsIdentity {
    let pem = ca_pem(c);
    let key = std::fs::read_to_string(c.nodes[0].dir.join("ca.key")).expect("ca.key");
    let ca = CertAuthority::from_pem(&pem, &key).expect("the cluster CA");
    let (cert, key) = ca
        .issue_with_new_key(
            &Role::Admin(name.into()),
            &Validity::days_from(support::now(), 1),
        )
        .expect("an admin certificate");
    TlsIdentity::from_pem(&cert, &key, &pem).expect("a person's identity")
}

fn api(c: &LocalCluster, id: Option<&TlsIdentity>) -> ApiClient {
    let config = outpost_certs::client_config(&ca_pem(c), id, &[b"http/1.1"]).expect("tls config");
    let mut api = ApiClient::new(Endpoint::Tls {
        addr: c.nodes[0].api_addr.clone(),
        config,
        server_name: outpost_certs::ANY_NODE_SERVER_NAME.into(),
    });
    api.set_timeout(Duration::from_secs(30));
    api
}

/// An agent enrolled through node 0 into `state`: its client certificate.
fn client_identity(c: &LocalCluster, state: &Path) -> Result<TlsIdentity> {
    let token = c.cli(0, &["token", "create", "--kind", "client"])?;
    enroll_agent(
        |args| run_ok(c, args),
        token.trim(),
        &c.nodes[0].api_addr,
        state,
        &["--hostname", "rules-agent"],
    )?;
    Ok(TlsIdentity::from_pem(
        &std::fs::read_to_string(state.join("client.crt"))?,
        &std::fs::read_to_string(state.join("client.key"))?,
        &std::fs::read_to_string(state.join("ca.crt"))?,
    )?)
}

/// A route's path with harmless values for its parameters: ids nothing has, a zero digest,
/// the `pause` step.
fn filled(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .map(|i| open + i)
            .unwrap_or(rest.len());
        let value = match &rest[open + 1..close] {
            // Node ids are numbers.
            "id" if path.starts_with("/v1/nodes/") => "999999".to_string(),
            "id" => "no-such-id".into(),
            "name" => "no-such-person".into(),
            "key" => "no.such.key".into(),
            "client" => "no-such-client".into(),
            "sha256" => "0".repeat(64),
            "step" => "pause".into(),
            other => panic!("{path}: no harmless value for {{{other}}}: add one to `filled`"),
        };
        out.push_str(&value);
        rest = rest.get(close + 1..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// The status and error message of one request (200 and "" for any success).
async fn ask(api: &ApiClient, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let method = Method::from_bytes(method.as_bytes()).expect("a method");
    match api.call_raw(method.clone(), path, body).await {
        Ok(_) => (200, String::new()),
        Err(e) => match e.downcast_ref::<ApiFailure>() {
            Some(f) => (f.status.as_u16(), f.message.clone()),
            None => panic!("{method} {path}: no answer: {e:#}"),
        },
    }
}

/// An answer the router gives for a path or method it does not have: 405, or a 404 without
/// a handler's JSON error (the client then shows the status line and the empty body).
fn router_miss(status: u16, message: &str) -> bool {
    status == 405 || (status == 404 && message.starts_with("404 Not Found"))
}

/// What `who` got for `rule` on `method path`, if not what the rule says.
fn judge(who: Who, method: &str, path: &str, rule: Rule, answer: &(u16, String)) -> Option<String> {
    let (status, message) = answer;
    let at = format!("{who:?} {method} {path} ({rule:?}): {status} {message:?}");
    if who.forbidden_by(rule) {
        // No certificate at all is 401 on every route but the open ones, before any rule.
        let want = if who == Who::NoCertificate { 401 } else { 403 };
        if *status != want {
            return Some(format!("{at}: should be refused with {want}"));
        }
        // A person refused by a role names its role and the one needed.
        if let (Some(have), Viewer | Operator | Admin) = (who.level(), rule) {
            let (have, need) = (rule_name(have), rule_name(rule));
            if !message.contains(&format!(" {have}:"))
                || !message.contains(&format!("the {need} role"))
            {
                return Some(format!(
                    "{at}: the refusal should name the role {have} and the needed {need}"
                ));
            }
        }
        return None;
    }
    if *status == 403 && handler_refusal(who, method, path, message) {
        return None;
    }
    if *status == 401 || *status == 403 {
        return Some(format!("{at}: the rule allows this caller"));
    }
    if router_miss(*status, message) {
        return Some(format!(
            "{at}: the router has no such route for an allowed caller"
        ));
    }
    None
}

/// A refusal by a handler that asks more than its route's rule, on purpose, and says so:
/// these are the resource's own checks, after the rule let the caller in.
fn handler_refusal(who: Who, method: &str, path: &str, message: &str) -> bool {
    match (method, path) {
        // Removing unreferenced blobs is for root on the node's own socket, whatever the role.
        ("POST", "/v1/bundles/gc") => who.level().is_some() && message == "local only",
        // A client fetches only the blobs of its assignments: the zero digest is none.
        ("GET", "/v1/agent/artifacts/{sha256}") => {
            who == Who::Client && message.contains("is not assigned to client")
        }
        // A scope limits which clients and config a person reaches; the refusal names it.
        _ => who == Who::ScopedOperator && message.contains("scope (label:line2)"),
    }
}

fn rule_name(r: Rule) -> &'static str {
    match r {
        Viewer => "viewer",
        Operator => "operator",
        Admin => "admin",
        Open => "open",
        Agent => "agent",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_caller_by_its_rule() {
    let _serial = serial();
    let (dir, c) = one_node().await;
    or_dump(&c, callers_against_every_route(&c, dir.path()).await);
}

async fn callers_against_every_route(c: &LocalCluster, root: &Path) -> Result<()> {
    // Roles are set by root on the node's socket, before any certificate is used.
    let local = local_client(&c.nodes[0].dir);
    let mut callers = Vec::new();
    for who in Who::ALL {
        let id = match (who, who.person()) {
            (_, Some((name, role))) => {
                if let Some(req) = role {
                    let view: RoleView = local
                        .call(Method::PUT, &format!("/v1/roles/{name}"), Some(&req))
                        .await
                        .with_context(|| format!("setting the role of {name}"))?;
                    if view.role != req.role || view.scopes != req.scopes || view.implicit {
                        bail!("{name}'s role was set to {view:?}, not {req:?}");
                    }
                }
                Some(person_identity(c, name))
            }
            (Who::Client, None) => Some(client_identity(c, &root.join("agent"))?),
            _ => None,
        };
        callers.push((who, api(c, id.as_ref())));
    }
    // The name without a row is listed as an implicit admin.
    let ivan: RoleView = local
        .call(
            Method::GET,
            "/v1/roles/ivan",
            outpost::shared::client::NO_BODY,
        )
        .await?;
    if ivan.role != "admin" || !ivan.implicit {
        bail!("a name without a role row is {ivan:?}, not an implicit admin");
    }

    let empty = serde_json::json!({});
    let mut wrong = Vec::new();
    let mut asked = 0;
    for (method, path, rule) in TABLE {
        let target = filled(path);
        let body = matches!(*method, "POST" | "PUT").then_some(&empty);
        for (who, api) in &callers {
            let answer = ask(api, method, &target, body).await;
            asked += 1;
            if let Some(w) = judge(*who, method, path, *rule, &answer) {
                wrong.push(w);
            }
        }
    }
    if !wrong.is_empty() {
        bail!(
            "{} of {asked} answers do not follow the rules:\n  {}",
            wrong.len(),
            wrong.join("\n  ")
        );
    }
    assert_eq!(asked, TABLE.len() * Who::ALL.len());
    let by = |w: Who| {
        &callers
            .iter()
            .find(|(who, _)| *who == w)
            .expect("every caller")
            .1
    };

    // What the router answers for a path or a method it lacks is judged wrong for an allowed
    // caller: the loop above would have seen a route of the table the router does not serve.
    for (method, path) in [("GET", "/v1/no-such-route"), ("DELETE", "/v1/status")] {
        let answer = ask(by(Who::Admin), method, path, None).await;
        if judge(Who::Admin, method, path, Viewer, &answer).is_none() {
            bail!("{method} {path}, which no route serves, was answered {answer:?}");
        }
    }

    // A person is refused before the body is read: a viewer's config write with a 60 KiB body
    // that is not a config entry at all is 403, not 400/413/422, and says why.
    let by = |w: Who| {
        &callers
            .iter()
            .find(|(who, _)| *who == w)
            .expect("every caller")
            .1
    };
    let viewer = by(Who::Viewer);
    let big = Value::String("x".repeat(60 << 10));
    let (status, message) = ask(viewer, "PUT", "/v1/config", Some(&big)).await;
    if status != 403
        || !message.contains("vera is a viewer")
        || !message.contains("needs the operator role")
    {
        bail!("a viewer's 60 KiB PUT /v1/config: {status} {message:?}");
    }
    // A body an admin may send at 12 MiB: a viewer's 1 MiB bundle is refused unread as well.
    let bundle = Value::String("x".repeat(1 << 20));
    let (status, message) = ask(viewer, "POST", "/v1/bundles", Some(&bundle)).await;
    if status != 403 || !message.contains("needs the admin role") {
        bail!("a viewer's 1 MiB POST /v1/bundles: {status} {message:?}");
    }
    // The same 60 KiB body from an operator reaches the handler, which finds it is no entry.
    let (status, message) = ask(by(Who::Operator), "PUT", "/v1/config", Some(&big)).await;
    if status == 403 || status == 401 || !(400..500).contains(&status) {
        bail!("an operator's 60 KiB PUT /v1/config: {status} {message:?}");
    }
    Ok(())
}
