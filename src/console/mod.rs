//! The web console: the whole site at a glance, served by every node on its API port at `/`.
//!
//! Pages are rendered on the server from askama templates (`src/console/templates`, checked
//! when the binary is compiled, HTML-escaped by default); the stylesheet and a few lines of
//! script (live refresh of the overview) are embedded in the binary (`assets`). Every answer
//! carries a strict Content-Security-Policy: nothing loads from anywhere but the node itself,
//! no inline script or style, no framing.
//!
//! Reads come from the local node's state (`AppState::read`); actions are Raft commands like
//! any other (`AppState::commit`), audited as `console:NAME`. Without a session the console
//! shows only the sign-in page: the routes open without one are the sign-in page and form, the
//! one-time login link and the static assets (`session`). Here: the shared state, the router
//! and the headers every answer gets. Beside it: `session` (cookies, CSRF, sign-in), `overview`
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
mod rollout_form;
mod session;
mod throttle;
mod views;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};

use crate::api::AppState;

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

/// The console's routes, to be merged with the API's (`crate::node` does).
pub fn router(con: Arc<Console>) -> Router {
    use axum::extract::DefaultBodyLimit;
    Router::new()
        .route("/", get(overview::overview))
        .route("/login", get(session::signin_page).post(session::signin))
        .route("/login/link/{token}", get(session::link))
        .route("/logout", post(session::signout))
        .route("/static/{file}", get(assets::asset))
        .route("/clients", get(pages::clients))
        .route("/clients/{id}", get(pages::client))
        .route(
            "/clients/{id}/revoke",
            get(pages::revoke_confirm).post(actions::revoke),
        )
        .route("/inventory", get(pages::inventory))
        .route("/config", get(pages::config))
        .route("/config/set", post(actions::config_set))
        .route("/config/delete", post(actions::config_delete))
        .route("/bundles", get(pages::bundles))
        .route("/clients/{id}/labels", post(actions::labels))
        .route(
            "/deployments",
            get(deployments::deployments).post(actions::deployment_form),
        )
        .route("/deployments/{id}", get(deployments::deployment))
        .route("/deployments/{id}/approve", post(actions::approve))
        .route("/deployments/{id}/pause", post(actions::pause))
        .route("/deployments/{id}/resume", post(actions::resume))
        .route(
            "/deployments/{id}/abort",
            get(deployments::abort_confirm).post(actions::abort),
        )
        .route("/audit", get(pages::audit))
        .route("/audit/export", get(pages::audit_export))
        .route("/sessions", get(pages::sessions))
        .route("/sessions/{id}/end", post(actions::end_session))
        .layer(DefaultBodyLimit::max(crate::api::BODY_LIMIT))
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
