//! The manifest (a boundary type, serialized as JSON) and the pure checks over it:
//! well-formedness against [`Limits`], and the import policy (expiry, targets, version floor).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::container::FORMAT_VERSION;
use crate::error::BundleError;
use crate::trust_document::TrustDocument;

/// The signed description of a bundle. Serialized as JSON; the exact bytes are what is signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Manifest format; equals the container format (1).
    pub format: u32,
    /// Random bundle id, 32 lowercase hex digits.
    pub id: String,
    /// `content` (payloads for a channel) or `trust` (a new trust document).
    #[serde(rename = "type")]
    pub bundle_type: BundleType,
    /// Channel of a content bundle; absent in a trust bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Channel version (content) or the new trust version (trust).
    pub version: u64,
    /// Creation time, unix seconds.
    pub created: i64,
    /// Expiry time, unix seconds; refused when not after the cluster time floor.
    pub expires: i64,
    /// Cluster ids this bundle is meant for, or `["any"]`.
    pub targets: Vec<String>,
    /// Every payload, in the order the entries follow.
    pub payloads: Vec<PayloadEntry>,
    /// The new trust document (trust bundles only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustDocument>,
    /// Root-signed channel floor resets (trust bundles only): channel -> new floor.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channel_resets: BTreeMap<String, u64>,
}

/// Kind of bundle; decides which role signs it and with which domain prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BundleType {
    /// Payloads for a channel, signed by release keys.
    Content,
    /// A new trust document, signed by root keys (old and new).
    Trust,
}

/// One payload as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadEntry {
    /// Name, unique in the bundle; the tar entry is `payloads/<name>`. Never used as a path.
    pub name: String,
    /// What the payload is for.
    pub kind: PayloadKind,
    /// Exact size in bytes.
    pub size: u64,
    /// Lowercase hex sha256 of the content.
    pub sha256: String,
}

/// What a payload is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadKind {
    /// A package, file or script for clients.
    Artifact,
    /// A configuration change.
    Config,
    /// A new `outpost` release for a rolling upgrade.
    OutpostRelease,
}

impl PayloadKind {
    /// The name used in specs and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadKind::Artifact => "artifact",
            PayloadKind::Config => "config",
            PayloadKind::OutpostRelease => "outpost-release",
        }
    }
}

/// Caps applied before and while reading; configured by the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest manifest entry, checked on the tar header before reading.
    pub max_manifest_bytes: u64,
    /// Largest signature document, checked on the tar header before reading.
    pub max_signature_bytes: u64,
    /// Most payloads in one bundle.
    pub max_payloads: usize,
    /// Largest single payload.
    pub max_payload_bytes: u64,
    /// Largest sum of payload sizes.
    pub max_total_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 4 << 20,
            max_signature_bytes: 64 << 10,
            max_payloads: 10_000,
            max_payload_bytes: 64 << 30,
            max_total_bytes: 256 << 30,
        }
    }
}

/// The value `targets` holds for a bundle meant for every cluster.
pub const TARGET_ANY: &str = "any";
/// Longest payload or channel name (keeps tar names inside the 100-byte ustar field).
pub const MAX_NAME_LEN: usize = 80;

/// What the replicated state records for a channel: its last version and that bundle's manifest hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelFloor {
    /// Highest version accepted so far.
    pub version: u64,
    /// sha256 of the manifest bytes of the bundle at that version.
    pub manifest_sha256: String,
}

/// Check a manifest against the format rules and the limits. Pure.
pub fn check_manifest(m: &Manifest, limits: &Limits) -> Result<(), BundleError> {
    let invalid = |field: &str, reason: &str| BundleError::ManifestInvalid {
        field: field.into(),
        reason: reason.into(),
    };
    if m.format != FORMAT_VERSION {
        return Err(invalid("format", "unsupported manifest format"));
    }
    if m.id.len() != 32 || !is_lower_hex(&m.id) {
        return Err(invalid("id", "must be 32 lowercase hex digits"));
    }
    if m.expires <= m.created {
        return Err(invalid("expires", "must be after created"));
    }
    if m.targets.is_empty() {
        return Err(invalid("targets", "empty; use [\"any\"]"));
    }
    if m.targets.len() > 1 && m.targets.iter().any(|t| t == TARGET_ANY) {
        return Err(invalid("targets", "\"any\" must stand alone"));
    }
    for t in &m.targets {
        check_name(t).map_err(|r| invalid("targets", r))?;
    }
    match m.bundle_type {
        BundleType::Content => {
            let channel = m
                .channel
                .as_deref()
                .ok_or_else(|| invalid("channel", "a content bundle names its channel"))?;
            check_name(channel).map_err(|r| invalid("channel", r))?;
            if m.version == 0 {
                return Err(invalid("version", "starts at 1"));
            }
            if m.trust.is_some() || !m.channel_resets.is_empty() {
                return Err(invalid(
                    "trust",
                    "only trust bundles carry trust or channel_resets",
                ));
            }
        }
        BundleType::Trust => {
            if m.channel.is_some() {
                return Err(invalid("channel", "a trust bundle has no channel"));
            }
            let doc = m
                .trust
                .as_ref()
                .ok_or_else(|| invalid("trust", "a trust bundle carries a trust document"))?;
            doc.check()?;
            if doc.version != m.version {
                return Err(invalid(
                    "version",
                    "must equal the trust document's version",
                ));
            }
            if !m.payloads.is_empty() {
                return Err(invalid("payloads", "a trust bundle has no payloads"));
            }
            for c in m.channel_resets.keys() {
                check_name(c).map_err(|r| invalid("channel_resets", r))?;
            }
        }
    }
    if m.payloads.len() > limits.max_payloads {
        return Err(BundleError::TooManyPayloads {
            count: m.payloads.len(),
            limit: limits.max_payloads,
        });
    }
    let mut names = BTreeSet::new();
    let mut total: u64 = 0;
    for p in &m.payloads {
        if p.name.contains('/') || p.name.contains("..") || p.name.starts_with('/') {
            return Err(BundleError::UnsafeName {
                entry: p.name.clone(),
                reason: "payload names are single components without `..`",
            });
        }
        check_name(&p.name).map_err(|r| invalid(&format!("payloads[{}].name", p.name), r))?;
        if !names.insert(p.name.as_str()) {
            return Err(BundleError::DuplicatePayload {
                entry: p.name.clone(),
            });
        }
        if p.sha256.len() != 64 || !is_lower_hex(&p.sha256) {
            return Err(invalid(
                &format!("payloads[{}].sha256", p.name),
                "must be 64 lowercase hex digits",
            ));
        }
        if p.size > limits.max_payload_bytes {
            return Err(BundleError::PayloadTooLarge {
                entry: p.name.clone(),
                size: p.size,
                limit: limits.max_payload_bytes,
            });
        }
        total = total.saturating_add(p.size);
    }
    if total > limits.max_total_bytes {
        return Err(BundleError::BundleTooLarge {
            size: total,
            limit: limits.max_total_bytes,
        });
    }
    Ok(())
}

/// Names of channels and payloads: 1..=80 of `[A-Za-z0-9._+-]`, not starting with `.` or `-`.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err("must be 1 to 80 characters");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err("must not start with `.` or `-`");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
    {
        return Err("only letters, digits and . _ + - are allowed");
    }
    Ok(())
}

/// Is this 64 lowercase hex digits (a sha256 as we write it)?
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && is_lower_hex(s)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Expiry against the cluster time floor (unix seconds). Pure.
pub fn check_expiry(m: &Manifest, time_floor: i64) -> Result<(), BundleError> {
    if m.expires <= time_floor {
        return Err(BundleError::Expired {
            id: m.id.clone(),
            expires: m.expires,
            time_floor,
        });
    }
    Ok(())
}

/// Target clusters. Pure.
pub fn check_target(m: &Manifest, cluster_id: &str) -> Result<(), BundleError> {
    if m.targets.iter().any(|t| t == TARGET_ANY || t == cluster_id) {
        return Ok(());
    }
    Err(BundleError::WrongCluster {
        id: m.id.clone(),
        cluster_id: cluster_id.to_string(),
        targets: m.targets.clone(),
    })
}

/// Result of the rollback check for a content bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorCheck {
    /// The version grows: import.
    Newer,
    /// The very same bundle as the channel's current one: nothing to do.
    SameBundle,
}

/// Rollback check of a content bundle against the channel floors. Pure.
pub fn check_floor(
    m: &Manifest,
    manifest_sha256: &str,
    floors: &BTreeMap<String, ChannelFloor>,
) -> Result<FloorCheck, BundleError> {
    let channel = m.channel.as_deref().unwrap_or_default();
    let Some(floor) = floors.get(channel) else {
        return Ok(FloorCheck::Newer);
    };
    if m.version > floor.version {
        return Ok(FloorCheck::Newer);
    }
    if m.version == floor.version && manifest_sha256 == floor.manifest_sha256 {
        return Ok(FloorCheck::SameBundle);
    }
    Err(BundleError::VersionNotGreater {
        id: m.id.clone(),
        channel: channel.to_string(),
        version: m.version,
        floor: floor.version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format: 1,
            id: "0123456789abcdef0123456789abcdef".into(),
            bundle_type: BundleType::Content,
            channel: Some("site".into()),
            version: 3,
            created: 1_000,
            expires: 2_000,
            targets: vec!["any".into()],
            payloads: vec![PayloadEntry {
                name: "tool_1.2_amd64.deb".into(),
                kind: PayloadKind::Artifact,
                size: 10,
                sha256: "a".repeat(64),
            }],
            trust: None,
            channel_resets: BTreeMap::new(),
        }
    }

    #[test]
    fn manifest_rules() {
        type Edit = fn(&mut Manifest);
        let cases: &[(&str, Edit, &str)] = &[
            ("sample", |_| {}, "ok"),
            ("format", |m| m.format = 2, "ManifestInvalid"),
            ("short id", |m| m.id = "abc".into(), "ManifestInvalid"),
            (
                "upper id",
                |m| m.id = m.id.to_uppercase(),
                "ManifestInvalid",
            ),
            (
                "expires<=created",
                |m| m.expires = m.created,
                "ManifestInvalid",
            ),
            ("no targets", |m| m.targets.clear(), "ManifestInvalid"),
            ("any+id", |m| m.targets.push("c1".into()), "ManifestInvalid"),
            (
                "empty target",
                |m| m.targets = vec![String::new()],
                "ManifestInvalid",
            ),
            (
                "escape in target",
                |m| m.targets = vec!["\u{1b}[2J".into()],
                "ManifestInvalid",
            ),
            (
                "uuid target",
                |m| m.targets = vec!["0b8f3c1e-2f4a-4c7e-9d3b-5a6e7f8a9b0c".into()],
                "ok",
            ),
            ("no channel", |m| m.channel = None, "ManifestInvalid"),
            (
                "bad channel",
                |m| m.channel = Some("a b".into()),
                "ManifestInvalid",
            ),
            ("version 0", |m| m.version = 0, "ManifestInvalid"),
            (
                "dup",
                |m| m.payloads.push(m.payloads[0].clone()),
                "DuplicatePayload",
            ),
            ("slash", |m| m.payloads[0].name = "a/b".into(), "UnsafeName"),
            ("dotdot", |m| m.payloads[0].name = "..".into(), "UnsafeName"),
            (
                "dot start",
                |m| m.payloads[0].name = ".x".into(),
                "ManifestInvalid",
            ),
            (
                "long",
                |m| m.payloads[0].name = "x".repeat(81),
                "ManifestInvalid",
            ),
            (
                "hash",
                |m| m.payloads[0].sha256 = "A".repeat(64),
                "ManifestInvalid",
            ),
            ("big", |m| m.payloads[0].size = 101, "PayloadTooLarge"),
            (
                "total",
                |m| {
                    let mut p = m.payloads[0].clone();
                    p.name = "b".into();
                    p.size = 100;
                    m.payloads[0].size = 100;
                    m.payloads.push(p);
                },
                "BundleTooLarge",
            ),
            (
                "count",
                |m| {
                    for i in 0..3 {
                        let mut p = m.payloads[0].clone();
                        p.name = format!("p{i}");
                        p.size = 0;
                        m.payloads.push(p);
                    }
                },
                "TooManyPayloads",
            ),
            (
                "trust on content",
                |m| {
                    m.channel_resets.insert("site".into(), 1);
                },
                "ManifestInvalid",
            ),
            (
                "trust without doc",
                |m| {
                    m.bundle_type = BundleType::Trust;
                    m.channel = None;
                },
                "ManifestInvalid",
            ),
        ];
        let limits = Limits {
            max_manifest_bytes: 1 << 20,
            max_signature_bytes: 1 << 10,
            max_payloads: 3,
            max_payload_bytes: 100,
            max_total_bytes: 150,
        };
        for (what, edit, want) in cases {
            let mut m = sample();
            edit(&mut m);
            let got = check_manifest(&m, &limits);
            match got {
                Ok(()) => assert_eq!(*want, "ok", "{what}"),
                Err(e) => assert!(format!("{e:?}").starts_with(want), "{what}: {e:?}"),
            }
        }
    }

    #[test]
    fn policy_checks() {
        let m = sample();
        assert!(check_expiry(&m, 1_999).is_ok());
        assert!(matches!(
            check_expiry(&m, 2_000),
            Err(BundleError::Expired { .. })
        ));
        assert!(check_target(&m, "c1").is_ok());
        let mut t = sample();
        t.targets = vec!["c1".into(), "c2".into()];
        assert!(check_target(&t, "c2").is_ok());
        assert!(matches!(
            check_target(&t, "c3"),
            Err(BundleError::WrongCluster { .. })
        ));

        let floor = |v: u64, h: &str| {
            BTreeMap::from([(
                "site".to_string(),
                ChannelFloor {
                    version: v,
                    manifest_sha256: h.into(),
                },
            )])
        };
        let cases: &[(BTreeMap<String, ChannelFloor>, &str, Option<FloorCheck>)] = &[
            (BTreeMap::new(), "h", Some(FloorCheck::Newer)),
            (floor(2, "x"), "h", Some(FloorCheck::Newer)),
            (floor(3, "h"), "h", Some(FloorCheck::SameBundle)),
            (floor(3, "x"), "h", None),
            (floor(4, "h"), "h", None),
            (floor(u64::MAX, "x"), "h", None),
        ];
        for (floors, hash, want) in cases {
            let got = check_floor(&m, hash, floors);
            match (got, want) {
                (Ok(g), Some(w)) => assert_eq!(g, *w),
                (Err(BundleError::VersionNotGreater { .. }), None) => {}
                (g, w) => panic!("{floors:?}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn json_refuses_unknown_and_duplicate_fields() {
        let good = serde_json::to_string(&sample()).unwrap();
        assert!(serde_json::from_str::<Manifest>(&good).is_ok());
        let extra = good.replacen('{', "{\"extra\":1,", 1);
        assert!(serde_json::from_str::<Manifest>(&extra).is_err());
        let dup = good.replacen('{', "{\"version\":9,", 1);
        assert!(serde_json::from_str::<Manifest>(&dup).is_err());
        assert!(good.contains("\"type\":\"content\""));
        assert!(good.contains("\"kind\":\"artifact\""));
    }
}
