//! The site's health rules: one definition each, from which the Prometheus alert rules, the
//! findings of `outpost doctor` and the console's overview alarms are all derived.
//!
//! Pure (wire and shared only): `rules` holds the table ([`Rule`], [`RULES`]) and writes the
//! Prometheus rule file ([`rules_yaml`]); `findings` decides the findings of one check of the
//! site from plain facts ([`SiteFacts`], gathered by `api::doctor`) at an explicit time. The
//! thresholds below are used by both, so an alert and a finding of the same rule agree.

pub mod findings;
pub mod rules;

pub use findings::{ClientCounts, MemberFacts, SiteFacts, findings};
pub use rules::{RULES, Rule, rule, rules_yaml};

/// A follower this many entries behind the leader is lagging.
pub const LAG_ENTRIES: u64 = 100;
/// A follower lacking an entry older than this (seconds) is lagging.
pub const LAG_SECONDS: u64 = 30;
/// A data directory's file system with less than this share free is low.
pub const DISK_FREE_RATIO: f64 = 0.10;
/// A certificate ending within this many days needs renewing.
pub const CERT_DAYS: i64 = 30;
/// Clocks further apart than this (seconds) are off.
pub const CLOCK_OFFSET_SECONDS: f64 = 1.0;
/// A client not seen for this many days is unseen.
pub const UNSEEN_DAYS: i64 = 7;
/// A site whose last backup is older than this many days should take one (doctor only).
pub const BACKUP_DAYS: i64 = 7;
/// A node whose disk fills within this many days at its growth rate needs room (doctor only).
pub const HEADROOM_DAYS: i64 = 30;

pub(crate) const DAY_MS: i64 = 86_400_000;
