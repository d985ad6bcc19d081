//! What each page reads and shows. Every page needs a session (`Operator`); every read is of
//! this node's state on a blocking thread (`AppState::read`); long lists are pages of
//! `PAGE` rows cut by SQL (offset or keyset), so a page costs the same with ten clients or
//! ten thousand. The overview is `overview`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use outpost_storage::{AuditCheck, Scope};
use serde::Deserialize;

use crate::api::clients::ids_outside;
use crate::console::scope;
use crate::console::session::{failed, message};
use crate::console::views::*;
use crate::console::{Console, Operator, PAGE, ago, when};
use crate::shared::client::urlencode;

/// Facts read per inventory page at most (the query goes on from there with "More").
const INVENTORY_SCAN: u32 = 20_000;

#[derive(Debug, Default, Deserialize)]
pub struct ClientsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    group: String,
    /// `1`: only clients with a failing health check.
    #[serde(default)]
    failing: String,
    /// A duration (`7d`): only clients not seen for that long, never-seen ones included.
    #[serde(default)]
    unseen: String,
    #[serde(default)]
    page: Option<u64>,
}

/// The longest `unseen` the clients page takes (ten years).
const MAX_UNSEEN: std::time::Duration = std::time::Duration::from_secs(3650 * 86_400);

/// The `unseen` filter of the clients page: empty for none, else a duration (humantime) of
/// at most `MAX_UNSEEN`. Pure.
fn unseen_filter(text: &str) -> Result<Option<std::time::Duration>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    match humantime::parse_duration(text) {
        Ok(d) if d <= MAX_UNSEEN => Ok(Some(d)),
        Ok(_) => Err(format!("unseen: {text} is longer than ten years")),
        Err(e) => Err(format!(
            "unseen: {text} is not a duration like 7d or 12h ({e})"
        )),
    }
}

/// The clients, searched by id or host name (a substring) and group, and filtered by failing
/// health checks and by how long they have not been seen, a page at a time.
pub async fn clients(
    State(con): State<Arc<Console>>,
    op: Operator,
    Query(q): Query<ClientsQuery>,
) -> Response {
    let text = q.q.trim().chars().take(253).collect::<String>();
    let group = q.group.trim().chars().take(64).collect::<String>();
    let unseen_text = q.unseen.trim().chars().take(32).collect::<String>();
    let unseen = match unseen_filter(&unseen_text) {
        Ok(u) => u,
        Err(e) => return message(&con, StatusCode::BAD_REQUEST, "Not a filter", &e),
    };
    let failing = q.failing == "1";
    let page = q.page.unwrap_or(1).clamp(1, 1_000_000);
    let now = outpost_raft::now_ms();
    let filter = outpost_storage::ClientFilter {
        text: text.clone(),
        group: group.clone(),
        failing,
        unseen_since_ms: unseen
            .map(|d| now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
    };
    let offset = (page - 1) * u64::from(PAGE);
    let grant = op.grant.clone();
    let (rows, total) = match con
        .app
        .read(move |r| clients_in_reach(r, &filter, &grant, offset, PAGE))
        .await
    {
        Ok(v) => v,
        Err(e) => return failed(&con, Some(&op), e),
    };
    let base = format!(
        "/clients?q={}&group={}&failing={}&unseen={}",
        urlencode(&text),
        urlencode(&group),
        if failing { "1" } else { "" },
        urlencode(&unseen_text)
    );
    render(&Clients {
        c: Chrome::new(&con, &op, "Clients", "clients"),
        q: text,
        group,
        failing,
        unseen: unseen_text,
        rows: rows.iter().map(|c| client_row(c, now)).collect(),
        total,
        pager: pager(&base, page, total),
    })
}

/// Clients read per batch when a scoped person's list is filtered.
const REACH_BATCH: u32 = 1000;

/// A page of the clients matching `filter` that `grant` reaches, and how many it reaches in
/// all. The whole site is a page cut by SQL; a scope is filtered here, reading every match
/// in batches, since the storage's filter knows nothing of labels: a scoped person's page
/// costs a pass over the matching clients.
fn clients_in_reach(
    r: &outpost_storage::Reader,
    filter: &outpost_storage::ClientFilter,
    grant: &outpost_storage::Grant,
    offset: u64,
    limit: u32,
) -> Result<(Vec<outpost_storage::ClientRecord>, u64), outpost_storage::StorageError> {
    if grant.whole_site() {
        return r.clients_page(filter, offset, limit);
    }
    let (mut rows, mut reached, mut at) = (Vec::new(), 0u64, 0u64);
    loop {
        let (batch, _) = r.clients_page(filter, at, REACH_BATCH)?;
        let n = batch.len() as u64;
        for c in batch {
            if !grant.reaches(&c.groups, &c.labels) {
                continue;
            }
            if reached >= offset && rows.len() < limit as usize {
                rows.push(c);
            }
            reached += 1;
        }
        if n < u64::from(REACH_BATCH) {
            return Ok((rows, reached));
        }
        at += n;
    }
}

fn client_row(c: &outpost_storage::ClientRecord, now: i64) -> ClientRow {
    ClientRow {
        id: c.id.clone(),
        hostname: c.hostname.clone(),
        groups: c.groups.join(", "),
        labels: c.labels.join(", "),
        failing: c.failing.join(", "),
        last_seen: c.last_seen.map(|t| ago(t, now)).unwrap_or("never".into()),
        enrolled: when(c.enrolled_at_ms),
        revoked: c.revoked,
    }
}

/// Previous/next links of page `page` of `total` rows, `PAGE` a page.
pub fn pager(base: &str, page: u64, total: u64) -> Pager {
    let pages = total.div_ceil(u64::from(PAGE)).max(1);
    Pager {
        prev: (page > 1).then(|| format!("{base}&page={}", page - 1)),
        next: (page < pages).then(|| format!("{base}&page={}", page + 1)),
        label: format!("page {page} of {pages}"),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct DoneQuery {
    #[serde(default)]
    done: String,
}

/// One client: its record, effective configuration, latest facts and their changes.
pub async fn client(
    State(con): State<Arc<Console>>,
    op: Operator,
    Path(id): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Response {
    let i = id.clone();
    let read = con
        .app
        .read(move |r| {
            let Some(c) = r.client(&i)? else {
                return Ok(None);
            };
            let config = r.config_effective(&c.id, &c.groups)?;
            Ok(Some((
                c,
                config,
                r.inventory(&i)?,
                r.inventory_history(&i, 50)?,
            )))
        })
        .await;
    let (c, config, inventory, history) = match read {
        Ok(Some(v)) => v,
        Ok(None) => return not_found(&con, &format!("client {id}")),
        Err(e) => return failed(&con, Some(&op), e),
    };
    if !op.grant.reaches(&c.groups, &c.labels) {
        let e = crate::api::clients::beyond_reach(&op.caller(), &format!("client {}", c.id));
        return failed(&con, Some(&op), e);
    }
    let now = outpost_raft::now_ms();
    let facts = match &inventory {
        Some(inv) => match inv.facts.as_object() {
            Some(map) => map
                .iter()
                .map(|(k, v)| Fact {
                    name: k.clone(),
                    value: clip(&serde_json::to_string_pretty(v).unwrap_or_default(), 4000),
                })
                .collect(),
            None => Vec::new(),
        },
        None => Vec::new(),
    };
    render(&Client {
        c: Chrome::new(&con, &op, &format!("Client {}", c.id), "clients"),
        serial: c.cert_serial.clone(),
        seen_node: c.last_seen_node.map(|n| format!("node {n}")).unwrap_or_default(),
        facts_updated: match &inventory {
            Some(inv) => format!("Reported {}.", ago(inv.updated_at_ms, now)),
            None => "No facts reported yet.".into(),
        },
        facts,
        history: history
            .iter()
            .map(|h| Change {
                when: when(h.at_ms),
                changed: h.changed.join(", "),
            })
            .collect(),
        config: config
            .into_iter()
            .map(|(name, value)| Fact {
                name,
                value: clip(&value, 300),
            })
            .collect(),
        labels: c.labels.clone(),
        done: match q.done.as_str() {
            "revoked" => "Revoked: every node refuses this client from the moment the revocation applies there.".into(),
            "labels" => "Labels changed: deployments that target them reach this client at its next sync.".into(),
            _ => String::new(),
        },
        row: client_row(&c, now),
    })
}

/// The confirmation step before a revocation.
pub async fn revoke_confirm(
    State(con): State<Arc<Console>>,
    op: Operator,
    Path(id): Path<String>,
) -> Response {
    let i = id.clone();
    match con.app.read(move |r| r.client(&i)).await {
        Ok(Some(c)) => render(&Revoke {
            c: Chrome::new(&con, &op, &format!("Revoke {}", c.id), "clients"),
            row: client_row(&c, outpost_raft::now_ms()),
        }),
        Ok(None) => not_found(&con, &format!("client {id}")),
        Err(e) => failed(&con, Some(&op), e),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct InventoryQuery {
    #[serde(default)]
    fact: String,
    #[serde(default)]
    group: String,
    /// Go on after this client id (keyset paging).
    #[serde(default)]
    after: String,
}

/// Clients whose latest facts match `PATH=VALUE` (the rule of `outpost inventory query`),
/// scanned by client id from `after`: a page ends at `PAGE` matches or `INVENTORY_SCAN` rows.
pub async fn inventory(
    State(con): State<Arc<Console>>,
    op: Operator,
    Query(q): Query<InventoryQuery>,
) -> Response {
    let fact = q.fact.trim().chars().take(512).collect::<String>();
    let group = q.group.trim().chars().take(64).collect::<String>();
    let wanted = match fact.split_once('=') {
        Some((p, v)) => Some((p.trim().to_owned(), v.trim().to_owned())),
        None if fact.is_empty() => None,
        None => {
            return render(&Inventory {
                c: Chrome::new(&con, &op, "Inventory", "inventory"),
                error: format!("{fact:?} is not PATH=VALUE"),
                fact,
                group,
                rows: Vec::new(),
                scanned: 0,
                more: None,
                first: None,
            });
        }
    };
    let (g, after, grant) = (group.clone(), q.after.clone(), op.grant.clone());
    let read = con
        .app
        .read(move |r| {
            let mut rows = Vec::new();
            let (mut cursor, mut scanned, mut done) = (after, 0u64, false);
            while rows.len() < PAGE as usize && scanned < u64::from(INVENTORY_SCAN) {
                let batch = r.inventory_scan(&cursor, 500)?;
                if batch.is_empty() {
                    done = true;
                    break;
                }
                for inv in batch {
                    scanned += 1;
                    cursor = inv.client_id.clone();
                    if let Some((path, want)) = &wanted
                        && !outpost_storage::rollout::fact_matches(&inv.facts, path, want)
                    {
                        continue;
                    }
                    let Some(c) = r.client(&inv.client_id)? else {
                        continue;
                    };
                    if (!g.is_empty() && !c.groups.contains(&g))
                        || !grant.reaches(&c.groups, &c.labels)
                    {
                        continue;
                    }
                    rows.push((c, inv.updated_at_ms));
                    if rows.len() == PAGE as usize {
                        break;
                    }
                }
            }
            Ok((rows, scanned, (!done).then_some(cursor)))
        })
        .await;
    let (rows, scanned, more) = match read {
        Ok(v) => v,
        Err(e) => return failed(&con, Some(&op), e),
    };
    let now = outpost_raft::now_ms();
    let base = format!(
        "/inventory?fact={}&group={}",
        urlencode(&fact),
        urlencode(&group)
    );
    render(&Inventory {
        c: Chrome::new(&con, &op, "Inventory", "inventory"),
        error: String::new(),
        rows: rows
            .iter()
            .map(|(c, at)| InventoryRow {
                id: c.id.clone(),
                hostname: c.hostname.clone(),
                groups: c.groups.join(", "),
                updated: ago(*at, now),
            })
            .collect(),
        scanned,
        more: more.map(|after| format!("{base}&after={}", urlencode(&after))),
        first: (!q.after.is_empty()).then(|| base.clone()),
        fact,
        group,
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct ScopeQuery {
    #[serde(default)]
    pub scope: String,
}

/// `global`, `group:NAME` or `client:ID` (as the forms send it) as a scope.
pub fn parse_scope(s: &str) -> Result<Scope, String> {
    let s = s.trim();
    let scope = match s.split_once(':') {
        None if s.is_empty() || s == "global" => Scope::Global,
        Some(("group", g)) => Scope::Group(g.to_owned()),
        Some(("client", c)) => Scope::Client(c.to_owned()),
        _ => {
            return Err(format!(
                "scope {s:?} is not global, group:NAME or client:ID"
            ));
        }
    };
    if let Scope::Group(id) | Scope::Client(id) = &scope {
        crate::api::fields::id("scope", id).map_err(|e| e.message().to_owned())?;
    }
    Ok(scope)
}

/// The keys of one scope, the scopes that hold keys, and the forms to set and delete.
pub async fn config(
    State(con): State<Arc<Console>>,
    op: Operator,
    Query(q): Query<ScopeQuery>,
) -> Response {
    let (scope, error) = match parse_scope(&q.scope) {
        Ok(s) => (s, String::new()),
        Err(e) => (Scope::Global, e),
    };
    let (s, grant, scoped) = (scope.clone(), op.grant.clone(), op.caller());
    let read = con
        .app
        .read(move |r| {
            // A client's keys name the client: a scoped person sees those of its clients
            // only, as the client list shows only them.
            let mut scopes = r.config_scopes()?;
            if !grant.whole_site() {
                let mut kept = Vec::with_capacity(scopes.len());
                for (sc, n) in scopes {
                    match &sc {
                        Scope::Client(id)
                            if !ids_outside(r, &scoped, std::iter::once(id))?.is_empty() => {}
                        _ => kept.push((sc, n)),
                    }
                }
                scopes = kept;
            }
            let reached = match &s {
                Scope::Client(id) => ids_outside(r, &scoped, std::iter::once(id))?.is_empty(),
                _ => true,
            };
            Ok((scopes, r.config_list(Some(&s))?, reached))
        })
        .await;
    let (scopes, entries) = match read {
        Ok((_, _, false)) => {
            let id = match &scope {
                Scope::Client(id) => id.as_str(),
                _ => "",
            };
            let e = crate::api::clients::beyond_reach(&op.caller(), &format!("client {id}"));
            return failed(&con, Some(&op), e);
        }
        Ok((scopes, entries, true)) => (scopes, entries),
        Err(e) => return failed(&con, Some(&op), e),
    };
    let now = outpost_raft::now_ms();
    let shown = scope.to_string();
    render(&Config {
        c: Chrome::new(&con, &op, "Configuration", "config"),
        can_change: op.grant.role >= outpost_storage::PersonRole::Operator
            && error.is_empty()
            && scope::config_offered(&op.grant, &scope),
        scopes: scopes
            .iter()
            .map(|(s, n)| ScopeLink {
                label: s.to_string(),
                href: format!("/config?scope={}", urlencode(&s.to_string())),
                count: *n,
                current: *s == scope,
            })
            .collect(),
        rows: entries
            .iter()
            .map(|e| ConfigRow {
                key: e.key.clone(),
                value: clip(&e.value, 300),
                version: e.version,
                updated: ago(e.updated_at_ms, now),
                by: e.updated_by.clone(),
                handler: outpost_storage::signed_only_key(&e.key),
            })
            .collect(),
        scope: shown,
        error,
    })
}

/// Channels and floors, and every bundle (newest first) with its payloads and holders.
pub async fn bundles(State(con): State<Arc<Console>>, op: Operator) -> Response {
    let read = con
        .app
        .read(|r| Ok((r.bundle_trust()?, r.channels()?, r.bundles()?, r.nodes()?)))
        .await;
    let (trust, channels, bundles, nodes) = match read {
        Ok(v) => v,
        Err(e) => return failed(&con, Some(&op), e),
    };
    let now = outpost_raft::now_ms();
    let members: Vec<_> = nodes
        .iter()
        .filter(|n| n.role != outpost_storage::NodeRole::Removed)
        .collect();
    let name = |id: u64| {
        nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| format!("node {id}"))
    };
    render(&Bundles {
        c: Chrome::new(&con, &op, "Bundles", "bundles"),
        trust: match trust {
            Some(t) => format!(
                "trust document version {}, since {}",
                t.version,
                when(t.updated_at_ms)
            ),
            None => "no bundle key is trusted: this cluster accepts no bundle".into(),
        },
        channels: channels
            .iter()
            .map(|c| ChannelRow {
                name: c.name.clone(),
                version: c.version,
                manifest: short(&c.manifest_sha256),
                updated: when(c.updated_at_ms),
            })
            .collect(),
        bundles: bundles
            .iter()
            .rev()
            .map(|b| BundleRow {
                id: b.id.clone(),
                kind: b.bundle_type.as_str().into(),
                channel: b.channel.clone().unwrap_or_else(|| "trust".into()),
                version: b.version,
                created: when(b.created * 1000),
                expires: when(b.expires * 1000),
                imported: ago(b.imported_at_ms, now),
                by: format!("{} on {}", b.imported_by, name(b.node_id)),
                signers: b.signers.len(),
                payloads: b
                    .payloads
                    .iter()
                    .map(|p| PayloadRow {
                        name: p.name.clone(),
                        kind: p.kind.clone(),
                        size: format!("{} bytes", p.size),
                        sha256: short(&p.sha256),
                        held: format!(
                            "{} of {}: {}",
                            p.held_by.len(),
                            members.len(),
                            p.held_by
                                .iter()
                                .map(|n| name(*n))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        everywhere: members.iter().all(|m| p.held_by.contains(&m.id)),
                    })
                    .collect(),
            })
            .collect(),
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    /// Records before this sequence number (absent: the newest).
    before: Option<u64>,
    /// Only this actor's records: a person's name (all their roles, certificate and
    /// console), or a whole actor (`local-admin`, `node:3`).
    #[serde(default)]
    actor: String,
    /// With `actor`: the records after this sequence number, oldest first (absent: the
    /// newest page).
    after: Option<u64>,
}

/// The audit log, newest first, a page at a time, with this node's chain checked now: from
/// its verified mark (the same mark `audit verify` moves), so the page costs the same at ten
/// records and at a million. Pages stop at the chain's base (records moved out by retention).
pub async fn audit(
    State(con): State<Arc<Console>>,
    op: Operator,
    Query(q): Query<AuditQuery>,
) -> Response {
    let actor = q.actor.trim().chars().take(200).collect::<String>();
    let (a, after) = (actor.clone(), q.after);
    let read = con
        .app
        .read(move |r| {
            let head = r.audit_head()?.map(|(seq, _)| seq).unwrap_or(0);
            let before = q.before.unwrap_or(u64::MAX).min(head + 1);
            let rows = if a.is_empty() {
                r.audit_before(before, PAGE)?
            } else {
                // Oldest first from the index; shown newest first like the whole log.
                let mut rows = r.audit_by_actor(&a, after, PAGE)?;
                rows.reverse();
                rows
            };
            Ok((head, before, rows))
        })
        .await;
    let (head, before, rows) = match read {
        Ok(v) => v,
        Err(e) => return failed(&con, Some(&op), e),
    };
    let chain = match crate::api::audit::check_local(&con.app, 0, false).await {
        Ok(c) => c,
        Err(e) => return failed(&con, Some(&op), e),
    };
    let base_seq = chain.base.as_ref().map(|b| b.seq).unwrap_or(0);
    let base = chain.base.as_ref().map(|b| {
        format!(
            "Records 1..{} were moved out by retention on {}; the chain is proven from the checkpoint {}:{} (keep the export of those records, `outpost audit export`, to prove them).",
            b.seq,
            when(b.compacted_at_ms),
            b.seq,
            b.hash
        )
    });
    let (chain, intact) = match chain.check {
        AuditCheck::Intact { records } if chain.incremental => (
            format!(
                "Hash chain intact through record {records}: {} new records verified on this node just now, after those it had verified before (`outpost audit verify --full` re-reads the whole chain; `outpost audit verify` also compares every node).",
                chain.walked
            ),
            true,
        ),
        AuditCheck::Intact { records } => (
            format!(
                "Hash chain intact: all {} records through record {records} verified on this node just now (`outpost audit verify` also compares every node).",
                chain.walked
            ),
            true,
        ),
        AuditCheck::Broken { seq } => (
            format!(
                "Hash chain BROKEN: record {seq} does not verify on this node. The log was altered on disk."
            ),
            false,
        ),
    };
    let oldest = rows.last().map(|r| r.seq).unwrap_or(1);
    let newest = rows.first().map(|r| r.seq).unwrap_or(0);
    let pager = if actor.is_empty() {
        Pager {
            prev: (before <= head)
                .then(|| format!("/audit?before={}", (before + u64::from(PAGE)).min(head + 1))),
            next: (oldest > base_seq + 1).then(|| format!("/audit?before={oldest}")),
            label: format!("records {oldest}-{newest} of {head}, newest first"),
        }
    } else {
        // The actor's index is read forward: "Previous" starts again from its oldest
        // record, "Next" goes on after this page's newest.
        let base = format!("/audit?actor={}", urlencode(&actor));
        Pager {
            prev: (q.after.is_some() || rows.len() == PAGE as usize)
                .then(|| format!("{base}&after=0")),
            next: (q.after.is_some() && rows.len() == PAGE as usize)
                .then(|| format!("{base}&after={newest}")),
            label: if rows.is_empty() {
                format!("no record of {actor}")
            } else {
                format!("records of {actor} {oldest}-{newest}, newest first")
            },
        }
    };
    render(&Audit {
        c: Chrome::new(&con, &op, "Audit", "audit"),
        chain,
        intact,
        base,
        rows: rows
            .iter()
            .map(|r| AuditRow {
                seq: r.seq,
                when: when(r.at_ms),
                actor: r.actor.clone(),
                action: r.action.clone(),
                target: r.target.clone(),
                detail: clip(&r.detail, 300),
                ok: r.outcome == "ok",
                outcome: r.outcome.clone(),
            })
            .collect(),
        pager,
        actor,
    })
}

/// The live audit log as an export file (`outpost audit export`'s format), downloaded.
pub async fn audit_export(State(con): State<Arc<Console>>, op: Operator) -> Response {
    match crate::api::audit::export_file(&con.app, None, None).await {
        Ok(mut resp) => {
            let name = format!(
                "attachment; filename=\"outpost-audit-{}.jsonl\"",
                outpost_raft::now_ms()
            );
            if let Ok(v) = axum::http::HeaderValue::from_str(&name) {
                resp.headers_mut()
                    .insert(axum::http::header::CONTENT_DISPOSITION, v);
            }
            resp
        }
        Err(e) => failed(&con, Some(&op), e),
    }
}

/// Console sessions (newest 200) with a button to end each open one, and the accounts.
pub async fn sessions(State(con): State<Arc<Console>>, op: Operator) -> Response {
    let read = con
        .app
        .read(|r| Ok((r.console_sessions(200)?, r.console_users()?)))
        .await;
    let (sessions, users) = match read {
        Ok(v) => v,
        Err(e) => return failed(&con, Some(&op), e),
    };
    let now = outpost_raft::now_ms();
    render(&Sessions {
        c: Chrome::new(&con, &op, "Sessions", "sessions"),
        sessions: sessions
            .iter()
            .map(|s| {
                let v = crate::api::console::session_view(s, con.seen_here(&s.id), now);
                SessionRow {
                    state: match (v.active, v.ended_at_ms) {
                        (true, _) => "open".into(),
                        (false, Some(at)) => format!("ended {}", ago(at, now)),
                        (false, None) if now >= v.expires_at_ms => "expired".into(),
                        (false, None) => "idle too long".into(),
                    },
                    mine: s.id == op.session,
                    id: v.id,
                    user: v.user,
                    via: if v.via == "link" {
                        "one-time link".into()
                    } else {
                        "password".into()
                    },
                    started: when(v.started_at_ms),
                    last: ago(v.last_seen_ms, now),
                    ends: when(v.expires_at_ms),
                    active: v.active,
                }
            })
            .collect(),
        users: users
            .iter()
            .map(|u| UserRow {
                name: u.name.clone(),
                updated: ago(u.updated_at_ms, now),
                by: u.updated_by.clone(),
            })
            .collect(),
    })
}

pub fn not_found(con: &Console, what: &str) -> Response {
    message(
        con,
        StatusCode::NOT_FOUND,
        "Not found",
        &format!("There is no {what}."),
    )
}

/// The first 12 hex digits of a hash, enough to tell two apart on a page.
fn short(sha256: &str) -> String {
    sha256.chars().take(12).collect()
}

/// At most `max` characters of `s`, with an ellipsis when cut.
pub fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unseen_filter_takes_a_bounded_duration() {
        let day = std::time::Duration::from_secs(86_400);
        // (query value, result: Ok(duration) or a part of the message)
        let cases: [(&str, Result<Option<std::time::Duration>, &str>); 5] = [
            ("", Ok(None)),
            ("7d", Ok(Some(7 * day))),
            ("1h", Ok(Some(day / 24))),
            ("11000d", Err("longer than ten years")),
            ("soon", Err("not a duration like 7d")),
        ];
        for (text, want) in cases {
            match (unseen_filter(text), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
                (Err(got), Err(part)) => assert!(got.contains(part), "{text}: {got}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }
}
