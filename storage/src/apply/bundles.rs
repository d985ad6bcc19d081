//! Bundle commands: `SetBundleTrust`, `ImportSignedBundle` (and the legacy `ImportBundle`),
//! `BlobsHeld`.
//!
//! The bundle format lives in `outpost-bundles`. A legacy `ImportBundle` is plain values
//! ([`BundleImport`]) re-checked against the replicated floors, so that two nodes importing at
//! the same moment cannot both move a channel, and a replay is refused whatever node it
//! reaches. An `ImportSignedBundle` carries the signed bytes, and `import_signed_bundle` checks
//! them here with `outpost-bundles` (signatures, target, trust version, times): a change to
//! those checks changes what apply accepts, so it is a command-format change. Blobs themselves never enter the database: only their hashes and which nodes
//! reported holding them.

use rusqlite::{Connection, OptionalExtension, params};
use sha2::Digest;

use super::config::set_config;
use super::{Fail, invalid, node_id_sql, reject, version_sql};
use crate::model::{
    BundleImport, BundleType, Envelope, PayloadRecord, RejectCode, Response, SignedBundle,
};
use crate::rules::{check_id, check_name, normalize_sha256};
use crate::schema::bundle_time_floor;

/// How far past the cluster time floor a bundle's `created` may be (unix seconds): a bundle
/// from the future, even correctly signed (a leaked release key), cannot raise the floor
/// by more than this in one step.
pub const MAX_CREATED_SKEW_SECS: i64 = 24 * 3600;

pub(super) fn set_bundle_trust(
    conn: &Connection,
    at_ms: i64,
    version: u64,
    trust_json: &str,
) -> Result<Response, Fail> {
    let v = version_sql("trust version", version)?;
    if v == 0 {
        return Err(invalid("trust version starts at 1".into()));
    }
    if trust_json.trim().is_empty() {
        return Err(invalid("trust document is empty".into()));
    }
    if current_trust_version(conn)?.is_some() {
        return Err(reject(
            RejectCode::AlreadyExists,
            "a bundle trust is already pinned; rotate it with a trust bundle signed by the root keys",
        ));
    }
    conn.prepare_cached(
        "INSERT INTO bundle_trust (singleton, version, trust_json, updated_at_ms) VALUES (1, ?1, ?2, ?3)",
    )?
    .execute(params![v, trust_json, at_ms])?;
    Ok(Response::Done)
}

pub(super) fn import_bundle(
    conn: &Connection,
    env: &Envelope,
    b: &BundleImport,
) -> Result<Response, Fail> {
    check_id("bundle id", &b.id).map_err(invalid)?;
    let manifest_sha256 =
        normalize_sha256("manifest sha256", &b.manifest_sha256).map_err(invalid)?;
    let version = version_sql("bundle version", b.version)?;
    let node = node_id_sql(b.node_id)?;
    let mut payloads = Vec::with_capacity(b.payloads.len());
    for p in &b.payloads {
        check_name("payload name", &p.name).map_err(invalid)?;
        check_name("payload kind", &p.kind).map_err(invalid)?;
        let sha = normalize_sha256(&format!("sha256 of payload {}", p.name), &p.sha256)
            .map_err(invalid)?;
        let size = version_sql(&format!("size of payload {}", p.name), p.size)?;
        payloads.push((p, sha, size));
    }

    let Some(trust_version) = current_trust_version(conn)? else {
        return Err(invalid(
            "no bundle trust is pinned in this cluster (outpost init --bundle-trust KEY.pub)"
                .into(),
        ));
    };
    if u64::try_from(trust_version).ok() != Some(b.trust_version) {
        return Err(invalid(format!(
            "bundle {} was verified against trust version {} but the cluster's trust is now version {trust_version}; import it again",
            b.id, b.trust_version
        )));
    }
    let same: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM bundles WHERE manifest_sha256 = ?1)")?
        .query_row([&manifest_sha256], |r| r.get(0))?;
    if same {
        return Ok(Response::Unchanged);
    }
    let id_taken: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM bundles WHERE id = ?1)")?
        .query_row([&b.id], |r| r.get(0))?;
    if id_taken {
        return Err(reject(
            RejectCode::AlreadyExists,
            format!("bundle id {} is already used by another bundle", b.id),
        ));
    }
    let floor = bundle_time_floor(conn)?;
    if b.expires <= floor {
        return Err(invalid(format!(
            "bundle {} expired: it expires at {} and the cluster time floor is {floor} (unix seconds)",
            b.id, b.expires
        )));
    }

    match b.bundle_type {
        BundleType::Content => {
            let Some(channel) = &b.channel else {
                return Err(invalid(format!("content bundle {} names no channel", b.id)));
            };
            check_name("channel", channel).map_err(invalid)?;
            let last: Option<i64> = conn
                .prepare_cached("SELECT version FROM channels WHERE name = ?1")?
                .query_row([channel], |r| r.get(0))
                .optional()?;
            if let Some(last) = last
                && version <= last
            {
                return Err(invalid(format!(
                    "bundle {} has version {version} of channel {channel}, not greater than its last version {last}",
                    b.id
                )));
            }
            set_channel(conn, channel, version, &manifest_sha256, env.at_ms)?;
        }
        BundleType::Trust => {
            let Some(trust_json) = &b.new_trust_json else {
                return Err(invalid(format!(
                    "trust bundle {} carries no trust document",
                    b.id
                )));
            };
            if version != trust_version.saturating_add(1) {
                return Err(invalid(format!(
                    "trust bundle {} has trust version {version}; the next version is {}",
                    b.id,
                    trust_version + 1
                )));
            }
            conn.prepare_cached(
                "UPDATE bundle_trust SET version = ?1, trust_json = ?2, updated_at_ms = ?3",
            )?
            .execute(params![version, trust_json, env.at_ms])?;
            for (channel, to) in &b.channel_resets {
                check_name("channel", channel).map_err(invalid)?;
                let to = version_sql(&format!("reset of channel {channel}"), *to)?;
                set_channel(conn, channel, to, "", env.at_ms)?;
            }
        }
    }

    let signers = serde_json::to_string(&b.signers).unwrap_or_else(|_| "[]".into());
    conn.prepare_cached(
        "INSERT INTO bundles (id, manifest_sha256, bundle_type, channel, version, created, expires,
                              signers_json, imported_at_ms, imported_by, node_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        b.id,
        manifest_sha256,
        b.bundle_type.as_str(),
        b.channel,
        version,
        b.created,
        b.expires,
        signers,
        env.at_ms,
        env.actor,
        node
    ])?;
    let seq = conn.last_insert_rowid();
    let mut insert = conn.prepare_cached(
        "INSERT INTO payloads (bundle_seq, idx, name, kind, size, sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut hold = conn.prepare_cached(
        "INSERT INTO blob_holders (sha256, node_id, since_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (sha256, node_id) DO NOTHING",
    )?;
    for (idx, (p, sha, size)) in payloads.iter().enumerate() {
        insert.execute(params![seq, idx as i64, p.name, p.kind, size, sha])?;
        hold.execute(params![sha, node, env.at_ms])?;
    }
    for (scope, key, value) in &b.config {
        set_config(conn, env, scope, key, value)?;
    }
    if b.created > floor {
        conn.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'bundle_time_floor'")?
            .execute([b.created])?;
    }
    Ok(Response::Done)
}

/// `ImportSignedBundle`: verifies the exact signed bytes against the trust held in the state
/// (signatures and thresholds, limits, the target cluster, the trust version of a rotation,
/// expiry and `created` against the cluster time floor), checks and parses the `config`
/// payloads it carries, then commits like `import_bundle`. Deterministic: the same bytes and
/// the same state give the same verdict on every node.
pub(super) fn import_signed_bundle(
    conn: &Connection,
    env: &Envelope,
    sb: &SignedBundle,
) -> Result<Response, Fail> {
    let trust_row: Option<(i64, String)> = conn
        .prepare_cached("SELECT version, trust_json FROM bundle_trust")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((trust_version, trust_json)) = trust_row else {
        return Err(invalid(
            "no bundle trust is pinned in this cluster (outpost init --bundle-trust KEY.pub)"
                .into(),
        ));
    };
    let trust: outpost_bundles::TrustDocument = serde_json::from_str(&trust_json)
        .map_err(|e| invalid(format!("the stored bundle trust does not parse: {e}")))?;
    let limits = outpost_bundles::Limits::default();
    let head = outpost_bundles::verify_signed_head(&sb.manifest, &sb.signatures, &trust, &limits)
        .map_err(|e| invalid(format!("bundle refused: {e}")))?;
    let m = &head.manifest;
    let cluster_id: String = conn
        .prepare_cached("SELECT id FROM cluster")?
        .query_row([], |r| r.get(0))?;
    outpost_bundles::check_target(m, &cluster_id)
        .map_err(|e| invalid(format!("bundle {} refused: {e}", m.id)))?;
    if let (outpost_bundles::BundleType::Trust, Some(new)) = (m.bundle_type, &m.trust) {
        outpost_bundles::check_trust_version(&trust, new)
            .map_err(|e| invalid(format!("bundle {} refused: {e}", m.id)))?;
    }
    let floor = bundle_time_floor(conn)?.max(sb.cluster_time);
    outpost_bundles::check_expiry(m, floor)
        .map_err(|e| invalid(format!("bundle {} refused: {e}", m.id)))?;
    if m.created > floor.saturating_add(MAX_CREATED_SKEW_SECS) {
        return Err(invalid(format!(
            "bundle {} was created at {} (unix seconds), later than the cluster time floor {floor} plus the allowed skew of {MAX_CREATED_SKEW_SECS} s",
            m.id, m.created
        )));
    }

    let config_entries: Vec<&outpost_bundles::PayloadEntry> = m
        .payloads
        .iter()
        .filter(|p| p.kind == outpost_bundles::PayloadKind::Config)
        .collect();
    if config_entries.len() != sb.config_payloads.len() {
        return Err(invalid(format!(
            "bundle {} lists {} config payload(s) but the command carries {}",
            m.id,
            config_entries.len(),
            sb.config_payloads.len()
        )));
    }
    let mut config = Vec::new();
    for (entry, bytes) in config_entries.iter().zip(&sb.config_payloads) {
        let sha = hex::encode(sha2::Sha256::digest(bytes));
        if bytes.len() as u64 != entry.size || sha != entry.sha256 {
            return Err(invalid(format!(
                "config payload {} of bundle {} does not match its manifest entry (size or sha256)",
                entry.name, m.id
            )));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| {
            invalid(format!(
                "config payload {} of bundle {} is not UTF-8 text",
                entry.name, m.id
            ))
        })?;
        config.extend(
            crate::bundle_config::parse_config_payload(text).map_err(|e| {
                invalid(format!(
                    "config payload {} of bundle {}: {e}",
                    entry.name, m.id
                ))
            })?,
        );
    }
    let b = BundleImport {
        id: m.id.clone(),
        manifest_sha256: head.manifest_sha256.clone(),
        bundle_type: match m.bundle_type {
            outpost_bundles::BundleType::Content => BundleType::Content,
            outpost_bundles::BundleType::Trust => BundleType::Trust,
        },
        channel: m.channel.clone(),
        version: m.version,
        created: m.created,
        expires: m.expires,
        signers: head.signers.clone(),
        trust_version: u64::try_from(trust_version).unwrap_or(0),
        payloads: m
            .payloads
            .iter()
            .map(|p| PayloadRecord {
                name: p.name.clone(),
                kind: p.kind.as_str().to_string(),
                size: p.size,
                sha256: p.sha256.clone(),
            })
            .collect(),
        new_trust_json: m
            .trust
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| invalid(format!("bundle {}: trust document: {e}", m.id)))?,
        channel_resets: m
            .channel_resets
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        config,
        node_id: sb.node_id,
    };
    import_bundle(conn, env, &b)
}

pub(super) fn blobs_held(
    conn: &Connection,
    at_ms: i64,
    node_id: u64,
    sha256: &[String],
) -> Result<Response, Fail> {
    let node = node_id_sql(node_id)?;
    let mut hold = conn.prepare_cached(
        "INSERT INTO blob_holders (sha256, node_id, since_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (sha256, node_id) DO NOTHING",
    )?;
    for s in sha256 {
        let s = normalize_sha256("blob sha256", s).map_err(invalid)?;
        hold.execute(params![s, node, at_ms])?;
    }
    Ok(Response::Done)
}

fn current_trust_version(conn: &Connection) -> Result<Option<i64>, rusqlite::Error> {
    conn.prepare_cached("SELECT version FROM bundle_trust")?
        .query_row([], |r| r.get(0))
        .optional()
}

fn set_channel(
    conn: &Connection,
    channel: &str,
    version: i64,
    manifest_sha256: &str,
    at_ms: i64,
) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO channels (name, version, manifest_sha256, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (name) DO UPDATE SET version = excluded.version,
             manifest_sha256 = excluded.manifest_sha256, updated_at_ms = excluded.updated_at_ms",
    )?
    .execute(params![channel, version, manifest_sha256, at_ms])?;
    Ok(())
}
