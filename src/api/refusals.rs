//! Refused unauthenticated requests (enroll, join): counted by route and reason for
//! `/metrics`, and logged at most once per source address per minute, so that a flood can
//! neither fill the log nor hide in it.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::response::{IntoResponse, Response};

use crate::api::ApiError;
use crate::metrics::{ConstFamily, Value};

/// One log line per source address per this long.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Sources remembered for the log limit; past this the oldest are forgotten.
const MAX_SOURCES: usize = 4096;

#[derive(Default)]
pub struct Refusals {
    counts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Per source: when it was last logged and how many refusals since.
    logged: Mutex<HashMap<IpAddr, (Instant, u64)>>,
}

impl Refusals {
    /// Counts a refusal of `route` for `reason`, logs it if this source was not logged in the
    /// last minute, and turns the error into the response.
    pub fn refuse(
        &self,
        route: &'static str,
        reason: &'static str,
        source: Option<IpAddr>,
        error: ApiError,
    ) -> Response {
        let ip = source;
        if self.count(route, reason, ip) {
            tracing::warn!(
                route,
                reason,
                source = ip.map(|i| i.to_string()).unwrap_or_else(|| "local".into()),
                "refused an unauthenticated request (further refusals from this source are counted in /metrics, logged once a minute)"
            );
        }
        error.into_response()
    }

    /// Counts a refusal of `route` for `reason` (for `/metrics`) and says whether the caller
    /// should log it: true at most once a minute per source.
    pub fn count(&self, route: &'static str, reason: &'static str, source: Option<IpAddr>) -> bool {
        if let Ok(mut c) = self.counts.lock() {
            *c.entry((route, reason)).or_default() += 1;
        }
        self.should_log(source, Instant::now())
    }

    fn should_log(&self, ip: Option<IpAddr>, now: Instant) -> bool {
        let Some(ip) = ip else { return true };
        let Ok(mut logged) = self.logged.lock() else {
            return false;
        };
        if logged.len() >= MAX_SOURCES && !logged.contains_key(&ip) {
            logged.retain(|_, (at, _)| now.duration_since(*at) < LOG_EVERY);
            if logged.len() >= MAX_SOURCES {
                return false;
            }
        }
        let entry = logged.entry(ip).or_insert((now, 0));
        entry.1 += 1;
        if entry.1 == 1 || now.duration_since(entry.0) >= LOG_EVERY {
            *entry = (now, 1);
            return true;
        }
        false
    }

    /// `outpost_refused_requests_total{route,reason}` for `/metrics`.
    pub fn families(&self) -> Vec<ConstFamily> {
        let mut f = ConstFamily::counter(
            "outpost_refused_requests",
            "Unauthenticated requests refused before anything was written, by route and reason.",
        );
        if let Ok(c) = self.counts.lock() {
            for ((route, reason), n) in c.iter() {
                f = f.with(
                    vec![("route", route.to_string()), ("reason", reason.to_string())],
                    Value::Int(i64::try_from(*n).unwrap_or(i64::MAX)),
                );
            }
        }
        vec![f]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_once_per_source_per_minute() {
        let r = Refusals::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        assert!(r.should_log(Some(a), t0));
        assert!(!r.should_log(Some(a), t0 + Duration::from_secs(1)));
        assert!(r.should_log(Some(b), t0 + Duration::from_secs(1)));
        assert!(!r.should_log(Some(a), t0 + Duration::from_secs(59)));
        assert!(r.should_log(Some(a), t0 + Duration::from_secs(61)));
    }

    #[test]
    fn counts_render_as_metrics() {
        let r = Refusals::default();
        let e = || ApiError::new(axum::http::StatusCode::FORBIDDEN, "no");
        r.refuse("enroll", "token_unknown", None, e());
        r.refuse("enroll", "token_unknown", None, e());
        r.refuse("join", "malformed", None, e());
        let out = crate::metrics::scrape::render(r.families());
        assert!(
            out.contains(
                "outpost_refused_requests_total{route=\"enroll\",reason=\"token_unknown\"} 2"
            ),
            "{out}"
        );
        assert!(
            out.contains("outpost_refused_requests_total{route=\"join\",reason=\"malformed\"} 1"),
            "{out}"
        );
    }
}
