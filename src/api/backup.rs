//! `POST /v1/backup` (admins): a consistent copy of this node's replicated state at one applied
//! entry, as a backup file (`crate::shared::backup`), streamed in the answer, its header signed
//! with the CA key. With a passphrase the CA key is sealed into the header; without one no
//! private key is in the file. [`make`] is the one way a backup is made: the node's scheduled
//! backups (`crate::node::backups`) call it too.

use std::io::{Seek, SeekFrom};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use sha2::{Digest, Sha256};

use crate::api::{ApiError, AppState, Caller};
use crate::shared::backup::{self, BackupHeader, MIN_PASSPHRASE_CHARS};
use crate::wire::BackupRequest;

/// Longest passphrase taken (bytes).
const MAX_PASSPHRASE_BYTES: usize = 1024;

/// How long a backup waits for the leader to confirm this node is current.
const CURRENT_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// One backup at a time per node: each holds a full copy of the state on disk.
static ONE_AT_A_TIME: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

pub(crate) async fn backup(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    axum::Json(req): axum::Json<BackupRequest>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let passphrase = req.passphrase.map(zeroize::Zeroizing::new);
    if let Some(p) = &passphrase
        && (p.chars().count() < MIN_PASSPHRASE_CHARS || p.len() > MAX_PASSPHRASE_BYTES)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the passphrase must be {MIN_PASSPHRASE_CHARS} characters to {MAX_PASSPHRASE_BYTES} bytes"
            ),
        ));
    }
    let made = make(&st, passphrase).await?;
    // Remembered for `outpost doctor` (the age of the last backup), across restarts.
    let own = st.own.clone();
    let now = made.header.created_ms;
    match tokio::task::spawn_blocking(move || own.record_backup(now)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the time of this backup was not recorded"),
        Err(e) => tracing::warn!(error = %e, "the time of this backup was not recorded"),
    }
    let total = made.total_bytes();
    let head = futures::stream::iter([
        Ok::<_, std::io::Error>(axum::body::Bytes::from_static(backup::MAGIC)),
        Ok(axum::body::Bytes::from(made.line)),
    ]);
    let body = futures::StreamExt::chain(head, chunks(tokio::fs::File::from_std(made.state)));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, total)
        .body(Body::from_stream(body))
        .map_err(ApiError::internal)
}

/// A backup made and not yet written anywhere: its header (signed), the header line as
/// written, and the state section in an unlinked temp file positioned at its start. The file
/// is `MAGIC`, `line`, then the state's bytes.
pub(crate) struct Made {
    pub header: BackupHeader,
    pub line: Vec<u8>,
    pub state: std::fs::File,
}

impl Made {
    /// Length of the whole backup file.
    pub fn total_bytes(&self) -> u64 {
        (backup::MAGIC.len() + self.line.len()) as u64 + self.header.state_bytes
    }
}

/// Makes a backup of this node's replicated state: what `POST /v1/backup` streams and what the
/// node's scheduled backups (`crate::node::backups`) write into their directory. First a read
/// index (this node holds every acknowledged write, else the header says it could not
/// confirm), then a consistent copy of the state, its digest, the CA key sealed with
/// `passphrase` if one is given, and the header signed with the CA key. One at a time per
/// node: a second is refused with 409 while one is being made.
pub(crate) async fn make(
    st: &AppState,
    passphrase: Option<zeroize::Zeroizing<String>>,
) -> Result<Made, ApiError> {
    let _permit = ONE_AT_A_TIME.try_acquire().map_err(|_| {
        ApiError::new(
            StatusCode::CONFLICT,
            "a backup is already being made on this node; try again when it is done",
        )
    })?;
    // In the snapshot directory, whose *.tmp files a restarted node removes.
    let tmp = st
        .data_dir
        .join("snapshots")
        .join(format!("backup-{}.tmp", rand::random::<u64>()));
    // First make sure this node holds every write acknowledged before the request (a read
    // index confirmed by a quorum). A node that cannot (quorum lost: the very case a backup
    // may be wanted for) still copies what it applied, and the header says so.
    let current = match st.node.linearizable_barrier(CURRENT_WITHIN).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "backup: this node could not confirm it is current; copying what it applied");
            false
        }
    };
    let copy = st.node.copy_state(&tmp).await.map_err(ApiError::internal)?;
    let (state_bytes, state_sha256, file) = tokio::task::spawn_blocking(move || {
        // Open, then unlink: the bytes live until the caller has written or streamed them,
        // and a broken transfer leaves nothing behind.
        let opened = std::fs::File::open(&tmp);
        let _ = std::fs::remove_file(&tmp);
        let mut file = opened?;
        let mut hasher = Sha256::new();
        let n = std::io::copy(&mut file, &mut hasher)?;
        file.seek(SeekFrom::Start(0))?;
        Ok::<_, std::io::Error>((n, hex::encode(hasher.finalize()), file))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let summary = copy.info.summary;
    let (Some(cluster_id), Some(cluster_name), Some(ca_cert_pem)) = (
        summary.cluster_id,
        summary.cluster_name,
        summary.ca_cert_pem,
    ) else {
        return Err(ApiError::unavailable(
            "this node's state holds no initialised cluster yet",
        ));
    };
    let ca_key = match passphrase {
        None => None,
        Some(p) => {
            let key = st.ca.key_pem();
            let (cid, sha) = (cluster_id.clone(), state_sha256.clone());
            Some(
                tokio::task::spawn_blocking(move || {
                    backup::seal(key.as_bytes(), p.as_str(), &cid, &sha)
                })
                .await
                .map_err(ApiError::internal)?
                .map_err(ApiError::internal)?,
            )
        }
    };
    let now = outpost_raft::now_ms();
    let mut header = BackupHeader {
        format: backup::FORMAT,
        cluster_id,
        cluster_name,
        applied_index: copy.applied.map(|l| l.index).unwrap_or(0),
        applied_term: copy.applied.map(|l| l.leader_id.term).unwrap_or(0),
        created_ms: now,
        created: crate::shared::text::format_ms(now),
        schema_version: outpost_storage::SCHEMA_VERSION,
        outpost_version: env!("CARGO_PKG_VERSION").to_string(),
        node_id: st.node_id,
        current,
        state_bytes,
        state_sha256,
        ca_cert_pem,
        ca_key,
        channels: summary.channels,
        bundle_time_floor: summary.bundle_time_floor,
        clients: summary.clients,
        signature: None,
    };
    // Signed by the cluster (the CA key every node holds): `restore --expect-ca` checks it.
    backup::sign(&mut header, &st.ca).map_err(ApiError::internal)?;
    let line = backup::header_line(&header).map_err(ApiError::internal)?;
    tracing::info!(
        index = header.applied_index,
        bytes = state_bytes,
        sealed_ca_key = header.ca_key.is_some(),
        "backup made"
    );
    Ok(Made {
        header,
        line,
        state: file,
    })
}

/// The file's bytes as a stream of 256 KiB chunks.
fn chunks(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<axum::body::Bytes>> {
    futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(axum::body::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
}
