//! The middleware that counts every answered request by route (the matched path template,
//! never the path itself: ids stay out of labels) and status, times it, and counts and times
//! agent syncs (`/v1/agent/sync`).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::metrics::Metrics;

/// The route of agent syncs.
pub const SYNC_ROUTE: &str = "/v1/agent/sync";
/// Longest route label; a longer template (none is) counts as `unmatched`.
const MAX_ROUTE: usize = 128;

/// The `route` label of a request: its matched path template, or `unmatched`.
pub fn route_label(matched: Option<&str>) -> &str {
    match matched {
        Some(p) if !p.is_empty() && p.len() <= MAX_ROUTE => p,
        _ => "unmatched",
    }
}

/// Counts and times each request (layered over the API and console routers).
pub async fn track(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = route_label(req.extensions().get::<MatchedPath>().map(|p| p.as_str())).to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let seconds = started.elapsed().as_secs_f64();
    let status = resp.status();
    m.observe_request(&route, status.as_u16(), seconds);
    if route == SYNC_ROUTE {
        m.observe_sync(status.is_success(), seconds);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_labels_are_templates_or_unmatched() {
        let long = format!("/{}", "a".repeat(200));
        for (matched, want) in [
            (Some("/v1/clients/{id}"), "/v1/clients/{id}"),
            (Some("/metrics"), "/metrics"),
            (None, "unmatched"),
            (Some(""), "unmatched"),
            (Some(long.as_str()), "unmatched"),
        ] {
            assert_eq!(route_label(matched), want, "{matched:?}");
        }
    }

    /// Through a real router: the label is the template, the status the answer's.
    #[tokio::test]
    async fn a_router_counts_by_template_and_status() {
        use axum::routing::get;
        use tower::ServiceExt;
        let m = Arc::new(Metrics::new(true, |_| {}));
        let app = axum::Router::new()
            .route("/v1/clients/{id}", get(|| async { "hi" }))
            .layer(axum::middleware::from_fn_with_state(m.clone(), track));
        for uri in ["/v1/clients/abc", "/v1/clients/def", "/nowhere"] {
            let req = axum::http::Request::builder()
                .uri(uri)
                .body(axum::body::Body::empty())
                .expect("request");
            app.clone().oneshot(req).await.expect("answer");
        }
        let out = m.encode(Vec::new());
        for want in [
            "outpost_http_requests_total{route=\"/v1/clients/{id}\",status=\"200\"} 2\n",
            "outpost_http_requests_total{route=\"unmatched\",status=\"404\"} 1\n",
        ] {
            assert!(out.contains(want), "{want:?} not in\n{out}");
        }
        assert!(!out.contains("abc"), "{out}");
    }
}
