//! Values read at scrape time (Raft status, certificates, the API port's counters, disk, the
//! site's counts): plain [`ConstFamily`] data that the `/metrics` handler gathers right before
//! encoding and hands to the registry's [`ScrapeCollector`], so that they are encoded by
//! `prometheus-client` beside the families the node updates as it runs.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// Gauge or counter. A counter's name is given without `_total`: the encoder appends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// One sample's value: integers stay integers in the text (tests and scripts parse them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
}

/// Label pairs of one sample: fixed keys, bounded values (never free text).
pub type Labels = Vec<(&'static str, String)>;

/// One family of samples read at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<(Labels, Value)>,
}

impl ConstFamily {
    pub fn gauge(name: &'static str, help: &'static str) -> ConstFamily {
        ConstFamily {
            name,
            help,
            kind: Kind::Gauge,
            samples: Vec::new(),
        }
    }

    /// A counter family; `name` without `_total`.
    pub fn counter(name: &'static str, help: &'static str) -> ConstFamily {
        ConstFamily {
            kind: Kind::Counter,
            ..ConstFamily::gauge(name, help)
        }
    }

    /// Adds an unlabelled integer sample.
    pub fn int(self, v: impl TryInto<i64>) -> ConstFamily {
        self.with(Vec::new(), Value::Int(v.try_into().unwrap_or(i64::MAX)))
    }

    /// Adds a sample with one label.
    pub fn labelled(self, key: &'static str, value: &str, v: impl TryInto<i64>) -> ConstFamily {
        self.with(
            vec![(key, value.to_string())],
            Value::Int(v.try_into().unwrap_or(i64::MAX)),
        )
    }

    pub fn with(mut self, labels: Labels, v: Value) -> ConstFamily {
        self.samples.push((labels, v));
        self
    }
}

/// The registry's collector of the families set for the scrape being encoded.
#[derive(Debug, Default)]
pub struct ScrapeCollector {
    pub(crate) current: Arc<Mutex<Vec<ConstFamily>>>,
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let families = self.current.lock().unwrap_or_else(|p| p.into_inner());
        for f in families.iter() {
            encode_family(&mut encoder, f)?;
        }
        Ok(())
    }
}

fn encode_family(encoder: &mut DescriptorEncoder, f: &ConstFamily) -> Result<(), std::fmt::Error> {
    let kind = match f.kind {
        Kind::Gauge => MetricType::Gauge,
        Kind::Counter => MetricType::Counter,
    };
    let mut metric = encoder.encode_descriptor(f.name, f.help, None, kind)?;
    for (labels, value) in &f.samples {
        let one = |m: &mut prometheus_client::encoding::MetricEncoder| match (f.kind, *value) {
            (Kind::Gauge, Value::Int(v)) => m.encode_gauge(&v),
            (Kind::Gauge, Value::Float(v)) => m.encode_gauge(&v),
            (Kind::Counter, Value::Int(v)) => {
                m.encode_counter::<NoLabelSet, _, u64>(&u64::try_from(v).unwrap_or(0), None)
            }
            (Kind::Counter, Value::Float(v)) => {
                m.encode_counter::<NoLabelSet, _, f64>(&v.max(0.0), None)
            }
        };
        if labels.is_empty() {
            one(&mut metric)?;
        } else {
            one(&mut metric.encode_family(labels)?)?;
        }
    }
    Ok(())
}

/// The OpenMetrics text of `families` alone (unit tests of the counters' owners).
pub fn render(families: Vec<ConstFamily>) -> String {
    let mut reg = prometheus_client::registry::Registry::default();
    let c = ScrapeCollector::default();
    *c.current.lock().unwrap_or_else(|p| p.into_inner()) = families;
    reg.register_collector(Box::new(c));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_as_openmetrics() {
        let out = render(vec![
            ConstFamily::gauge("outpost_raft_term", "Current Raft term.").int(7),
            ConstFamily::counter("outpost_peer_refused", "Refused.")
                .labelled("reason", "idle", 3)
                .labelled("reason", "frame", 0),
            ConstFamily::gauge("outpost_clock_offset_seconds", "Offset.")
                .with(Vec::new(), Value::Float(-0.25)),
            ConstFamily::counter("outpost_refused_requests", "None yet."),
        ]);
        for want in [
            "# TYPE outpost_raft_term gauge\n",
            "outpost_raft_term 7\n",
            "# TYPE outpost_peer_refused counter\n",
            "outpost_peer_refused_total{reason=\"idle\"} 3\n",
            "outpost_peer_refused_total{reason=\"frame\"} 0\n",
            "outpost_clock_offset_seconds -0.25\n",
            "# TYPE outpost_refused_requests counter\n",
        ] {
            assert!(out.contains(want), "{want:?} not in\n{out}");
        }
        assert!(out.ends_with("# EOF\n"), "{out}");
    }
}
