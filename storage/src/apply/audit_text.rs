//! What the audit row of each command says: pure, and part of the replicated state (the
//! text is hashed into the chain on every node), so changing it is a command-format change.

use sha2::{Digest, Sha256};

use crate::model::{Command, Envelope, NodeRole, Outcome, Response};

/// The audit row's descriptive fields for one envelope and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuditText {
    pub action: &'static str,
    pub target: String,
    pub detail: String,
}

/// Pure: what the audit log says about `env` given its `outcome`. Never contains secrets or
/// configuration values (only their size and hash). Part of the replicated state, so changing
/// it is a command-format change.
pub(crate) fn audit_text(env: &Envelope, outcome: &Outcome) -> AuditText {
    use serde_json::json;
    let (action, target, detail) = match &env.command {
        // A request id changes nothing the audit says: the row is the wrapped command's.
        Command::Once { command, .. } => {
            return audit_text(&super::requests::inner(env, command), outcome);
        }
        // A quiet touch is audited only when refused, and then as the touch it wraps
        // (anything else it wraps is refused and audited as that command).
        Command::Quiet(command) => {
            return audit_text(&super::requests::inner(env, command), outcome);
        }
        Command::CompactHistory {
            audit_through_seq,
            inventory_before_ms,
            results_before_ms,
        } => {
            let mut detail = json!({ "audit_through_seq": audit_through_seq,
                                     "inventory_before_ms": inventory_before_ms,
                                     "results_before_ms": results_before_ms });
            if let (
                Ok(Response::Compacted {
                    audit_removed,
                    checkpoint_seq,
                    checkpoint_hash,
                    inventory_removed,
                    results_removed,
                }),
                Some(map),
            ) = (outcome, detail.as_object_mut())
            {
                for (k, v) in [
                    ("audit_removed", json!(audit_removed)),
                    ("checkpoint_seq", json!(checkpoint_seq)),
                    ("checkpoint_hash", json!(checkpoint_hash)),
                    ("inventory_removed", json!(inventory_removed)),
                    ("results_removed", json!(results_removed)),
                ] {
                    map.insert(k.to_owned(), v);
                }
            }
            ("audit.compact", "audit".to_owned(), detail)
        }
        Command::InitCluster {
            cluster_id, name, ..
        } => (
            "cluster.init",
            format!("cluster:{cluster_id}"),
            json!({ "name": name }),
        ),
        Command::AddNode {
            id,
            name,
            api_addr,
            peer_addr,
            version,
        } => (
            "node.add",
            format!("node:{id}"),
            json!({ "name": name, "api_addr": api_addr, "peer_addr": peer_addr, "version": version }),
        ),
        Command::JoinNode {
            token_id,
            name,
            api_addr,
            peer_addr,
            version,
            ..
        } => {
            let target = match outcome {
                Ok(Response::NodeId(id)) => format!("node:{id}"),
                _ => format!("token:{token_id}"),
            };
            (
                "node.join",
                target,
                json!({ "token": token_id, "name": name, "api_addr": api_addr,
                        "peer_addr": peer_addr, "version": version }),
            )
        }
        Command::UpdateNode {
            id,
            api_addr,
            peer_addr,
            role,
            version,
        } => (
            "node.update",
            format!("node:{id}"),
            json!({ "api_addr": api_addr, "peer_addr": peer_addr,
                    "role": role.map(NodeRole::as_str), "version": version }),
        ),
        Command::RemoveNode { id } => ("node.remove", format!("node:{id}"), json!({})),
        Command::ReformCluster {
            keep,
            ca_cert_pem,
            reason,
        } => (
            "cluster.reform",
            format!("node:{keep}"),
            json!({ "reason": reason, "others_removed": true, "new_ca": ca_cert_pem.is_some() }),
        ),
        Command::ReportBinary {
            node_id,
            version,
            sha256,
        } => (
            "node.binary",
            format!("node:{node_id}"),
            json!({ "version": version, "sha256": sha256 }),
        ),
        Command::StartRoll { bundle_id, sha256 } => (
            "upgrade.start",
            format!("release:{sha256}"),
            json!({ "bundle": bundle_id }),
        ),
        Command::RollNode { node } => (
            "upgrade.node",
            node.map(|n| format!("node:{n}"))
                .unwrap_or_else(|| "none".into()),
            json!({}),
        ),
        Command::EndRoll { reason } => (
            if reason.is_some() {
                "upgrade.stop"
            } else {
                "upgrade.done"
            },
            "roll".to_owned(),
            json!({ "reason": reason }),
        ),
        Command::SetConfig { scope, key, value } => {
            let version = match outcome {
                Ok(Response::ConfigVersion(v)) => Some(*v),
                _ => None,
            };
            (
                "config.set",
                format!("config:{scope}/{key}"),
                json!({ "bytes": value.len(), "value_sha256": hex::encode(Sha256::digest(value)),
                        "version": version }),
            )
        }
        Command::DeleteConfig { scope, key } => {
            ("config.delete", format!("config:{scope}/{key}"), json!({}))
        }
        Command::CreateToken {
            id,
            kind,
            expires_at_ms,
            uses,
            groups,
            ..
        } => (
            "token.create",
            format!("token:{id}"),
            json!({ "kind": kind.as_str(), "expires_at_ms": expires_at_ms, "uses": uses,
                    "groups": groups }),
        ),
        Command::RevokeToken { id } => ("token.revoke", format!("token:{id}"), json!({})),
        Command::EnrollClient {
            token_id,
            client_id,
            hostname,
            cert_serial,
            ..
        } => (
            "client.enroll",
            format!("client:{client_id}"),
            json!({ "token": token_id, "hostname": hostname, "cert_serial": cert_serial }),
        ),
        Command::RevokeClient { client_id } => {
            ("client.revoke", format!("client:{client_id}"), json!({}))
        }
        Command::TouchClients { node_id, seen } => (
            "clients.seen",
            format!("node:{node_id}"),
            json!({ "clients": seen.len() }),
        ),
        Command::ReportInventory {
            client_id,
            facts_json,
        } => (
            "inventory.report",
            format!("client:{client_id}"),
            json!({ "bytes": facts_json.len(), "facts_sha256": hex::encode(Sha256::digest(facts_json)) }),
        ),
        Command::SetBundleTrust {
            version,
            trust_json,
        } => (
            "bundle.trust",
            format!("trust:{version}"),
            json!({ "trust_sha256": hex::encode(Sha256::digest(trust_json)) }),
        ),
        Command::ImportBundle(b) => (
            "bundle.import",
            format!("bundle:{}", b.id),
            json!({
                "type": b.bundle_type.as_str(),
                "channel": b.channel,
                "version": b.version,
                "manifest_sha256": b.manifest_sha256,
                "signers": b.signers,
                "payloads": b.payloads.len(),
                "config_keys": b.config.len(),
                "node": b.node_id,
            }),
        ),
        Command::BlobsHeld { node_id, sha256 } => (
            "blobs.held",
            format!("node:{node_id}"),
            json!({ "blobs": sha256 }),
        ),
        Command::CreateDeployment {
            id,
            artifact,
            version,
            group,
        } => (
            "deployment.create",
            format!("deployment:{id}"),
            json!({ "artifact": artifact, "version": version, "group": group }),
        ),
        Command::CreateReleaseDeployment {
            id,
            release,
            version,
            group,
        } => (
            "deployment.create",
            format!("deployment:{id}"),
            json!({ "release": release, "version": version, "group": group }),
        ),
        Command::ReportDeployment {
            deployment_id,
            client_id,
            status,
            detail,
        } => {
            let mut detail = json!({ "client": client_id, "status": status.as_str(),
                                     "detail_bytes": detail.len() });
            // Only a rollout's brake adds this (format 8): older rows read as they always did.
            if let (Ok(Response::Halted { reason }), Some(map)) = (outcome, detail.as_object_mut())
            {
                map.insert("halted".to_owned(), json!(reason));
            }
            (
                "deployment.report",
                format!("deployment:{deployment_id}"),
                detail,
            )
        }
        Command::RenewClientCert {
            client_id,
            cert_serial,
        } => (
            "client.renew",
            format!("client:{client_id}"),
            json!({ "cert_serial": cert_serial }),
        ),
        Command::ImportSignedBundle(b) => (
            "bundle.import",
            format!("manifest:{}", hex::encode(Sha256::digest(&b.manifest))),
            json!({
                "manifest_bytes": b.manifest.len(),
                "config_payloads": b.config_payloads.len(),
                "node": b.node_id,
            }),
        ),
        Command::RevokeAdmin { name } => ("admin.revoke", format!("admin:{name}"), json!({})),
        Command::SetRole { name, grant } => (
            "role.set",
            format!("person:{name}"),
            json!({ "role": grant.role.as_str(),
                    "scopes": grant.scopes.iter().map(|s| s.to_string()).collect::<Vec<_>>() }),
        ),
        Command::RotateClientCert {
            client_id,
            old_serial,
            new_serial,
            ..
        } => (
            "client.renew",
            format!("client:{client_id}"),
            json!({ "old_serial": old_serial, "cert_serial": new_serial }),
        ),
        Command::ConfirmClientCert { client_id, serial } => (
            "client.renew.confirm",
            format!("client:{client_id}"),
            json!({ "cert_serial": serial }),
        ),
        // Never the password hash, a link's or a session's secret (nor their hashes).
        Command::SetConsoleUser { name, .. } => (
            "console.user.set",
            format!("console-user:{name}"),
            json!({}),
        ),
        Command::RemoveConsoleUser { name } => (
            "console.user.remove",
            format!("console-user:{name}"),
            json!({}),
        ),
        Command::CreateConsoleLogin {
            id,
            user,
            expires_at_ms,
            ..
        } => (
            "console.link.create",
            format!("console-link:{id}"),
            json!({ "user": user, "expires_at_ms": expires_at_ms }),
        ),
        Command::StartConsoleSession {
            id,
            user,
            expires_at_ms,
            proof,
            ..
        } => {
            let (via, link) = match proof {
                crate::model::SessionProof::Link { id, .. } => ("link", Some(id)),
                crate::model::SessionProof::Password { .. } => ("password", None),
            };
            (
                "console.session.start",
                format!("console-session:{id}"),
                json!({ "user": user, "via": via, "link": link, "expires_at_ms": expires_at_ms }),
            )
        }
        Command::EndConsoleSession { id } => (
            "console.session.end",
            format!("console-session:{id}"),
            json!({}),
        ),
        Command::TouchConsoleSessions { node_id, seen } => (
            "console.sessions.seen",
            format!("node:{node_id}"),
            json!({ "sessions": seen.len() }),
        ),
        Command::LockSignIn { key, until_ms } => (
            "console.signin.lock",
            format!("signin:{key}"),
            json!({ "until_ms": until_ms }),
        ),
        Command::LabelClients {
            clients,
            add,
            remove,
        } => (
            "client.label",
            match clients.as_slice() {
                [one] => format!("client:{one}"),
                _ => format!("clients:{}", clients.len()),
            },
            json!({ "clients": clients.iter().take(20).collect::<Vec<_>>(),
                    "count": clients.len(), "add": add, "remove": remove }),
        ),
        Command::CreateRollout(spec) => (
            "deployment.create",
            format!("deployment:{}", spec.id),
            json!({ "kind": spec.kind, "name": spec.name, "version": spec.version,
                    "selector": spec.selector, "phases": spec.phases, "soak_ms": spec.soak_ms,
                    "max_failures": spec.max_failures.to_string(), "windows": spec.windows,
                    "start_at_ms": spec.start_at_ms }),
        ),
        Command::RolloutStep { id, step, reason } => (
            "deployment.step",
            format!("deployment:{id}"),
            json!({ "step": step.to_string(), "reason": reason }),
        ),
        Command::ReportRemoval {
            deployment_id,
            client_id,
            ok,
            detail,
        } => (
            "deployment.removal",
            format!("deployment:{deployment_id}"),
            json!({ "client": client_id, "status": if *ok { "removed" } else { "remove-failed" },
                    "detail_bytes": detail.len() }),
        ),
    };
    // Keys sorted whatever serde_json's features are: the detail is hashed and replicated.
    let detail: std::collections::BTreeMap<String, serde_json::Value> = match detail {
        serde_json::Value::Object(map) => map.into_iter().collect(),
        _ => std::collections::BTreeMap::new(),
    };
    AuditText {
        action,
        target,
        detail: serde_json::to_string(&detail).unwrap_or_default(),
    }
}

/// Pure: the audit outcome column.
pub(crate) fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Ok(_) => "ok".to_owned(),
        Err(rej) => format!("rejected: {rej}"),
    }
}
