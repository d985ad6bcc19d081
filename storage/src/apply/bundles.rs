//! Bundles, blobs and deployments: their deterministic apply steps and their queries.
//!
//! The bundle format lives in `outpost-bundles`; here a verified bundle is plain values
//! ([`BundleImport`]) re-checked against the replicated floors, so that two nodes importing at
//! the same moment cannot both move a channel, and a replay is refused whatever node it
//! reaches. Blobs themselves never enter the database: only their hashes and which nodes
//! reported holding them.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use sha2::Digest;

use crate::apply::{Fail, invalid, node_id_sql, reject};
use crate::error::StorageError;
use crate::model::{
    Assignment, BundleImport, BundleRecord, BundleType, ChannelRecord, DeploymentRecord,
    DeploymentResult, DeploymentStatus, Envelope, PayloadHolding, PayloadRecord, RejectCode,
    Response, SignedBundle, TrustRecord,
};
use crate::reader::Reader;
use crate::rules::{check_id, check_name, normalize_sha256};

/// The group name that targets every client.
pub const ALL_CLIENTS: &str = "all";
/// Longest result detail a client may report, in bytes.
pub const MAX_DETAIL_BYTES: usize = 16 << 10;
/// Payload kinds a deployment can carry to clients.
const DEPLOYABLE_KIND: &str = "artifact";
/// How far past the cluster time floor a bundle's `created` may be (unix seconds): a bundle
/// from the future, even correctly signed (a leaked release key), cannot raise the floor
/// by more than this in one step.
pub const MAX_CREATED_SKEW_SECS: i64 = 24 * 3600;
/// A client renews its certificate at most once in this many milliseconds.
pub const RENEWAL_INTERVAL_MS: i64 = 3600 * 1000;
/// How long a renewed client's old serial stays valid at most (until the new one is
/// confirmed, or this long).
pub const RETIRED_SERIAL_GRACE_MS: i64 = 3600 * 1000;

impl Reader {
    /// The pinned bundle trust, if any.
    pub fn bundle_trust(&self) -> Result<Option<TrustRecord>, StorageError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT version, trust_json, updated_at_ms FROM bundle_trust",
                [],
                |r| {
                    Ok(TrustRecord {
                        version: u64_col(r.get::<_, i64>(0)?),
                        trust_json: r.get(1)?,
                        updated_at_ms: r.get(2)?,
                    })
                },
            )
            .optional()?)
        })
    }

    /// Every channel's floor, by name.
    pub fn channels(&self) -> Result<Vec<ChannelRecord>, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT name, version, manifest_sha256, updated_at_ms FROM channels ORDER BY name",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(ChannelRecord {
                    name: r.get(0)?,
                    version: u64_col(r.get::<_, i64>(1)?),
                    manifest_sha256: r.get(2)?,
                    updated_at_ms: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The newest `created` of any accepted bundle (unix seconds): part of the time floor.
    pub fn bundle_time_floor(&self) -> Result<i64, StorageError> {
        self.with(|c| Ok(time_floor(c)?))
    }

    /// Every bundle, oldest first, with its payloads and their holders.
    pub fn bundles(&self) -> Result<Vec<BundleRecord>, StorageError> {
        self.with(|c| {
            let holders = all_holders(c)?;
            let mut stmt = c.prepare(
                "SELECT seq, id, manifest_sha256, bundle_type, channel, version, created, expires,
                        signers_json, imported_at_ms, imported_by, node_id
                 FROM bundles ORDER BY seq",
            )?;
            type Raw = (i64, BundleRecord, String, String);
            let rows: Vec<Raw> = stmt
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        BundleRecord {
                            id: r.get(1)?,
                            manifest_sha256: r.get(2)?,
                            bundle_type: BundleType::Content,
                            channel: r.get(4)?,
                            version: u64_col(r.get::<_, i64>(5)?),
                            created: r.get(6)?,
                            expires: r.get(7)?,
                            signers: Vec::new(),
                            imported_at_ms: r.get(9)?,
                            imported_by: r.get(10)?,
                            node_id: u64_col(r.get::<_, i64>(11)?),
                            payloads: Vec::new(),
                        },
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(8)?,
                    ))
                })?
                .collect::<Result<_, _>>()?;
            let mut pstmt = c.prepare(
                "SELECT name, kind, size, sha256 FROM payloads WHERE bundle_seq = ?1 ORDER BY idx",
            )?;
            let mut out = Vec::with_capacity(rows.len());
            for (seq, mut rec, kind, signers) in rows {
                rec.bundle_type = BundleType::parse(&kind).ok_or_else(|| {
                    StorageError::Corrupt(format!("bundle {}: type {kind:?}", rec.id))
                })?;
                rec.signers = serde_json::from_str(&signers).map_err(|e| {
                    StorageError::Corrupt(format!("bundle {}: signers: {e}", rec.id))
                })?;
                rec.payloads = pstmt
                    .query_map([seq], |r| {
                        let sha256: String = r.get(3)?;
                        Ok(PayloadHolding {
                            name: r.get(0)?,
                            kind: r.get(1)?,
                            size: u64_col(r.get::<_, i64>(2)?),
                            held_by: holders.get(&sha256).cloned().unwrap_or_default(),
                            sha256,
                        })
                    })?
                    .collect::<Result<_, _>>()?;
                out.push(rec);
            }
            Ok(out)
        })
    }

    /// Every blob the state refers to, with its size: what each node's store must hold.
    pub fn wanted_blobs(&self) -> Result<BTreeMap<String, u64>, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT DISTINCT sha256, size FROM payloads")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, u64_col(r.get::<_, i64>(1)?)))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Nodes that reported holding `sha256`.
    pub fn blob_holders(&self, sha256: &str) -> Result<Vec<u64>, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT node_id FROM blob_holders WHERE sha256 = ?1 ORDER BY node_id",
            )?;
            let rows = stmt.query_map([sha256], |r| Ok(u64_col(r.get::<_, i64>(0)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Every deployment, oldest first.
    pub fn deployments(&self) -> Result<Vec<DeploymentRecord>, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!("{DEPLOYMENT_SELECT} ORDER BY seq"))?;
            let rows = stmt.query_map([], deployment_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    pub fn deployment(&self, id: &str) -> Result<Option<DeploymentRecord>, StorageError> {
        self.with(|c| {
            Ok(
                c.prepare_cached(&format!("{DEPLOYMENT_SELECT} WHERE id = ?1"))?
                    .query_row([id], deployment_row)
                    .optional()?,
            )
        })
    }

    /// Every client's latest result for deployment `id`.
    pub fn deployment_results(&self, id: &str) -> Result<Vec<DeploymentResult>, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "{RESULT_SELECT} WHERE deployment_id = ?1 ORDER BY client_id"
            ))?;
            let rows = stmt.query_map([id], raw_result)?;
            rows.map(|r| result_from_raw(r?)).collect()
        })
    }

    /// What `client_id` is asked to install: for each artifact name, the newest deployment to
    /// one of its groups (or to all clients), with the client's own last result for it.
    pub fn assignments(&self, client_id: &str) -> Result<Vec<Assignment>, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "{DEPLOYMENT_SELECT} WHERE group_name = '{ALL_CLIENTS}' OR group_name IN
                    (SELECT j.value FROM clients, json_each(clients.groups_json) AS j
                     WHERE clients.id = ?1 AND clients.revoked = 0)
                 ORDER BY seq"
            ))?;
            let all: Vec<DeploymentRecord> = stmt
                .query_map([client_id], deployment_row)?
                .collect::<Result<_, _>>()?;
            // Later deployments of the same artifact replace earlier ones.
            let mut latest: BTreeMap<String, DeploymentRecord> = BTreeMap::new();
            for d in all {
                latest.insert(d.artifact.clone(), d);
            }
            let mut rstmt = c.prepare_cached(&format!(
                "{RESULT_SELECT} WHERE deployment_id = ?1 AND client_id = ?2"
            ))?;
            let mut out = Vec::with_capacity(latest.len());
            for (_, deployment) in latest {
                let result = rstmt
                    .query_row(params![deployment.id, client_id], raw_result)
                    .optional()?
                    .map(result_from_raw)
                    .transpose()?;
                out.push(Assignment { deployment, result });
            }
            Ok(out)
        })
    }
}

pub(crate) fn set_bundle_trust(
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

pub(crate) fn import_bundle(
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
    let floor = time_floor(conn)?;
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
        crate::apply::set_config(conn, env, scope, key, value)?;
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
pub(crate) fn import_signed_bundle(
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
    let floor = time_floor(conn)?.max(sb.cluster_time);
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

pub(crate) fn blobs_held(
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

pub(crate) fn create_deployment(
    conn: &Connection,
    env: &Envelope,
    id: &str,
    artifact: &str,
    version: Option<u64>,
    group: &str,
) -> Result<Response, Fail> {
    check_id("deployment id", id).map_err(invalid)?;
    check_name("artifact name", artifact).map_err(invalid)?;
    check_name("group", group).map_err(invalid)?;
    let version = version
        .map(|v| version_sql("artifact version", v))
        .transpose()?;
    let taken: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM deployments WHERE id = ?1)")?
        .query_row([id], |r| r.get(0))?;
    if taken {
        return Err(reject(
            RejectCode::AlreadyExists,
            format!("deployment {id} already exists"),
        ));
    }
    let found: Option<(String, i64, String, i64, String)> = conn
        .prepare_cached(
            "SELECT p.kind, p.size, p.sha256, b.version, b.id
             FROM payloads p JOIN bundles b ON b.seq = p.bundle_seq
             WHERE p.name = ?1 AND p.kind = ?2 AND (?3 IS NULL OR b.version = ?3)
             ORDER BY b.version DESC, b.seq DESC LIMIT 1",
        )?
        .query_row(params![artifact, DEPLOYABLE_KIND, version], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((kind, size, sha256, version, bundle_id)) = found else {
        let at = version.map(|v| format!("@{v}")).unwrap_or_default();
        return Err(reject(
            RejectCode::NotFound,
            format!("no artifact {artifact}{at} in any imported bundle"),
        ));
    };
    conn.prepare_cached(
        "INSERT INTO deployments (id, artifact, version, kind, sha256, size, bundle_id, group_name,
                                  created_at_ms, created_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        id, artifact, version, kind, sha256, size, bundle_id, group, env.at_ms, env.actor
    ])?;
    Ok(Response::Done)
}

pub(crate) fn report_deployment(
    conn: &Connection,
    at_ms: i64,
    deployment_id: &str,
    client_id: &str,
    status: DeploymentStatus,
    detail: &str,
) -> Result<Response, Fail> {
    if detail.len() > MAX_DETAIL_BYTES {
        return Err(invalid(format!(
            "result detail of client {client_id} is {} bytes, at most {MAX_DETAIL_BYTES} allowed",
            detail.len()
        )));
    }
    let client: Option<(bool, String)> = conn
        .prepare_cached("SELECT revoked, groups_json FROM clients WHERE id = ?1")?
        .query_row([client_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let groups: Vec<String> = match client {
        None => {
            return Err(reject(
                RejectCode::NotFound,
                format!("client {client_id} does not exist"),
            ));
        }
        Some((true, _)) => return Err(invalid(format!("client {client_id} is revoked"))),
        Some((false, g)) => serde_json::from_str(&g).unwrap_or_default(),
    };
    let group: Option<String> = conn
        .prepare_cached("SELECT group_name FROM deployments WHERE id = ?1")?
        .query_row([deployment_id], |r| r.get(0))
        .optional()?;
    let Some(group) = group else {
        return Err(reject(
            RejectCode::NotFound,
            format!("deployment {deployment_id} does not exist"),
        ));
    };
    if group != ALL_CLIENTS && !groups.contains(&group) {
        return Err(invalid(format!(
            "deployment {deployment_id} targets group {group}, which client {client_id} is not in"
        )));
    }
    conn.prepare_cached(
        "INSERT INTO deployment_results (deployment_id, client_id, status, detail, at_ms, attempts)
         VALUES (?1, ?2, ?3, ?4, ?5, 1)
         ON CONFLICT (deployment_id, client_id) DO UPDATE SET status = excluded.status,
             detail = excluded.detail, at_ms = excluded.at_ms, attempts = attempts + 1",
    )?
    .execute(params![
        deployment_id,
        client_id,
        status.as_str(),
        detail,
        at_ms
    ])?;
    Ok(Response::Done)
}

pub(crate) fn renew_client_cert(
    conn: &Connection,
    client_id: &str,
    cert_serial: &str,
) -> Result<Response, Fail> {
    check_id("certificate serial", cert_serial).map_err(invalid)?;
    let revoked: Option<bool> = conn
        .prepare_cached("SELECT revoked FROM clients WHERE id = ?1")?
        .query_row([client_id], |r| r.get(0))
        .optional()?;
    match revoked {
        None => Err(reject(
            RejectCode::NotFound,
            format!("client {client_id} does not exist"),
        )),
        Some(true) => Err(invalid(format!("client {client_id} is revoked"))),
        Some(false) => {
            conn.prepare_cached("UPDATE clients SET cert_serial = ?2 WHERE id = ?1")?
                .execute(params![client_id, cert_serial])?;
            Ok(Response::Done)
        }
    }
}

/// `RotateClientCert`: the current serial must be `old_serial`, the client enrolled and not
/// revoked, and its last renewal at least `RENEWAL_INTERVAL_MS` ago.
pub(crate) fn rotate_client_cert(
    conn: &Connection,
    at_ms: i64,
    client_id: &str,
    (old_serial, new_serial): (&str, &str),
    new_key_sha256: &str,
) -> Result<Response, Fail> {
    check_id("certificate serial", new_serial).map_err(invalid)?;
    let key_sha = normalize_sha256("key sha256", new_key_sha256).map_err(invalid)?;
    let row: Option<(bool, String, Option<i64>)> = conn
        .prepare_cached("SELECT revoked, cert_serial, renewed_at_ms FROM clients WHERE id = ?1")?
        .query_row([client_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((revoked, current, renewed_at)) = row else {
        return Err(reject(
            RejectCode::NotFound,
            format!("client {client_id} does not exist"),
        ));
    };
    if revoked {
        return Err(invalid(format!("client {client_id} is revoked")));
    }
    if current != old_serial {
        return Err(invalid(format!(
            "certificate {old_serial} is not client {client_id}'s current certificate"
        )));
    }
    if let Some(t) = renewed_at
        && at_ms < t.saturating_add(RENEWAL_INTERVAL_MS)
    {
        return Err(invalid(format!(
            "client {client_id} renewed its certificate at {t}; the next renewal is allowed from {}",
            t.saturating_add(RENEWAL_INTERVAL_MS)
        )));
    }
    conn.prepare_cached(
        "UPDATE clients SET cert_serial = ?2, prev_serial = ?3, prev_serial_until_ms = ?4,
                            renewed_at_ms = ?5, cert_key_sha256 = ?6 WHERE id = ?1",
    )?
    .execute(params![
        client_id,
        new_serial,
        old_serial,
        at_ms.saturating_add(RETIRED_SERIAL_GRACE_MS),
        at_ms,
        key_sha
    ])?;
    Ok(Response::Done)
}

/// `ConfirmClientCert`: the client used `serial`, its current certificate; the retired one
/// ends now.
pub(crate) fn confirm_client_cert(
    conn: &Connection,
    at_ms: i64,
    client_id: &str,
    serial: &str,
) -> Result<Response, Fail> {
    let current: Option<String> = conn
        .prepare_cached("SELECT cert_serial FROM clients WHERE id = ?1")?
        .query_row([client_id], |r| r.get(0))
        .optional()?;
    match current {
        None => Err(reject(
            RejectCode::NotFound,
            format!("client {client_id} does not exist"),
        )),
        Some(c) if c != serial => Err(invalid(format!(
            "certificate {serial} is not client {client_id}'s current certificate"
        ))),
        Some(_) => {
            conn.prepare_cached(
                "UPDATE clients SET prev_serial_until_ms = MIN(prev_serial_until_ms, ?2)
                 WHERE id = ?1 AND prev_serial IS NOT NULL",
            )?
            .execute(params![client_id, at_ms])?;
            Ok(Response::Done)
        }
    }
}

const DEPLOYMENT_SELECT: &str = "SELECT id, artifact, version, kind, sha256, size, bundle_id,
    group_name, created_at_ms, created_by FROM deployments";
const RESULT_SELECT: &str =
    "SELECT deployment_id, client_id, status, detail, at_ms, attempts FROM deployment_results";

fn deployment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeploymentRecord> {
    Ok(DeploymentRecord {
        id: r.get(0)?,
        artifact: r.get(1)?,
        version: u64_col(r.get::<_, i64>(2)?),
        kind: r.get(3)?,
        sha256: r.get(4)?,
        size: u64_col(r.get::<_, i64>(5)?),
        bundle_id: r.get(6)?,
        group: r.get(7)?,
        created_at_ms: r.get(8)?,
        created_by: r.get(9)?,
    })
}

type RawResult = (String, String, String, String, i64, i64);

fn raw_result(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawResult> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn result_from_raw(raw: RawResult) -> Result<DeploymentResult, StorageError> {
    let (deployment_id, client_id, status, detail, at_ms, attempts) = raw;
    let status = DeploymentStatus::parse(&status).ok_or_else(|| {
        StorageError::Corrupt(format!(
            "deployment {deployment_id} result of {client_id}: status {status:?}"
        ))
    })?;
    Ok(DeploymentResult {
        deployment_id,
        client_id,
        status,
        detail,
        at_ms,
        attempts: u64_col(attempts),
    })
}

/// Columns are checked non-negative on the way in.
fn u64_col(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A version, size or count that must fit SQLite's signed 64-bit integers.
fn version_sql(what: &str, v: u64) -> Result<i64, Fail> {
    i64::try_from(v).map_err(|_| invalid(format!("{what} {v} is larger than {}", i64::MAX)))
}

fn current_trust_version(conn: &Connection) -> Result<Option<i64>, rusqlite::Error> {
    conn.prepare_cached("SELECT version FROM bundle_trust")?
        .query_row([], |r| r.get(0))
        .optional()
}

fn time_floor(conn: &Connection) -> Result<i64, rusqlite::Error> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'bundle_time_floor'")?
        .query_row([], |r| r.get::<_, Option<i64>>(0))
        .optional()?
        .flatten()
        .unwrap_or(0))
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

fn all_holders(c: &Connection) -> Result<BTreeMap<String, Vec<u64>>, rusqlite::Error> {
    let mut stmt =
        c.prepare("SELECT sha256, node_id FROM blob_holders ORDER BY sha256, node_id")?;
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (sha, node) = row?;
        out.entry(sha).or_default().push(u64_col(node));
    }
    Ok(out)
}
