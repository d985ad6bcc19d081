//! What a node measures and shows on `/metrics` (OpenMetrics text through `prometheus-client`):
//! one [`Metrics`] registry built at start and held by the API. Beside it:
//! `scrape` (values read right before encoding: Raft status, certificates, port counters, the
//! site's counts), `http` (the middleware that counts requests by route and status), `own`
//! (this node's disk, growth, last backup, binary hash: its `wire::NodeHealth`), `clock` (the
//! `ClockMs` and `Health` peer asks, the offset to the leader), `site` (the site's counts,
//! read at most every 10 s) and `diskguard` (the free-space floor below which a node refuses
//! operator writes, read every 2 s).

pub mod clock;
pub mod diskguard;
pub mod http;
pub mod own;
pub mod scrape;
pub mod site;

pub use clock::{clock_offset_ms, member_health};
pub use diskguard::DiskGuard;
pub use own::{NodeSelf, OwnFacts};
pub use scrape::{ConstFamily, Kind, Value};

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The environment variable that turns collection off (`OUTPOST_METRICS=off`).
pub const ENV: &str = "OUTPOST_METRICS";

/// Whether the environment asks for collection (anything but `off`, `0`, `false`).
pub fn enabled_by_env() -> bool {
    enabled_from(std::env::var(ENV).ok().as_deref())
}

fn enabled_from(v: Option<&str>) -> bool {
    !matches!(
        v.map(|s| s.trim().to_ascii_lowercase()).as_deref(),
        Some("off" | "0" | "false" | "no")
    )
}

type LabelFamily<M> = Family<scrape::Labels, M, fn() -> M>;

fn seconds_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The node's registry and the families it updates as it runs.
pub struct Metrics {
    enabled: bool,
    registry: Registry,
    scrape: Mutex<()>,
    current: std::sync::Arc<Mutex<Vec<ConstFamily>>>,
    http_requests: LabelFamily<Counter>,
    http_duration: LabelFamily<Histogram>,
    agent_syncs: LabelFamily<Counter>,
    agent_sync_duration: Histogram,
    bundle_imports: Counter,
    bundle_bytes: Counter,
    clock_measured: AtomicBool,
    clock_offset_ms: AtomicI64,
}

impl Metrics {
    /// The registry with every family this room owns. `enabled` false: the request and sync
    /// histograms are not observed (counters still count; `/metrics` still answers).
    /// `extra` registers families owned elsewhere (the Raft layer's telemetry).
    pub fn new(enabled: bool, extra: impl FnOnce(&mut Registry)) -> Metrics {
        let mut registry = Registry::default();
        let http_requests = LabelFamily::<Counter>::new_with_constructor(Counter::default);
        registry.register(
            "outpost_http_requests",
            "API requests answered, by matched route and status code.",
            http_requests.clone(),
        );
        let http_duration = LabelFamily::<Histogram>::new_with_constructor(seconds_histogram);
        registry.register(
            "outpost_http_request_duration_seconds",
            "Time to answer an API request, by matched route.",
            http_duration.clone(),
        );
        let agent_syncs = LabelFamily::<Counter>::new_with_constructor(Counter::default);
        registry.register(
            "outpost_agent_syncs",
            "Agent syncs (/v1/agent/sync) answered by this node, by result.",
            agent_syncs.clone(),
        );
        let agent_sync_duration = seconds_histogram();
        registry.register(
            "outpost_agent_sync_duration_seconds",
            "Server time of one agent sync (/v1/agent/sync).",
            agent_sync_duration.clone(),
        );
        let bundle_imports = Counter::default();
        registry.register(
            "outpost_bundle_imports",
            "Bundles imported through this node.",
            bundle_imports.clone(),
        );
        let bundle_bytes = Counter::default();
        registry.register(
            "outpost_bundle_imported_bytes",
            "Payload bytes of the bundles imported through this node.",
            bundle_bytes.clone(),
        );
        extra(&mut registry);
        let collector = scrape::ScrapeCollector::default();
        let current = collector.current.clone();
        registry.register_collector(Box::new(collector));
        Metrics {
            enabled,
            registry,
            scrape: Mutex::new(()),
            current,
            http_requests,
            http_duration,
            agent_syncs,
            agent_sync_duration,
            bundle_imports,
            bundle_bytes,
            clock_measured: AtomicBool::new(false),
            clock_offset_ms: AtomicI64::new(0),
        }
    }

    /// Whether histograms are observed.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// One answered API request.
    pub fn observe_request(&self, route: &str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("status", status.to_string()),
            ])
            .inc();
        if self.enabled {
            self.http_duration
                .get_or_create(&vec![("route", route.to_string())])
                .observe(seconds);
        }
    }

    /// One agent sync answered (`ok` false: an error answer).
    pub fn observe_sync(&self, ok: bool, seconds: f64) {
        let result = if ok { "ok" } else { "error" };
        self.agent_syncs
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
        if self.enabled {
            self.agent_sync_duration.observe(seconds);
        }
    }

    /// One bundle imported through this node, `bytes` of payload.
    pub fn count_import(&self, bytes: u64) {
        self.bundle_imports.inc();
        self.bundle_bytes.inc_by(bytes);
    }

    /// This node's clock minus the leader's (ms), from the last reading.
    pub fn set_clock_offset_ms(&self, ms: i64) {
        self.clock_offset_ms.store(ms, Ordering::Relaxed);
        self.clock_measured.store(true, Ordering::Relaxed);
    }

    /// The last clock reading (None until measured).
    pub fn clock_offset(&self) -> Option<i64> {
        self.clock_measured
            .load(Ordering::Relaxed)
            .then(|| self.clock_offset_ms.load(Ordering::Relaxed))
    }

    /// The OpenMetrics text: every registered family, then `scraped` (values read right
    /// before), then `# EOF`.
    pub fn encode(&self, scraped: Vec<ConstFamily>) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = scraped;
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        out
    }
}

/// `/metrics`' content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_turns_collection_off() {
        for (v, want) in [
            (None, true),
            (Some("on"), true),
            (Some(""), true),
            (Some("off"), false),
            (Some(" OFF "), false),
            (Some("0"), false),
            (Some("false"), false),
        ] {
            assert_eq!(enabled_from(v), want, "{v:?}");
        }
    }

    #[test]
    fn disabled_metrics_count_but_do_not_time() {
        for enabled in [true, false] {
            let m = Metrics::new(enabled, |_| {});
            m.observe_request("/v1/status", 200, 0.01);
            m.observe_sync(true, 0.02);
            m.count_import(1234);
            let out = m.encode(vec![
                ConstFamily::gauge("outpost_node_ready", "Ready.").int(1),
            ]);
            for want in [
                "outpost_http_requests_total{route=\"/v1/status\",status=\"200\"} 1\n",
                "outpost_agent_syncs_total{result=\"ok\"} 1\n",
                "outpost_bundle_imports_total 1\n",
                "outpost_bundle_imported_bytes_total 1234\n",
                "outpost_node_ready 1\n",
            ] {
                assert!(out.contains(want), "{want:?} not in\n{out}");
            }
            let timed = out.contains("outpost_agent_sync_duration_seconds_count 1\n")
                && out.contains(
                    "outpost_http_request_duration_seconds_count{route=\"/v1/status\"} 1\n",
                );
            assert_eq!(timed, enabled, "{out}");
            assert!(out.ends_with("# EOF\n"));
            // Scrape-time values are gone after the scrape.
            assert!(!m.encode(Vec::new()).contains("outpost_node_ready"));
        }
    }
}
