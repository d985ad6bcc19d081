//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;

use outpost_storage::{
    Command, Envelope, NodeRole, Outcome, Scope, Store, TokenKind, encode_batch,
};
use sha2::{Digest, Sha256};

pub fn sha(s: &str) -> String {
    hex::encode(Sha256::digest(s))
}

pub fn env(at_ms: i64, command: Command) -> Envelope {
    Envelope {
        at_ms,
        actor: "admin".into(),
        command,
    }
}

pub fn init_batch() -> Vec<Envelope> {
    vec![
        env(
            1,
            Command::InitCluster {
                cluster_id: "c-1".into(),
                name: "plant".into(),
                ca_cert_pem: "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n".into(),
            },
        ),
        env(
            2,
            Command::AddNode {
                id: 1,
                name: "first".into(),
                api_addr: "10.0.0.1:7443".into(),
                peer_addr: "10.0.0.1:7444".into(),
                version: "0.1.0".into(),
            },
        ),
        env(
            3,
            Command::CreateToken {
                id: "nt".into(),
                kind: TokenKind::Node,
                secret_sha256: sha("node-secret"),
                expires_at_ms: 1_000_000,
                uses: Some(5),
                groups: vec![],
            },
        ),
    ]
}

pub fn join(at_ms: i64, name: &str) -> Envelope {
    env(
        at_ms,
        Command::JoinNode {
            token_id: "nt".into(),
            secret_sha256: sha("node-secret"),
            name: name.into(),
            api_addr: format!("{name}:7443"),
            peer_addr: format!("{name}:7444"),
            version: "0.1.0".into(),
        },
    )
}

/// A varied workload: config in all scopes, joins, updates, removals, rejections.
pub fn workload() -> Vec<Vec<u8>> {
    let mut batches = vec![encode_batch(&init_batch())];
    for i in 0..5i64 {
        let t = 100 + i * 10;
        batches.push(encode_batch(&[
            env(
                t,
                Command::SetConfig {
                    scope: Scope::Global,
                    key: format!("k{}", i % 3),
                    value: format!("g{i}"),
                },
            ),
            env(
                t + 1,
                Command::SetConfig {
                    scope: Scope::Group("lab".into()),
                    key: "k1".into(),
                    value: format!("lab{i}"),
                },
            ),
            env(
                t + 2,
                Command::SetConfig {
                    scope: Scope::Client("host-1".into()),
                    key: "k2".into(),
                    value: format!("c{i}"),
                },
            ),
            join(t + 3, &format!("n{i}")),
            env(t + 4, Command::RemoveNode { id: 99 }),
        ]));
    }
    batches.push(encode_batch(&[
        env(
            500,
            Command::UpdateNode {
                id: 2,
                api_addr: None,
                peer_addr: None,
                role: Some(NodeRole::Voter),
                version: Some("0.2.0".into()),
            },
        ),
        env(501, Command::RemoveNode { id: 3 }),
        env(502, Command::RevokeToken { id: "nt".into() }),
        join(503, "late"),
    ]));
    batches
}

/// Every table of the database (and user_version), row by row, as text.
pub fn dump(db: &Path) -> anyhow::Result<Vec<String>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let mut out = vec![format!("user_version {version}")];
    let tables: Vec<String> = {
        let mut stmt =
            conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    anyhow::ensure!(
        tables.len() >= 6,
        "expected the v1 tables, found {tables:?}"
    );
    for t in tables {
        let n = conn.prepare(&format!("SELECT * FROM {t}"))?.column_count();
        let order: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
        let mut stmt = conn.prepare(&format!("SELECT * FROM {t} ORDER BY {}", order.join(", ")))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let mut line = t.clone();
            for i in 0..n {
                line.push_str(&format!("|{:?}", r.get_ref(i)?));
            }
            out.push(line);
        }
    }
    Ok(out)
}

/// Applies one command as `actor` at `at_ms` in its own entry; its outcome.
pub async fn apply_as(
    store: &Store,
    at_ms: i64,
    actor: &str,
    command: Command,
) -> anyhow::Result<Outcome> {
    let env = Envelope {
        at_ms,
        actor: actor.into(),
        command,
    };
    let out = store
        .apply(vec![Some(encode_batch(&[env]))], vec![0])
        .await?;
    out.into_iter()
        .next()
        .flatten()
        .and_then(|v| v.into_iter().next())
        .ok_or_else(|| anyhow::anyhow!("no outcome"))
}
