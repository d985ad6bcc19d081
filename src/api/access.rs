//! Who may call which route: every route of the API (and of the console, which uses the same
//! builder) is added with its rule, so a route cannot exist without one, and the rules can be
//! listed (`api::route_rules`, `console::route_rules`) for the test that calls every route as
//! every role. The API's middleware checks a person's rule before the handler reads a byte of
//! the body; the handlers of routes that touch clients also filter or refuse by scope.
//!
//! A person's grant is read on every request from the replicated state, after this node has
//! caught up with the leader (`Freshness`): a role changed through any node is in force here
//! on the next request, without a new certificate.

use std::sync::Mutex;
use std::time::Duration;

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};
use outpost_storage::PersonRole;

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone, with or without a certificate (health, join, enrollment, the sign-in form).
    Open,
    /// An enrolled client's own routes; a person is refused.
    Agent,
    /// A person with at least this role. The local socket is an admin; a node's certificate
    /// gets what the handler allows it (`Caller::require_member`).
    Person(PersonRole),
}

impl Need {
    pub const READ: Need = Need::Person(PersonRole::Viewer);
    pub const OPERATE: Need = Need::Person(PersonRole::Operator);
    pub const ADMIN: Need = Need::Person(PersonRole::Admin);
}

/// One route's rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    pub method: Method,
    /// The route's path as the router holds it (`/v1/clients/{id}`).
    pub path: &'static str,
    pub need: Need,
}

/// A router under construction and the rules of its routes, added together.
pub struct Routes<S> {
    router: Router<S>,
    rules: Vec<RouteRule>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Routes {
            router: Router::new(),
            rules: Vec::new(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// Adds `handler` for `method` on `path` under `need`. Adding the same method and path
    /// twice panics (axum refuses overlapping method routes), at startup.
    pub fn add<H, T>(self, method: Method, path: &'static str, need: Need, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let filter = filter_of(&method);
        self.add_route(method, path, need, on(filter, handler))
    }

    /// `add` with a body cap of `limit` bytes for this route alone.
    pub fn add_capped<H, T>(
        self,
        method: Method,
        path: &'static str,
        need: Need,
        limit: usize,
        handler: H,
    ) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let filter = filter_of(&method);
        self.add_route(
            method,
            path,
            need,
            on(filter, handler).layer(axum::extract::DefaultBodyLimit::max(limit)),
        )
    }

    fn add_route(
        mut self,
        method: Method,
        path: &'static str,
        need: Need,
        route: MethodRouter<S>,
    ) -> Self {
        self.rules.push(RouteRule { method, path, need });
        self.router = self.router.route(path, route);
        self
    }

    pub fn into_parts(self) -> (Router<S>, Vec<RouteRule>) {
        (self.router, self.rules)
    }
}

fn filter_of(method: &Method) -> MethodFilter {
    match *method {
        Method::GET => MethodFilter::GET,
        Method::POST => MethodFilter::POST,
        Method::PUT => MethodFilter::PUT,
        Method::DELETE => MethodFilter::DELETE,
        Method::PATCH => MethodFilter::PATCH,
        // Routes are added in this file's callers with the four methods above: a new one is a
        // programming error found at startup by every test.
        _ => panic!("no route filter for method {method}"),
    }
}

/// The rule of `method` on the matched `path`, if a route has one.
pub fn rule_of<'a>(rules: &'a [RouteRule], method: &Method, path: &str) -> Option<&'a RouteRule> {
    rules.iter().find(|r| r.method == *method && r.path == path)
}

/// Waits until this node has applied everything the leader had committed when the wait
/// began, so that a grant read afterwards is at least as new as any change a person could
/// have seen committed before sending this request. Single-flight: a request that arrives
/// while a barrier runs waits for the next one (the running one may have begun before the
/// change it must see), and at most one barrier runs at a time whatever the request rate, so
/// a flood of requests costs the leader one read index per round trip, not one per request.
/// A barrier that fails (no leader, a partition) lets requests go on with this node's state.
#[derive(Default)]
pub struct Freshness {
    state: Mutex<Gen>,
    done: tokio::sync::Notify,
}

#[derive(Default)]
struct Gen {
    /// The newest barrier generation begun.
    started: u64,
    /// The newest generation finished.
    finished: u64,
    running: bool,
}

impl Freshness {
    /// Runs or joins a barrier begun after this call, bounded by `timeout` in all.
    pub async fn ensure<F, Fut>(&self, timeout: Duration, barrier: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let want = self.lock().started + 1;
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let run = {
                let mut g = self.lock();
                if g.finished >= want {
                    return;
                }
                if !g.running && g.started < want {
                    g.started = want;
                    g.running = true;
                    true
                } else {
                    false
                }
            };
            if run {
                let _ = tokio::time::timeout_at(deadline, barrier()).await;
                let mut g = self.lock();
                g.running = false;
                g.finished = g.finished.max(want);
                drop(g);
                self.done.notify_waiters();
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Gen> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn many_requests_share_few_barriers() {
        let f = Arc::new(Freshness::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (f, runs) = (f.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                f.ensure(Duration::from_secs(5), || {
                    let runs = runs.clone();
                    async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
                .await;
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let n = runs.load(Ordering::SeqCst);
        // The first request's barrier, then one for all that arrived while it ran.
        assert!((1..=3).contains(&n), "{n} barriers for 50 requests");
        // A request after they all finished runs a new one.
        f.ensure(Duration::from_secs(5), || {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
            }
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), n + 1);
    }

    #[tokio::test]
    async fn a_stuck_barrier_ends_at_the_deadline() {
        let f = Freshness::default();
        let t = std::time::Instant::now();
        f.ensure(Duration::from_millis(100), std::future::pending::<()>)
            .await;
        assert!(t.elapsed() < Duration::from_secs(5));
        // The next request is not blocked by the one that timed out.
        f.ensure(Duration::from_millis(100), || async {}).await;
    }
}
