//! The compressed calendar of `bench years`: one simulated year lasts
//! `year_secs` real seconds, and every rate and policy of the simulated site is scaled by
//! the same factor. Pure: no clock is read here, callers pass elapsed real seconds.

use std::time::Duration;

/// Seconds in one simulated year (365.25 days).
pub const YEAR: f64 = 365.25 * 86_400.0;
const DAY: f64 = 86_400.0;

/// The site's rates per simulated year (what the output header states).
/// Inventory changes per client a year: about twice a simulated month (package updates).
pub const INVENTORY_PER_CLIENT: u64 = 24;
/// Rollouts to every client a year: one a simulated month.
pub const ROLLOUTS: u64 = 12;
/// Configuration changes a year: one a simulated day.
pub const CONFIG_CHANGES: u64 = 365;
/// The backup schedule of the simulated site: every 6 h, the newest 14 kept.
pub const BACKUP_EVERY: f64 = 6.0 * 3_600.0;
pub const BACKUP_KEEP: u32 = 14;
/// The node refuses a backup schedule faster than this: the scaled interval
/// is raised to it, and the header says so.
pub const BACKUP_FLOOR_SECS: u64 = 10;
/// The retention policy of the simulated site, in simulated days: audit, inventory
/// history, deployment results.
pub const RETENTION_DAYS: [(&str, f64); 3] = [
    ("retention.audit", 400.0),
    ("retention.inventory_history", 180.0),
    ("retention.results", 400.0),
];
/// The node refuses a retention shorter than this.
pub const RETENTION_FLOOR_SECS: u64 = 1;

/// One simulated year = `year_secs` real seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub year_secs: f64,
}

impl Scale {
    /// A scale; `year_secs` must be positive and finite.
    pub fn new(year_secs: f64) -> Result<Scale, String> {
        if !(year_secs.is_finite() && year_secs > 0.0) {
            return Err(format!(
                "--year-secs must be a positive number of seconds, not {year_secs}"
            ));
        }
        Ok(Scale { year_secs })
    }

    /// Simulated seconds per real second.
    pub fn factor(&self) -> f64 {
        YEAR / self.year_secs
    }

    /// Real seconds that `sim_secs` simulated seconds last.
    pub fn real_secs(&self, sim_secs: f64) -> f64 {
        sim_secs / self.factor()
    }

    /// A simulated duration scaled to whole real seconds (rounded), at least `floor`;
    /// `true` when the floor raised it.
    pub fn policy_secs(&self, sim_secs: f64, floor: u64) -> (u64, bool) {
        let real = self.real_secs(sim_secs).round();
        if real < floor as f64 {
            (floor, true)
        } else {
            (real as u64, false)
        }
    }

    /// The scaled backup interval in seconds, and whether the node's floor raised it.
    pub fn backup_every(&self) -> (u64, bool) {
        self.policy_secs(BACKUP_EVERY, BACKUP_FLOOR_SECS)
    }

    /// Each retention key with its scaled value ("NNNs") and whether the floor raised it.
    pub fn retention(&self) -> Vec<(&'static str, String, bool)> {
        RETENTION_DAYS
            .iter()
            .map(|(key, days)| {
                let (secs, raised) = self.policy_secs(days * DAY, RETENTION_FLOOR_SECS);
                (*key, format!("{secs}s"), raised)
            })
            .collect()
    }

    /// Real time between two of `per_year` evenly spaced events.
    pub fn spacing(&self, per_year: u64) -> Duration {
        Duration::from_secs_f64(self.year_secs / per_year.max(1) as f64)
    }
}

/// How many of `per_year` evenly spaced events of one year are due `elapsed` real seconds
/// into it: event k (0-based) is due at k * year_secs / per_year, so the first is due at
/// once and all are due by the year's end.
pub fn due(scale: &Scale, per_year: u64, elapsed: f64) -> u64 {
    if elapsed < 0.0 {
        return 0;
    }
    let k = (elapsed * per_year as f64 / scale.year_secs).floor() as u64 + 1;
    k.min(per_year)
}

/// The configuration file of a signed bundle setting the retention policy (global scope).
pub fn retention_toml(scale: &Scale) -> String {
    let mut s = String::from("[global]\n");
    for (key, value, _) in scale.retention() {
        s.push_str(&format!("\"{key}\" = \"{value}\"\n"));
    }
    s
}

/// An inventory report of simulated client `client` after `changes` changes of its
/// facts: 50 packages, one of which moves to a new version at each change (a package
/// update), about 2 KB of JSON.
pub fn facts(client: usize, changes: u64) -> serde_json::Value {
    let mut packages = serde_json::Map::new();
    for p in 0..PACKAGES {
        // Change k updates package k mod PACKAGES; a package's version counts its updates.
        let updates = changes / PACKAGES + u64::from(changes % PACKAGES > p);
        packages.insert(
            format!("package-{p:02}"),
            serde_json::Value::String(format!("1.{updates}.{p}")),
        );
    }
    serde_json::json!({
        "hostname": format!("bench-{client}"),
        "os": { "id": "debian", "version": "13" },
        "packages": packages,
    })
}

const PACKAGES: u64 = 50;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_states_the_factor_and_scales_policies() {
        let s = Scale::new(360.0).expect("a scale");
        assert!((s.factor() - 87_660.0).abs() < 1e-6, "{}", s.factor());
        // 6 h is 0.25 s at this scale: raised to the node's 10 s floor.
        assert_eq!(s.backup_every(), (10, true));
        let r = s.retention();
        assert_eq!(
            r,
            vec![
                ("retention.audit", "394s".to_string(), false),
                ("retention.inventory_history", "177s".to_string(), false),
                ("retention.results", "394s".to_string(), false),
            ]
        );
        // A slow clock (factor 1,000): 6 h is 21.6 s, above the floor.
        let slow = Scale::new(YEAR / 1_000.0).expect("a scale");
        assert_eq!(slow.backup_every(), (22, false));
        assert!(Scale::new(0.0).is_err());
        assert!(Scale::new(f64::NAN).is_err());
        assert!(Scale::new(-1.0).is_err());
    }

    #[test]
    fn retention_never_goes_below_its_floor() {
        let s = Scale::new(0.1).expect("a scale");
        for (_, v, raised) in s.retention() {
            assert_eq!(v, "1s");
            assert!(raised);
        }
        let toml = retention_toml(&Scale::new(20.0).expect("a scale"));
        assert_eq!(
            toml,
            "[global]\n\"retention.audit\" = \"22s\"\n\"retention.inventory_history\" = \"10s\"\n\"retention.results\" = \"22s\"\n"
        );
    }

    #[test]
    fn due_events_spread_evenly_over_the_year() {
        let s = Scale::new(100.0).expect("a scale");
        let table: [(u64, f64, u64); 9] = [
            (12, -1.0, 0),
            (12, 0.0, 1),
            (12, 8.0, 1),
            (12, 8.34, 2),
            (12, 99.9, 12),
            (12, 100.0, 12),
            (12, 1e9, 12),
            (365, 50.0, 183),
            (0, 50.0, 0),
        ];
        for (per_year, elapsed, want) in table {
            assert_eq!(due(&s, per_year, elapsed), want, "{per_year} at {elapsed}");
        }
        assert_eq!(s.spacing(4), Duration::from_secs(25));
    }

    #[test]
    fn each_change_of_facts_updates_one_package() {
        let a = facts(7, 0);
        let b = facts(7, 1);
        let c = facts(7, 51);
        assert_eq!(a["hostname"], "bench-7");
        assert_eq!(a["packages"].as_object().map(|m| m.len()), Some(50));
        let changed = |x: &serde_json::Value, y: &serde_json::Value| {
            x["packages"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, v)| y["packages"][k.as_str()] != **v)
                .count()
        };
        assert_eq!(changed(&a, &b), 1);
        assert_eq!(b["packages"]["package-00"], "1.1.0");
        assert_eq!(c["packages"]["package-00"], "1.2.0");
        assert_eq!(c["packages"]["package-01"], "1.1.1");
        assert_ne!(facts(7, 5), facts(7, 6));
        let bytes = serde_json::to_string(&c).map(|s| s.len()).unwrap_or(0);
        assert!((1_000..4_000).contains(&bytes), "{bytes}");
    }
}
