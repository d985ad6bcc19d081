//! What each template shows: plain values, already formatted, so the templates
//! (`src/console/templates/*.html`) hold layout and no logic beyond loops and conditions.
//! askama checks them against these types when the binary is compiled and escapes every
//! value for HTML.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use outpost_storage::{Grant, PersonRole};

use crate::console::{Console, Operator};

/// Renders a page, or answers 500 naming the template error.
pub fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering the page failed: {e}\n"),
        )
            .into_response(),
    }
}

/// The frame of every page: title, this node, the operator and the navigation.
pub struct Chrome {
    pub title: String,
    pub node: String,
    pub cluster: String,
    pub version: &'static str,
    /// None on the sign-in page and on refusals: then nothing of the cluster is shown.
    pub user: Option<String>,
    pub csrf: String,
    /// Who is signed in, as the header shows it: `alice · operator · label:line2`.
    pub who: String,
    /// The role allows changes (operator or admin): the pages render their forms.
    pub can_operate: bool,
    /// The role is admin: revocations, sessions, people.
    pub can_admin: bool,
    /// Which navigation entry is this page's.
    pub nav: &'static str,
}

impl Chrome {
    pub fn new(con: &Console, op: &Operator, title: &str, nav: &'static str) -> Chrome {
        Chrome {
            title: title.to_owned(),
            node: con.app.name.clone(),
            cluster: con.app.cluster_id.chars().take(12).collect(),
            version: env!("CARGO_PKG_VERSION"),
            user: Some(op.user.clone()),
            csrf: op.csrf.clone(),
            who: who(&op.user, &op.grant),
            can_operate: op.grant.role >= PersonRole::Operator,
            can_admin: op.grant.role >= PersonRole::Admin,
            nav,
        }
    }

    pub fn anonymous(_con: &Console, title: &str) -> Chrome {
        Chrome {
            title: title.to_owned(),
            node: String::new(),
            cluster: String::new(),
            version: env!("CARGO_PKG_VERSION"),
            user: None,
            csrf: String::new(),
            who: String::new(),
            can_operate: false,
            can_admin: false,
            nav: "",
        }
    }

    /// The navigation: (path, label, this page's).
    pub fn links(&self) -> Vec<(&'static str, &'static str, bool)> {
        [
            ("/", "Overview", "overview"),
            ("/clients", "Clients", "clients"),
            ("/inventory", "Inventory", "inventory"),
            ("/config", "Configuration", "config"),
            ("/bundles", "Bundles", "bundles"),
            ("/deployments", "Deployments", "deployments"),
            ("/audit", "Audit", "audit"),
            ("/sessions", "Sessions", "sessions"),
            ("/people", "People", "people"),
        ]
        .into_iter()
        .map(|(href, label, key)| (href, label, key == self.nav))
        .collect()
    }
}

/// A person as the header and the People page show them: name, role, scope (`alice ·
/// operator · label:line2`; `bob · admin · whole site`).
pub fn who(name: &str, grant: &Grant) -> String {
    let scope = if grant.whole_site() {
        "whole site".to_owned()
    } else {
        grant
            .scopes
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("{name} · {} · {scope}", grant.role)
}

#[derive(Template)]
#[template(path = "signin.html")]
pub struct SignIn {
    pub c: Chrome,
    pub next: String,
    pub token: String,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct Message {
    pub c: Chrome,
    pub heading: String,
    pub text: String,
}

/// A warning on the overview: `level` is `bad` or `warn`; `action` says what to do (may be
/// empty).
pub struct Alarm {
    pub level: &'static str,
    pub text: String,
    pub action: String,
}

pub struct NodeRow {
    pub id: u64,
    pub name: String,
    pub api_addr: String,
    pub role: String,
    pub leader: bool,
    pub this: bool,
    /// `ready`, `not ready: …` or `no answer: …`.
    pub health: String,
    pub ready: bool,
    pub version: String,
    pub applied: String,
    pub lag: String,
    pub lagging: bool,
}

pub struct CertRow {
    pub kind: &'static str,
    pub ends: String,
    pub left: String,
    pub soon: bool,
}

#[derive(Template)]
#[template(path = "overview.html")]
pub struct Overview {
    pub c: Chrome,
    pub cluster_name: String,
    pub leader: String,
    pub term: u64,
    pub alarms: Vec<Alarm>,
    pub nodes: Vec<NodeRow>,
    pub certs: Vec<CertRow>,
    pub clients: u64,
    pub revoked: u64,
    pub bundles: usize,
    pub deployments: usize,
    pub roll: String,
    /// This node's backups (`overview::backup_lines`).
    pub backup: Vec<BackupLine>,
}

/// One line of the overview's backups section.
#[derive(Debug)]
pub struct BackupLine {
    pub label: &'static str,
    pub value: String,
    /// Shown as a problem.
    pub bad: bool,
}

pub struct ClientRow {
    pub id: String,
    pub hostname: String,
    pub groups: String,
    pub labels: String,
    /// The failing health checks, comma-separated (empty when none).
    pub failing: String,
    pub last_seen: String,
    pub enrolled: String,
    pub revoked: bool,
}

/// Links to the previous and next page of a list, and where this page is.
pub struct Pager {
    pub prev: Option<String>,
    pub next: Option<String>,
    pub label: String,
}

#[derive(Template)]
#[template(path = "clients.html")]
pub struct Clients {
    pub c: Chrome,
    pub q: String,
    pub group: String,
    /// The "failing checks" filter is on.
    pub failing: bool,
    /// The "unseen for" filter as given (`7d`), empty when off.
    pub unseen: String,
    pub rows: Vec<ClientRow>,
    pub total: u64,
    pub pager: Pager,
}

pub struct Fact {
    pub name: String,
    pub value: String,
}

pub struct Change {
    pub when: String,
    pub changed: String,
}

#[derive(Template)]
#[template(path = "client.html")]
pub struct Client {
    pub c: Chrome,
    pub row: ClientRow,
    pub serial: String,
    pub seen_node: String,
    pub facts_updated: String,
    pub facts: Vec<Fact>,
    pub history: Vec<Change>,
    pub config: Vec<Fact>,
    pub labels: Vec<String>,
    pub done: String,
}

#[derive(Template)]
#[template(path = "revoke.html")]
pub struct Revoke {
    pub c: Chrome,
    pub row: ClientRow,
}

pub struct InventoryRow {
    pub id: String,
    pub hostname: String,
    pub groups: String,
    pub updated: String,
}

#[derive(Template)]
#[template(path = "inventory.html")]
pub struct Inventory {
    pub c: Chrome,
    pub fact: String,
    pub group: String,
    pub error: String,
    pub rows: Vec<InventoryRow>,
    pub scanned: u64,
    pub more: Option<String>,
    pub first: Option<String>,
}

pub struct ScopeLink {
    pub label: String,
    pub href: String,
    pub count: u64,
    pub current: bool,
}

pub struct ConfigRow {
    pub key: String,
    pub value: String,
    pub version: u64,
    pub updated: String,
    pub by: String,
    pub handler: bool,
}

#[derive(Template)]
#[template(path = "config.html")]
pub struct Config {
    pub c: Chrome,
    pub scopes: Vec<ScopeLink>,
    /// The scope shown, as the forms send it (`global`, `group:NAME`, `client:ID`).
    pub scope: String,
    pub rows: Vec<ConfigRow>,
    pub error: String,
    /// The person may set and delete keys of this scope (the forms are shown).
    pub can_change: bool,
}

pub struct PayloadRow {
    pub name: String,
    pub kind: String,
    pub size: String,
    pub sha256: String,
    pub held: String,
    pub everywhere: bool,
}

pub struct BundleRow {
    pub id: String,
    pub kind: String,
    pub channel: String,
    pub version: u64,
    pub created: String,
    pub expires: String,
    pub imported: String,
    pub by: String,
    pub signers: usize,
    pub payloads: Vec<PayloadRow>,
}

pub struct ChannelRow {
    pub name: String,
    pub version: u64,
    pub manifest: String,
    pub updated: String,
}

#[derive(Template)]
#[template(path = "bundles.html")]
pub struct Bundles {
    pub c: Chrome,
    pub trust: String,
    pub channels: Vec<ChannelRow>,
    pub bundles: Vec<BundleRow>,
}

pub struct DeploymentRow {
    pub id: String,
    pub artifact: String,
    pub version: u64,
    pub group: String,
    /// The rollout's state (`running`, `halted`, ...).
    pub state: String,
    pub targeted: u64,
    pub installed: u64,
    pub failed: u64,
    pub pending: u64,
    /// Installed, as a whole percentage of the clients targeted.
    pub percent: u64,
    pub created: String,
    pub by: String,
}

pub struct Failure {
    pub client: String,
    pub when: String,
    pub attempts: u64,
    pub detail: String,
}

/// The "New deployment" form's values (as typed, shown again after a refusal).
#[derive(Default)]
pub struct NewDeployment {
    pub artifact: String,
    pub groups: String,
    pub labels: String,
    pub facts: String,
    pub clients: String,
    pub exclude_labels: String,
    pub exclude_clients: String,
    pub phases: String,
    pub soak: String,
    pub max_failures: String,
    pub windows: String,
    pub start_at: String,
    pub id: String,
    /// Why the last submission was refused, or empty.
    pub error: String,
}

#[derive(Template)]
#[template(path = "deployments.html")]
pub struct Deployments {
    pub c: Chrome,
    pub rows: Vec<DeploymentRow>,
    pub form: NewDeployment,
}

/// One phase of a preview: its cumulative percent and the seen clients it reaches.
pub struct PlanPhaseRow {
    pub number: usize,
    pub percent: u8,
    /// How many seen clients the phase reaches.
    pub count: usize,
    /// The first of them (ids), and how many more are not listed.
    pub clients: Vec<String>,
    pub more: usize,
}

#[derive(Template)]
#[template(path = "preview.html")]
pub struct Preview {
    pub c: Chrome,
    /// What the deployment installs: `NAME`, `NAME@VERSION`.
    pub artifact: String,
    pub id: String,
    /// The selector as the CLI's flags.
    pub target: String,
    pub count: u64,
    pub phases: Vec<PlanPhaseRow>,
    /// Targeted clients not seen for more than a day: the first ids, the count, the rest.
    pub unseen: Vec<String>,
    pub unseen_count: usize,
    pub unseen_more: usize,
    /// Whether it will wait for a second person's approval, and why (empty: it will not).
    pub approval: String,
    /// Soak, brake, windows, start: one line each, as they will apply.
    pub settings: Vec<(&'static str, String)>,
    /// The form's fields again, for the confirm button and for "Change".
    pub hidden: Vec<(&'static str, String)>,
}

/// One coloured part of a progress bar: `kind` is its CSS class (`installed`, `failed`,
/// `pending`, `outside-window`, `waiting`, `removed`, `remove-failed`), `x` and `width` its
/// place on a bar 1000 units wide.
pub struct Segment {
    pub kind: &'static str,
    pub label: &'static str,
    pub count: u64,
    pub x: u64,
    pub width: u64,
}

pub struct PhaseRow {
    pub number: usize,
    pub percent: u8,
    /// "1 client", "12 clients".
    pub clients: String,
    /// `open`, `open, current` or `not open yet`.
    pub open: &'static str,
    /// The same as a CSS class: `open`, `current`, `closed`.
    pub class: &'static str,
    pub segments: Vec<Segment>,
    /// The bar in words, for screen readers and the page's text.
    pub summary: String,
}

pub struct ClientStatusRow {
    pub id: String,
    pub phase: u32,
    pub status: String,
    pub when: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "deployment.html")]
pub struct Deployment {
    pub c: Chrome,
    pub row: DeploymentRow,
    pub sha256: String,
    pub bundle: String,
    pub failures: Vec<Failure>,
    pub state: String,
    /// "2 of 3 (50%)".
    pub phase: String,
    pub target: String,
    /// "2 clients" targeted now.
    pub targeted: String,
    pub reason: String,
    pub approved_by: String,
    pub brake: String,
    pub soak: String,
    pub windows: String,
    pub start: String,
    pub phases: Vec<PhaseRow>,
    pub clients: Vec<ClientStatusRow>,
    pub pager: Pager,
    /// What the last action did, or empty.
    pub notice: String,
    /// Why the last action was refused, or empty.
    pub error: String,
    pub can_approve: bool,
    pub can_pause: bool,
    pub can_resume: bool,
    pub can_abort: bool,
}

#[derive(Template)]
#[template(path = "abort.html")]
pub struct AbortConfirm {
    pub c: Chrome,
    pub id: String,
    pub state: String,
    pub artifact: String,
    /// "3 clients" that installed it.
    pub installed: String,
    /// An agent release: never uninstalled (deploy the previous release instead).
    pub release: bool,
}

pub struct AuditRow {
    pub seq: u64,
    pub when: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub outcome: String,
    pub ok: bool,
}

#[derive(Template)]
#[template(path = "audit.html")]
pub struct Audit {
    pub c: Chrome,
    pub chain: String,
    pub intact: bool,
    /// What retention moved out and the checkpoint the chain is proven from (None: none).
    pub base: Option<String>,
    pub rows: Vec<AuditRow>,
    pub pager: Pager,
    /// The actor filter as typed (empty: every actor).
    pub actor: String,
}

pub struct SessionRow {
    pub id: String,
    pub user: String,
    pub via: String,
    pub started: String,
    pub last: String,
    pub ends: String,
    pub state: String,
    pub active: bool,
    pub mine: bool,
}

pub struct UserRow {
    pub name: String,
    pub updated: String,
    pub by: String,
}

#[derive(Template)]
#[template(path = "sessions.html")]
pub struct Sessions {
    pub c: Chrome,
    pub sessions: Vec<SessionRow>,
    pub users: Vec<UserRow>,
}

pub struct PersonRow {
    pub name: String,
    pub role: String,
    /// `label:line2, group:lab`, or `whole site`.
    pub scope: String,
    /// No role was set: an admin since before roles.
    pub implicit: bool,
    pub console_account: bool,
    /// `changed 3 min ago by admin:carol as admin`, or empty.
    pub changed: String,
}

#[derive(Template)]
#[template(path = "people.html")]
pub struct People {
    pub c: Chrome,
    pub rows: Vec<PersonRow>,
    /// What the last change did, or empty.
    pub notice: String,
    /// Why the last change was refused, or empty.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_storage::RoleScope;

    #[test]
    fn the_header_names_the_person_role_and_scope() {
        let scoped = Grant {
            role: PersonRole::Operator,
            scopes: vec![
                RoleScope::Label("line2".into()),
                RoleScope::Group("lab".into()),
            ],
        };
        assert_eq!(
            who("alice", &scoped),
            "alice · operator · label:line2, group:lab"
        );
        assert_eq!(who("carol", &Grant::admin()), "carol · admin · whole site");
    }
}
