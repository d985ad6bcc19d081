//! Storage and Raft records into the wire types the agent and the CLI decode (`crate::wire`),
//! and the few wire values a request carries back into storage's (a scope, a result status),
//! and an audit record into a line of the export file (`shared::audit_file::ExportRecord`).
//! Field by field, so that a rename in `storage/` or `raft/` fails to compile here instead of
//! changing the JSON an older agent reads.

use outpost_raft as raft;
use outpost_storage as st;

use crate::shared::audit_file::ExportRecord;
use crate::wire;

/// A record of the live log as a line of the export file (`shared::audit_file`): what
/// `audit export` streams and what retention keeps in `D/audit-archive/`, alike.
impl From<st::ChainedAuditRecord> for ExportRecord {
    fn from(c: st::ChainedAuditRecord) -> Self {
        let r = c.record;
        ExportRecord {
            seq: r.seq,
            at_ms: r.at_ms,
            actor: r.actor,
            action: r.action,
            target: r.target,
            detail: r.detail,
            outcome: r.outcome,
            prev_hash: c.prev_hash,
            hash: r.hash,
        }
    }
}

impl From<raft::NodeStatus> for wire::NodeStatus {
    fn from(s: raft::NodeStatus) -> Self {
        wire::NodeStatus {
            node_id: s.node_id,
            leader_id: s.leader_id,
            term: s.term,
            state: s.state,
            applied_index: s.applied_index,
            last_log_index: s.last_log_index,
            snapshot_index: s.snapshot_index,
            members: s.members.into_iter().map(Into::into).collect(),
            fatal: s.fatal,
            fast_elections: s.fast_elections,
            fast_election_term: s.fast_election_term,
            peer_port: s.peer_port.into(),
        }
    }
}

impl From<raft::MemberStatus> for wire::MemberStatus {
    fn from(m: raft::MemberStatus) -> Self {
        wire::MemberStatus {
            id: m.id,
            name: m.name,
            voter: m.voter,
            api_addr: m.api_addr,
            peer_addr: m.peer_addr,
            matched_index: m.matched_index,
        }
    }
}

impl From<raft::peer_limits::PeerPortStats> for wire::PeerPortStats {
    fn from(p: raft::peer_limits::PeerPortStats) -> Self {
        wire::PeerPortStats {
            absurd_term: p.absurd_term,
            removed: p.removed,
            not_member: p.not_member,
            pre_handshake_full: p.pre_handshake_full,
            node_full: p.node_full,
            taken_over: p.taken_over,
            idle_closed: p.idle_closed,
            frame_refused: p.frame_refused,
            handshake_failed: p.handshake_failed,
        }
    }
}

impl From<st::NodeRole> for wire::NodeRole {
    fn from(r: st::NodeRole) -> Self {
        match r {
            st::NodeRole::Joining => wire::NodeRole::Joining,
            st::NodeRole::Learner => wire::NodeRole::Learner,
            st::NodeRole::Voter => wire::NodeRole::Voter,
            st::NodeRole::Removed => wire::NodeRole::Removed,
        }
    }
}

impl From<st::NodeRecord> for wire::NodeRecord {
    fn from(n: st::NodeRecord) -> Self {
        wire::NodeRecord {
            id: n.id,
            name: n.name,
            api_addr: n.api_addr,
            peer_addr: n.peer_addr,
            role: n.role.into(),
            version: n.version,
            joined_at_ms: n.joined_at_ms,
            binary_sha256: n.binary_sha256,
        }
    }
}

impl From<st::TokenKind> for wire::TokenKind {
    fn from(k: st::TokenKind) -> Self {
        match k {
            st::TokenKind::Node => wire::TokenKind::Node,
            st::TokenKind::Client => wire::TokenKind::Client,
        }
    }
}

impl From<st::TokenRecord> for wire::TokenRecord {
    fn from(t: st::TokenRecord) -> Self {
        wire::TokenRecord {
            id: t.id,
            kind: t.kind.into(),
            expires_at_ms: t.expires_at_ms,
            uses_left: t.uses_left,
            groups: t.groups,
            revoked: t.revoked,
            created_at_ms: t.created_at_ms,
        }
    }
}

impl From<st::Scope> for wire::Scope {
    fn from(s: st::Scope) -> Self {
        match s {
            st::Scope::Global => wire::Scope::Global,
            st::Scope::Group(g) => wire::Scope::Group(g),
            st::Scope::Client(c) => wire::Scope::Client(c),
        }
    }
}

impl From<wire::Scope> for st::Scope {
    fn from(s: wire::Scope) -> Self {
        match s {
            wire::Scope::Global => st::Scope::Global,
            wire::Scope::Group(g) => st::Scope::Group(g),
            wire::Scope::Client(c) => st::Scope::Client(c),
        }
    }
}

impl From<st::ConfigEntry> for wire::ConfigEntry {
    fn from(e: st::ConfigEntry) -> Self {
        wire::ConfigEntry {
            scope: e.scope.into(),
            key: e.key,
            value: e.value,
            version: e.version,
            updated_at_ms: e.updated_at_ms,
            updated_by: e.updated_by,
        }
    }
}

impl From<st::ClientRecord> for wire::ClientRecord {
    fn from(c: st::ClientRecord) -> Self {
        wire::ClientRecord {
            id: c.id,
            hostname: c.hostname,
            groups: c.groups,
            cert_serial: c.cert_serial,
            enrolled_at_ms: c.enrolled_at_ms,
            revoked: c.revoked,
            last_seen: c.last_seen,
            last_seen_node: c.last_seen_node,
            labels: c.labels,
            failing: c.failing,
        }
    }
}

impl From<st::DeploymentRecord> for wire::DeploymentRecord {
    fn from(d: st::DeploymentRecord) -> Self {
        wire::DeploymentRecord {
            id: d.id,
            artifact: d.artifact,
            version: d.version,
            kind: d.kind,
            sha256: d.sha256,
            size: d.size,
            bundle_id: d.bundle_id,
            group: d.group,
            created_at_ms: d.created_at_ms,
            created_by: d.created_by,
        }
    }
}

impl From<st::DeploymentStatus> for wire::DeploymentStatus {
    fn from(s: st::DeploymentStatus) -> Self {
        match s {
            st::DeploymentStatus::Installed => wire::DeploymentStatus::Installed,
            st::DeploymentStatus::Failed => wire::DeploymentStatus::Failed,
        }
    }
}

impl From<wire::DeploymentStatus> for st::DeploymentStatus {
    fn from(s: wire::DeploymentStatus) -> Self {
        match s {
            wire::DeploymentStatus::Installed => st::DeploymentStatus::Installed,
            wire::DeploymentStatus::Failed => st::DeploymentStatus::Failed,
        }
    }
}

impl From<st::DeploymentResult> for wire::DeploymentResult {
    fn from(r: st::DeploymentResult) -> Self {
        wire::DeploymentResult {
            deployment_id: r.deployment_id,
            client_id: r.client_id,
            status: r.status.into(),
            detail: r.detail,
            at_ms: r.at_ms,
            attempts: r.attempts,
        }
    }
}

impl From<st::Assignment> for wire::Assignment {
    fn from(a: st::Assignment) -> Self {
        wire::Assignment {
            deployment: a.deployment.into(),
            result: a.result.map(Into::into),
        }
    }
}

impl From<st::InventoryRecord> for wire::InventoryRecord {
    fn from(i: st::InventoryRecord) -> Self {
        wire::InventoryRecord {
            client_id: i.client_id,
            facts: i.facts,
            facts_sha256: i.facts_sha256,
            updated_at_ms: i.updated_at_ms,
        }
    }
}

impl From<st::InventoryChange> for wire::InventoryChange {
    fn from(c: st::InventoryChange) -> Self {
        wire::InventoryChange {
            client_id: c.client_id,
            at_ms: c.at_ms,
            facts_sha256: c.facts_sha256,
            changed: c.changed,
        }
    }
}

impl From<st::AuditRecord> for wire::AuditRecord {
    fn from(r: st::AuditRecord) -> Self {
        wire::AuditRecord {
            seq: r.seq,
            at_ms: r.at_ms,
            actor: r.actor,
            action: r.action,
            target: r.target,
            detail: r.detail,
            outcome: r.outcome,
            hash: r.hash,
        }
    }
}

impl From<st::AuditCheck> for wire::AuditCheck {
    fn from(c: st::AuditCheck) -> Self {
        match c {
            st::AuditCheck::Intact { records } => wire::AuditCheck::Intact { records },
            st::AuditCheck::Broken { seq } => wire::AuditCheck::Broken { seq },
        }
    }
}

impl From<st::AuditChain> for wire::AuditChain {
    fn from(c: st::AuditChain) -> Self {
        wire::AuditChain {
            check: c.check.into(),
            at_seq: c.at_seq,
            hash: c.hash,
            base: c.base.map(Into::into),
            verified: c.verified.map(|m| wire::AuditMark {
                seq: m.seq,
                hash: m.hash,
            }),
            walked: c.walked,
            incremental: c.incremental,
        }
    }
}

impl From<st::AuditCheckpoint> for wire::AuditCheckpoint {
    fn from(c: st::AuditCheckpoint) -> Self {
        wire::AuditCheckpoint {
            seq: c.seq,
            hash: c.hash,
            record_at_ms: c.record_at_ms,
            compacted_at_ms: c.compacted_at_ms,
            removed: c.removed,
        }
    }
}

impl From<st::BundleType> for wire::BundleType {
    fn from(t: st::BundleType) -> Self {
        match t {
            st::BundleType::Content => wire::BundleType::Content,
            st::BundleType::Trust => wire::BundleType::Trust,
        }
    }
}

impl From<st::PayloadHolding> for wire::PayloadHolding {
    fn from(p: st::PayloadHolding) -> Self {
        wire::PayloadHolding {
            name: p.name,
            kind: p.kind,
            size: p.size,
            sha256: p.sha256,
            held_by: p.held_by,
        }
    }
}

impl From<st::BundleRecord> for wire::BundleRecord {
    fn from(b: st::BundleRecord) -> Self {
        wire::BundleRecord {
            id: b.id,
            manifest_sha256: b.manifest_sha256,
            bundle_type: b.bundle_type.into(),
            channel: b.channel,
            version: b.version,
            created: b.created,
            expires: b.expires,
            signers: b.signers,
            imported_at_ms: b.imported_at_ms,
            imported_by: b.imported_by,
            node_id: b.node_id,
            payloads: b.payloads.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<st::RollRecord> for wire::RollRecord {
    fn from(r: st::RollRecord) -> Self {
        wire::RollRecord {
            bundle_id: r.bundle_id,
            name: r.name,
            sha256: r.sha256,
            size: r.size,
            state: r.state,
            node: r.node,
            reason: r.reason,
            started_at_ms: r.started_at_ms,
            updated_at_ms: r.updated_at_ms,
        }
    }
}

impl From<st::Selector> for wire::SelectorArgs {
    fn from(s: st::Selector) -> Self {
        wire::SelectorArgs {
            groups: s.groups,
            labels: s.labels,
            facts: s
                .facts
                .into_iter()
                .map(|(path, value)| format!("{path}={value}"))
                .collect(),
            clients: s.clients,
            exclude_labels: s.exclude_labels,
            exclude_clients: s.exclude_clients,
        }
    }
}

impl From<st::Plan> for wire::PlanView {
    fn from(p: st::Plan) -> Self {
        wire::PlanView {
            count: p.count,
            phases: p
                .phases
                .into_iter()
                .map(|ph| wire::PlanPhaseView {
                    percent: ph.percent,
                    clients: ph.clients,
                })
                .collect(),
            unseen: p.unseen,
        }
    }
}

impl From<st::PhaseCounts> for wire::PhaseView {
    fn from(p: st::PhaseCounts) -> Self {
        wire::PhaseView {
            percent: p.percent,
            clients: p.clients,
            installed: p.installed,
            failed: p.failed,
            pending: p.pending,
            outside_window: p.outside_window,
            waiting: p.waiting,
            removed: p.removed,
            remove_failed: p.remove_failed,
        }
    }
}

impl From<st::ClientProgress> for wire::ClientProgressView {
    fn from(c: st::ClientProgress) -> Self {
        wire::ClientProgressView {
            id: c.id,
            phase: c.phase,
            status: c.status,
            detail: c.detail,
            at_ms: c.at_ms,
        }
    }
}

/// Statuses of a targeted client that has reported nothing yet: `pending` as the status view
/// always listed them.
const UNREPORTED: [&str; 3] = ["pending", "outside-window", "waiting"];

/// `GET /v1/deployments/{id}`: the results and the clients that have not reported (as
/// before), then the rollout: state, phase (1-based), counts per phase, each client.
pub(crate) fn status_view(
    s: st::RolloutStatus,
    results: Vec<st::DeploymentResult>,
) -> wire::DeploymentStatusView {
    let r = s.rollout;
    let pending = s
        .clients
        .iter()
        .filter(|c| UNREPORTED.contains(&c.status.as_str()))
        .map(|c| c.id.clone())
        .collect();
    wire::DeploymentStatusView {
        deployment: s.deployment.into(),
        results: wire_list(results),
        pending,
        state: r.state.as_str().to_string(),
        phase: r.phase.saturating_add(1),
        phases: wire_list(s.phases),
        clients: wire_list(s.clients),
        reason: r.reason,
        approved_by: r.approved_by,
        windows: r.windows,
        window_open: s.window_open,
        selector: r.selector.into(),
        soak_ms: r.soak_ms,
        max_failures: r.max_failures.to_string(),
        allowed_failures: r.allowed_failures,
        start_at_ms: r.start_at_ms,
        uninstall: r.uninstall,
    }
}

/// Converts every item of a list (`Json(wire_list(rows))`).
pub(crate) fn wire_list<S, W: From<S>>(rows: Vec<S>) -> Vec<W> {
    rows.into_iter().map(W::from).collect()
}

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use serde_json::{Value, json};

    use super::*;

    /// The JSON of a storage or Raft value and of its wire conversion, side by side.
    fn both<S: Serialize + Clone, W: From<S> + Serialize>(s: &S) -> (Value, Value) {
        let stored = serde_json::to_value(s).expect("storage value encodes");
        let sent = serde_json::to_value(W::from(s.clone())).expect("wire value encodes");
        (stored, sent)
    }

    fn same<S: Serialize + Clone, W: From<S> + Serialize>(name: &str, s: S) {
        let (stored, sent) = both::<S, W>(&s);
        assert_eq!(stored, sent, "{name}: the wire JSON differs from storage's");
        // Field order too: the same text, not only the same object.
        assert_eq!(
            serde_json::to_string(&s).expect("encodes"),
            serde_json::to_string(&W::from(s)).expect("encodes"),
            "{name}: field order differs"
        );
    }

    /// The caps the agent measures its report against are the ones the node enforces.
    #[test]
    fn report_caps_are_storages() {
        assert_eq!(wire::REPORT_MAX_FACTS_BYTES, st::REPORT_MAX_FACTS_BYTES);
        assert_eq!(wire::REPORT_MAX_FACTS, st::REPORT_MAX_FACTS);
    }

    fn deployment() -> st::DeploymentRecord {
        st::DeploymentRecord {
            id: "d-1".into(),
            artifact: "hello".into(),
            version: 3,
            kind: "artifact".into(),
            sha256: "ab".repeat(32),
            size: 12,
            bundle_id: "b".into(),
            group: "lab".into(),
            created_at_ms: 5,
            created_by: "admin:x".into(),
        }
    }

    /// Every variant of every enum, and every record, encodes as storage's does (the fixtures
    /// of `tests/wire_compat.rs` hold only the variants a capture happened to see).
    #[test]
    fn conversions_keep_the_json_of_every_variant() {
        for scope in [
            st::Scope::Global,
            st::Scope::Group("lab".into()),
            st::Scope::Client("c-1".into()),
        ] {
            same::<_, wire::Scope>("scope", scope.clone());
            let back: st::Scope = wire::Scope::from(scope.clone()).into();
            assert_eq!(back, scope);
            same::<_, wire::ConfigEntry>(
                "config entry",
                st::ConfigEntry {
                    scope,
                    key: "k".into(),
                    value: "v".into(),
                    version: 2,
                    updated_at_ms: 3,
                    updated_by: "admin:x".into(),
                },
            );
        }
        for status in [
            st::DeploymentStatus::Installed,
            st::DeploymentStatus::Failed,
        ] {
            same::<_, wire::DeploymentStatus>("deployment status", status);
            let back: st::DeploymentStatus = wire::DeploymentStatus::from(status).into();
            assert_eq!(back, status);
            assert_eq!(
                wire::DeploymentStatus::from(status).as_str(),
                status.as_str()
            );
            let result = st::DeploymentResult {
                deployment_id: "d-1".into(),
                client_id: "c-1".into(),
                status,
                detail: "tail".into(),
                at_ms: 9,
                attempts: 2,
            };
            same::<_, wire::Assignment>(
                "assignment",
                st::Assignment {
                    deployment: deployment(),
                    result: Some(result),
                },
            );
        }
        same::<_, wire::Assignment>(
            "assignment without result",
            st::Assignment {
                deployment: deployment(),
                result: None,
            },
        );
        for role in [
            st::NodeRole::Joining,
            st::NodeRole::Learner,
            st::NodeRole::Voter,
            st::NodeRole::Removed,
        ] {
            same::<_, wire::NodeRecord>(
                "node",
                st::NodeRecord {
                    id: 2,
                    name: "n2".into(),
                    api_addr: "127.0.0.1:1".into(),
                    peer_addr: "127.0.0.1:2".into(),
                    role,
                    version: "0.1.0".into(),
                    joined_at_ms: 4,
                    binary_sha256: String::new(),
                },
            );
        }
        for kind in [st::TokenKind::Node, st::TokenKind::Client] {
            assert_eq!(wire::TokenKind::from(kind).as_str(), kind.as_str());
            same::<_, wire::TokenRecord>(
                "token",
                st::TokenRecord {
                    id: "t".into(),
                    kind,
                    expires_at_ms: 1,
                    uses_left: None,
                    groups: vec!["lab".into()],
                    revoked: false,
                    created_at_ms: 0,
                },
            );
        }
        for check in [
            st::AuditCheck::Intact { records: 4 },
            st::AuditCheck::Broken { seq: 3 },
        ] {
            same::<_, wire::AuditChain>(
                "audit chain",
                st::AuditChain {
                    check,
                    at_seq: 4,
                    hash: Some("h".into()),
                    base: Some(st::AuditCheckpoint {
                        seq: 2,
                        hash: "b".into(),
                        record_at_ms: 5,
                        compacted_at_ms: 6,
                        removed: 2,
                    }),
                    verified: Some(st::AuditMark {
                        seq: 4,
                        hash: "h".into(),
                    }),
                    walked: 2,
                    incremental: true,
                },
            );
        }
        for bundle_type in [st::BundleType::Content, st::BundleType::Trust] {
            assert_eq!(
                wire::BundleType::from(bundle_type).as_str(),
                bundle_type.as_str()
            );
            same::<_, wire::BundleRecord>(
                "bundle",
                st::BundleRecord {
                    id: "b".into(),
                    manifest_sha256: "m".into(),
                    bundle_type,
                    channel: None,
                    version: 1,
                    created: 2,
                    expires: 3,
                    signers: vec!["k".into()],
                    imported_at_ms: 4,
                    imported_by: "admin:x".into(),
                    node_id: 1,
                    payloads: vec![st::PayloadHolding {
                        name: "p".into(),
                        kind: "config".into(),
                        size: 1,
                        sha256: "s".into(),
                        held_by: vec![1, 2],
                    }],
                },
            );
        }
        same::<_, wire::RollRecord>(
            "roll",
            st::RollRecord {
                bundle_id: "b".into(),
                name: "outpost".into(),
                sha256: "s".into(),
                size: 1,
                state: "running".into(),
                node: Some(2),
                reason: String::new(),
                started_at_ms: 1,
                updated_at_ms: 2,
            },
        );
        same::<_, wire::ClientRecord>(
            "client",
            st::ClientRecord {
                id: "c-1".into(),
                hostname: "h".into(),
                groups: vec![],
                cert_serial: "01".into(),
                enrolled_at_ms: 1,
                revoked: true,
                last_seen: Some(2),
                last_seen_node: Some(3),
                labels: vec![],
                failing: vec!["cmd.flag".into()],
            },
        );
        same::<_, wire::InventoryRecord>(
            "inventory",
            st::InventoryRecord {
                client_id: "c-1".into(),
                facts: json!({"os": {"name": "x"}, "packages": [1, 2]}),
                facts_sha256: "s".into(),
                updated_at_ms: 1,
            },
        );
        same::<_, wire::InventoryChange>(
            "inventory change",
            st::InventoryChange {
                client_id: "c-1".into(),
                at_ms: 1,
                facts_sha256: "s".into(),
                changed: vec!["os".into()],
            },
        );
        same::<_, wire::AuditRecord>(
            "audit record",
            st::AuditRecord {
                seq: 1,
                at_ms: 2,
                actor: "a".into(),
                action: "b".into(),
                target: "c".into(),
                detail: "d".into(),
                outcome: "ok".into(),
                hash: "h".into(),
            },
        );
    }

    /// The Raft status with every optional field set encodes as the Raft layer's does.
    #[test]
    fn node_status_keeps_the_raft_json() {
        let s = raft::NodeStatus {
            node_id: 1,
            leader_id: Some(2),
            term: 3,
            state: "Follower".into(),
            applied_index: 4,
            last_log_index: 5,
            snapshot_index: Some(6),
            members: vec![raft::MemberStatus {
                id: 2,
                name: "n2".into(),
                voter: true,
                api_addr: "a".into(),
                peer_addr: "p".into(),
                matched_index: Some(5),
            }],
            fatal: Some("stopped".into()),
            fast_elections: 7,
            fast_election_term: Some(3),
            peer_port: raft::peer_limits::PeerPortStats {
                absurd_term: 1,
                removed: 2,
                not_member: 3,
                pre_handshake_full: 4,
                node_full: 5,
                taken_over: 6,
                idle_closed: 7,
                frame_refused: 8,
                handshake_failed: 9,
            },
        };
        same::<_, wire::NodeStatus>("node status", s);
    }

    /// An export line recomputes to its record's hash from its own fields: a field copied
    /// into the wrong place (actor for action, prev_hash for hash) breaks the offline check.
    #[test]
    fn an_export_record_keeps_the_chain() {
        let prev = "ab".repeat(32);
        let fields = st::AuditFields {
            seq: 7,
            at_ms: 1_700_000_000_123,
            actor: "admin:ops",
            action: "config.set",
            target: "global/k",
            detail: "v=1",
            outcome: "ok",
        };
        let hash = st::audit_hash(&prev, &fields).expect("a hash from a hex prev_hash");
        let record = st::AuditRecord {
            seq: fields.seq,
            at_ms: fields.at_ms,
            actor: fields.actor.into(),
            action: fields.action.into(),
            target: fields.target.into(),
            detail: fields.detail.into(),
            outcome: fields.outcome.into(),
            hash: hash.clone(),
        };
        let line = ExportRecord::from(st::ChainedAuditRecord {
            record,
            prev_hash: prev.clone(),
        });
        assert_eq!((line.seq, line.at_ms), (7, 1_700_000_000_123));
        assert_eq!(line.prev_hash, prev);
        assert_eq!(line.hash, hash);
        let again = st::audit_hash(
            &line.prev_hash,
            &st::AuditFields {
                seq: line.seq,
                at_ms: line.at_ms,
                actor: &line.actor,
                action: &line.action,
                target: &line.target,
                detail: &line.detail,
                outcome: &line.outcome,
            },
        );
        assert_eq!(again.as_deref(), Some(hash.as_str()));
    }
}
