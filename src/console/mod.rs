//! The web console: the whole site at a glance, served by every node on its API port at `/`.
//!
//! Pages are rendered on the server from askama templates (`src/console/templates`, checked
//! when the binary is compiled, HTML-escaped by default); the stylesheet and a few lines of
//! script (live refresh of the overview) are embedded in the binary (`assets`). Every answer
//! carries a strict Content-Security-Policy: nothing loads from anywhere but the node itself,
//! no inline script or style, no framing.
//!
//! Reads come from the local node's state (`AppState::read`); actions are Raft commands like
//! any other (`AppState::commit`), audited as `console:NAME as ROLE`. Without a session the
//! console shows only the sign-in page: the routes open without one are the sign-in page and
//! form, the one-time login link and the static assets (`session`). Every other route has a
//! role's rule (`routes`), checked before its handler reads the form; pages render only the
//! forms the role allows, and a scope filters the clients shown and refuses changes to
//! others (`scope`). Here: the shared state, the router and the headers every answer gets.
//! Beside it: `session` (cookies, CSRF, sign-in, the rule's check), `people` (roles), `overview`
//! and `pages` (what each page reads), `deployments` (the deployments' pages: list, new form
//! and its preview, one deployment, the abort's confirmation), `rollout_form` (the new
//! deployment form as API requests, pure), `alarms` (the overview's alarm rules, pure),
//! `actions` (what each button commits), `views` (the templates' values), `assets`.

mod actions;
mod alarms;
mod assets;
mod checkers;
mod deployments;
mod overview;
mod pages;
mod people;
mod rollout_form;
mod scope;
mod session;
mod throttle;
mod views;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;

use crate::api::AppState;
use crate::api::access::{Need, RouteRule, Routes};

pub use session::Operator;

/// Rows per page of every long list.
pub const PAGE: u32 = crate::wire::CONSOLE_PAGE;
/// How often a node reports the sessions used on it (their idle clocks) as one command.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// What the console's handlers share: the node's API state, the sessions used on this node
/// (last use, and whether it is reported yet) and the sign-in form's budget (`throttle`).
pub struct Console {
    pub app: Arc<AppState>,
    seen: Mutex<HashMap<String, (i64, bool)>>,
    /// Sign-ins per source (`outpost_storage::signin_source_key`: an IPv4 address, an IPv6 /64).
    signin: governor::DefaultKeyedRateLimiter<String>,
    /// Password checks running or waiting on this node (`try_acquire`: none free is 429).
    argon2: Arc<tokio::sync::Semaphore>,
    /// The threads that run them.
    checkers: checkers::Checkers,
    /// Wrong passwords per account and per source on this node, until they lock it.
    failures: Mutex<throttle::Failures>,
    /// Locks this node may still propose this minute.
    lock_proposals: governor::DefaultDirectRateLimiter,
    /// Once a minute: the line saying this node's locks for the minute are spent.
    spent_logged: governor::DefaultDirectRateLimiter,
    lock_base_ms: i64,
}

impl Console {
    pub fn new(app: Arc<AppState>) -> Arc<Console> {
        // Ten password or link sign-ins a minute per source address (burst ten): an operator
        // never needs more, a guesser gets six hundred an hour.
        let quota = governor::Quota::per_minute(std::num::NonZeroU32::MIN.saturating_add(9));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let locks = std::num::NonZeroU32::new(throttle::LOCKS_PER_MINUTE)
            .unwrap_or(std::num::NonZeroU32::MIN);
        Arc::new(Console {
            app,
            seen: Mutex::new(HashMap::new()),
            signin: governor::RateLimiter::keyed(quota),
            argon2: Arc::new(tokio::sync::Semaphore::new(throttle::argon2_permits(cores))),
            checkers: checkers::Checkers::start(throttle::argon2_permits(cores)),
            failures: Mutex::new(throttle::Failures::default()),
            lock_proposals: governor::RateLimiter::direct(governor::Quota::per_minute(locks)),
            spent_logged: governor::RateLimiter::direct(governor::Quota::per_minute(
                std::num::NonZeroU32::MIN,
            )),
            lock_base_ms: throttle::lock_base_ms(
                std::env::var("OUTPOST_SIGNIN_LOCK_MS").ok().as_deref(),
            ),
        })
    }

    /// This node's last sight of session `id`, if any.
    fn seen_here(&self, id: &str) -> Option<i64> {
        self.seen.lock().ok()?.get(id).map(|(at, _)| *at)
    }

    fn note_seen(&self, id: &str, at: i64) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(id.to_owned(), (at, true));
        }
    }

    /// Commits `command` as `caller`, then lets this node catch up (`catch_up`) so that the
    /// page the action redirects to, read from this node's state, shows what it did.
    async fn commit(
        &self,
        caller: &crate::api::Caller,
        command: outpost_storage::Command,
    ) -> Result<outpost_storage::Response, crate::api::ApiError> {
        let done = self.app.commit(caller, command).await?;
        self.catch_up().await;
        Ok(done)
    }

    /// Waits (at most 5 s) until this node has applied what the leader had committed: a write
    /// through a follower is answered once the leader has applied it, which may be before
    /// this node has. A node that cannot catch up serves its page as it is, and says so.
    async fn catch_up(&self) {
        if let Err(e) = self
            .app
            .node
            .linearizable_barrier(Duration::from_secs(5))
            .await
        {
            tracing::warn!(error = %e, "console: this node's state may lag the change just made");
        }
    }
}

/// Every route of the console with its rule (`api::access::Need`): pages and downloads are
/// read by any role, the forms of a change need the role of the change (their confirmation
/// pages too: they are the first step of it), signing in and out and the static files are
/// open. The router is built from this list, so a route without a rule cannot exist.
fn routes() -> Routes<Arc<Console>> {
    use axum::http::Method;
    let (get, post) = (Method::GET, Method::POST);
    Routes::default()
        .add(get.clone(), "/", Need::READ, overview::overview)
        .add(get.clone(), "/login", Need::Open, session::signin_page)
        .add(post.clone(), "/login", Need::Open, session::signin)
        .add(
            get.clone(),
            "/login/link/{token}",
            Need::Open,
            session::link,
        )
        .add(post.clone(), "/logout", Need::Open, session::signout)
        .add(get.clone(), "/static/{file}", Need::Open, assets::asset)
        .add(get.clone(), "/clients", Need::READ, pages::clients)
        .add(get.clone(), "/clients/{id}", Need::READ, pages::client)
        .add(
            get.clone(),
            "/clients/{id}/revoke",
            Need::ADMIN,
            pages::revoke_confirm,
        )
        .add(
            post.clone(),
            "/clients/{id}/revoke",
            Need::ADMIN,
            actions::revoke,
        )
        .add(get.clone(), "/inventory", Need::READ, pages::inventory)
        .add(get.clone(), "/config", Need::READ, pages::config)
        .add(
            post.clone(),
            "/config/set",
            Need::OPERATE,
            actions::config_set,
        )
        .add(
            post.clone(),
            "/config/delete",
            Need::OPERATE,
            actions::config_delete,
        )
        .add(get.clone(), "/bundles", Need::READ, pages::bundles)
        .add(
            post.clone(),
            "/clients/{id}/labels",
            Need::OPERATE,
            actions::labels,
        )
        .add(
            get.clone(),
            "/deployments",
            Need::READ,
            deployments::deployments,
        )
        .add(
            post.clone(),
            "/deployments",
            Need::OPERATE,
            actions::deployment_form,
        )
        .add(
            get.clone(),
            "/deployments/{id}",
            Need::READ,
            deployments::deployment,
        )
        .add(
            post.clone(),
            "/deployments/{id}/approve",
            Need::OPERATE,
            actions::approve,
        )
        .add(
            post.clone(),
            "/deployments/{id}/pause",
            Need::OPERATE,
            actions::pause,
        )
        .add(
            post.clone(),
            "/deployments/{id}/resume",
            Need::OPERATE,
            actions::resume,
        )
        .add(
            get.clone(),
            "/deployments/{id}/abort",
            Need::OPERATE,
            deployments::abort_confirm,
        )
        .add(
            post.clone(),
            "/deployments/{id}/abort",
            Need::OPERATE,
            actions::abort,
        )
        .add(get.clone(), "/audit", Need::READ, pages::audit)
        .add(
            get.clone(),
            "/audit/export",
            Need::READ,
            pages::audit_export,
        )
        .add(get.clone(), "/sessions", Need::READ, pages::sessions)
        .add(
            post.clone(),
            "/sessions/{id}/end",
            Need::ADMIN,
            actions::end_session,
        )
        .add(get, "/people", Need::READ, people::people)
        .add(post, "/people/set", Need::ADMIN, people::set)
}

/// The rule of every console route, as the router holds them.
pub fn route_rules() -> Vec<RouteRule> {
    routes().into_parts().1
}

/// The console's routes, to be merged with the API's (`crate::node` does).
pub fn router(con: Arc<Console>) -> Router {
    use axum::extract::DefaultBodyLimit;
    let (router, rules) = routes().into_parts();
    router
        .layer(DefaultBodyLimit::max(crate::api::BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            (con.clone(), Arc::new(rules)),
            session::enforce_rule,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::middleware::map_request(host_from_authority))
        .with_state(con)
}

/// What the browser may do with a console answer: load nothing from elsewhere, run no inline
/// script or style, never frame it, send a referrer only to itself, sniff no type, cache no page.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// HTTP/2 names the host in the request's authority, not in a `Host` header: the origin
/// checks read `Host`, so it is filled in from the authority when missing.
async fn host_from_authority(mut req: axum::extract::Request) -> axum::extract::Request {
    if !req.headers().contains_key(header::HOST)
        && let Some(v) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(header::HOST, v);
    }
    req
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        // Not `no-referrer`: under it a browser sends `Origin: null` with a form's POST.
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

/// Every minute, reports the sessions used on this node since the last report as one
/// command (their idle clocks, on every node), and forgets those idle for longer than a
/// session may be.
pub async fn report_sessions(con: Arc<Console>) {
    let mut tick = tokio::time::interval(TOUCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Sources whose sign-in budget is full again take no memory.
        con.signin.retain_recent();
        con.signin.shrink_to_fit();
        let now = outpost_raft::now_ms();
        let batch: Vec<(String, i64)> = match con.seen.lock() {
            Ok(mut seen) => {
                seen.retain(|_, (at, _)| now - *at < crate::api::console::SESSION_IDLE_MS);
                seen.iter_mut()
                    .filter(|(_, (_, dirty))| *dirty)
                    .map(|(id, (at, dirty))| {
                        *dirty = false;
                        (id.clone(), *at)
                    })
                    .collect()
            }
            Err(_) => continue,
        };
        if batch.is_empty() {
            continue;
        }
        let app = &con.app;
        let touch = outpost_storage::Command::TouchConsoleSessions {
            node_id: app.node_id,
            seen: batch,
        };
        let cmd = crate::api::clients::liveness(app, touch).await;
        if let Err(e) = app
            .commit(&crate::api::Caller::Node(app.node_id), cmd)
            .await
        {
            tracing::debug!(error = ?e, "console session report failed; the next use reports again");
        }
    }
}

/// A time (ms since the epoch) as a person reads it: RFC 3339 UTC to the second.
fn when(ms: i64) -> String {
    crate::shared::text::format_ms(ms)
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// How long ago `ms` was, roughly ("3 min ago", "2 h ago", "in 5 d").
fn ago(ms: i64, now: i64) -> String {
    let d = (now - ms) / 1000;
    let (n, future) = if d < 0 { (-d, true) } else { (d, false) };
    let span = match n {
        0..=59 => format!("{n} s"),
        60..=3599 => format!("{} min", n / 60),
        3600..=172_799 => format!("{} h", n / 3600),
        _ => format!("{} d", n / 86_400),
    };
    if future {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_a_rule_and_every_change_needs_more_than_reading() {
        use axum::http::Method;
        use outpost_storage::PersonRole;
        let rules = route_rules();
        let open = ["/login", "/login/link/{token}", "/logout", "/static/{file}"];
        for (i, r) in rules.iter().enumerate() {
            assert!(
                !rules[..i]
                    .iter()
                    .any(|o| o.method == r.method && o.path == r.path),
                "{r:?} twice"
            );
            match r.need {
                Need::Open => assert!(open.contains(&r.path), "{r:?} is open"),
                Need::Agent => panic!("{r:?}: no agent route in the console"),
                Need::Person(role) if r.method == Method::POST => {
                    assert!(role >= PersonRole::Operator, "{r:?} changes as a viewer")
                }
                Need::Person(_) => assert_eq!(r.method, Method::GET, "{r:?}"),
            }
        }
        for admin in ["/clients/{id}/revoke", "/sessions/{id}/end", "/people/set"] {
            let r = rules
                .iter()
                .find(|r| r.method == Method::POST && r.path == admin)
                .expect("route");
            assert_eq!(r.need, Need::ADMIN, "{admin}");
        }
        assert_eq!(
            access_of(&rules, Method::GET, "/people"),
            Some(Need::READ),
            "everyone sees who may do what"
        );
    }

    fn access_of(rules: &[RouteRule], method: axum::http::Method, path: &str) -> Option<Need> {
        crate::api::access::rule_of(rules, &method, path).map(|r| r.need)
    }

    #[test]
    fn relative_times() {
        let now = 10_000_000_000;
        for (ms, want) in [
            (now, "0 s ago"),
            (now - 59_000, "59 s ago"),
            (now - 61_000, "1 min ago"),
            (now - 7_200_000, "2 h ago"),
            (now - 3 * 86_400_000, "3 d ago"),
            (now + 5 * 86_400_000, "in 5 d"),
        ] {
            assert_eq!(ago(ms, now), want);
        }
        assert_eq!(when(0), "1970-01-01 00:00:00 UTC");
    }
}
