//! The hash-chained audit log: read in pages (`/v1/audit`), checked (`/v1/audit/verify`,
//! incremental from this node's verified mark unless `full=true`), its base
//! (`/v1/audit/checkpoint`) and exported with proof (`/v1/audit/export`, the file of
//! `shared::audit_file`, streamed a page at a time from a blocking reader).

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Query, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde::Deserialize;

use std::time::Duration;

use crate::shared::audit_file::{self, ExportHeader, ExportRecord, MAX_EXPORT_RECORDS};

use crate::api::convert::wire_list;
use crate::api::{ApiError, ApiResult, AppState, Caller};

#[derive(Debug, Deserialize)]
pub(crate) struct AuditQuery {
    /// Records after this sequence number, oldest first; absent: the newest `limit` records.
    #[serde(default)]
    after: Option<u64>,
    #[serde(default = "default_limit")]
    limit: u32,
    /// Only this actor's records: a person's name (every role they held, certificate and
    /// console) or a whole actor (`local-admin`, `node:3`, `admin:alice`).
    #[serde(default)]
    actor: Option<String>,
}

fn default_limit() -> u32 {
    100
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct VerifyQuery {
    /// Walk every record from the base, not only those after the verified mark.
    #[serde(default)]
    full: bool,
}

/// This node's chain checked from its verified mark (or from the base when `full` or when
/// the mark is unusable), the mark moved to the last record proven. Shared by `audit verify`
/// and the console's Audit page, so both move the same mark.
pub(crate) async fn check_local(
    st: &AppState,
    want_seq: u64,
    full: bool,
) -> Result<outpost_storage::AuditChain, ApiError> {
    let mark = st.audit_mark.clone();
    st.read(move |r| {
        let chain = r.audit_chain_since(want_seq, mark.get(), full)?;
        if let Some(m) = &chain.verified
            && let Err(e) = mark.advance(m.seq, &m.hash)
        {
            tracing::warn!(error = %e, "the audit mark was not saved; the next check reads more");
        }
        Ok(chain)
    })
    .await
}

/// `audit verify`: this node's chain checked, then every other member asked (over the peer
/// channel) for its own chain checked (from its own mark, or in full) and its hash at our
/// last verified row, compared with ours there. A member that does not answer is listed, not
/// compared.
pub(crate) async fn verify(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<VerifyQuery>,
) -> ApiResult<crate::wire::AuditVerifyView> {
    use outpost_storage::AuditCheck;
    caller.require_admin()?;
    let me = st.node_id;
    let local = check_local(&st, u64::MAX, q.full).await?;
    let compare_at = match local.check {
        AuditCheck::Intact { records } => records,
        AuditCheck::Broken { seq } => seq.saturating_sub(1),
    };
    let members: Vec<u64> = st
        .node
        .status()
        .members
        .iter()
        .map(|m| m.id)
        .filter(|id| *id != me)
        .collect();
    let mut peers = Vec::with_capacity(members.len());
    for id in members {
        let ask = serde_json::to_vec(&crate::peer_app::PeerAsk::AuditChain {
            at_seq: compare_at,
            full: q.full,
        })
        .map_err(ApiError::internal)?;
        let answer = st
            .node
            .app_call(id, ask, Duration::from_secs(30))
            .await
            .map_err(|e| e.to_string())
            .and_then(|b| {
                serde_json::from_slice::<outpost_storage::AuditChain>(&b)
                    .map_err(|e| format!("answer does not parse: {e}"))
            });
        let view = match answer {
            Ok(v) => v,
            Err(error) => {
                peers.push(crate::wire::AuditPeerView {
                    chain: None,
                    node_id: id,
                    agrees: None,
                    error: Some(error),
                });
                continue;
            }
        };
        let at = view.at_seq;
        let ours = st.read(move |r| r.audit_hash_at(at)).await?;
        let agrees = matches!(view.check, AuditCheck::Intact { .. }) && ours == view.hash;
        peers.push(crate::wire::AuditPeerView {
            chain: Some(view.into()),
            node_id: id,
            agrees: Some(agrees),
            error: None,
        });
    }
    let ok = matches!(local.check, AuditCheck::Intact { .. })
        && peers.iter().all(|p| p.agrees != Some(false));
    Ok(Json(crate::wire::AuditVerifyView {
        node_id: me,
        local: local.into(),
        peers,
        ok,
    }))
}

pub(crate) async fn audit(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Vec<crate::wire::AuditRecord>> {
    caller.require_admin()?;
    let limit = q.limit.min(10_000);
    if let Some(actor) = &q.actor {
        crate::api::fields::text("actor", actor, crate::api::fields::MAX_ID_CHARS * 2)?;
    }
    let records = st
        .read(move |r| match (q.actor, q.after) {
            (Some(actor), after) => r.audit_by_actor(&actor, after, limit),
            (None, Some(after)) => r.audit(after, limit),
            (None, None) => {
                let head = r.audit_head()?.map(|(seq, _)| seq).unwrap_or(0);
                r.audit(head.saturating_sub(u64::from(limit)), limit)
            }
        })
        .await?;
    Ok(Json(wire_list(records)))
}

/// `audit checkpoint`: the chain's base, None before any compaction.
pub(crate) async fn checkpoint(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Option<crate::wire::AuditCheckpoint>> {
    caller.require_admin()?;
    let cp = st.read(|r| r.audit_checkpoint()).await?;
    Ok(Json(cp.map(Into::into)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ExportQuery {
    /// The first record (default: the first after the base).
    #[serde(default)]
    from: Option<u64>,
    /// Only the records up to this time (the prefix of the log no later than it).
    #[serde(default)]
    until_ms: Option<i64>,
}

/// Records read per page of an export (the API's stream and retention's archive).
pub const EXPORT_PAGE: u32 = 2_000;

/// `audit export`: the records `from..=last` (last: the newest, or the last no later than
/// `until_ms`) as the export file, streamed page by page. Records already moved out by a
/// compaction cannot be exported: the refusal names the checkpoint. At most
/// `MAX_EXPORT_RECORDS` per file. A compaction during the stream cuts it short; the file's
/// header promises `last_seq`, so the offline check names the missing record.
pub(crate) async fn export(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    export_file(&st, q.from, q.until_ms).await
}

/// The export file's response (the API's and the console's download alike).
pub(crate) async fn export_file(
    st: &AppState,
    from: Option<u64>,
    until: Option<i64>,
) -> Result<Response, ApiError> {
    let (cp, last, info) = st
        .read(move |r| {
            let last = match until {
                Some(u) => r.audit_last_until(u)?,
                None => r.audit_head()?.map(|(seq, _)| seq),
            };
            Ok((r.audit_checkpoint()?, last, r.cluster()?))
        })
        .await?;
    let base_seq = cp.as_ref().map(|c| c.seq).unwrap_or(0);
    let first = from.unwrap_or(base_seq + 1).max(1);
    if first <= base_seq {
        let cp = cp
            .as_ref()
            .map(|c| (c.seq, c.hash.clone(), c.compacted_at_ms));
        let (seq, hash, at) = cp.unwrap_or_default();
        return Err(ApiError::new(
            StatusCode::GONE,
            format!(
                "records 1..={seq} were moved out of the live log by a compaction on {} \
                 (checkpoint {seq}:{hash}); record {first} cannot be exported, export from {} on",
                crate::shared::text::format_ms(at),
                seq + 1
            ),
        ));
    }
    let last = match last {
        Some(l) if l >= first => l,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no audit record from {first}{} on this node",
                    until
                        .map(|u| format!(" up to {}", crate::shared::text::format_ms(u)))
                        .unwrap_or_default()
                ),
            ));
        }
    };
    if last - first + 1 > MAX_EXPORT_RECORDS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "records {first}..={last} are {} records; one export holds at most \
                 {MAX_EXPORT_RECORDS} (export in parts with --from and --until)",
                last - first + 1
            ),
        ));
    }
    let reader = st.node.reader();
    let page = {
        let reader = reader.clone();
        tokio::task::spawn_blocking(move || reader.audit_chained(first - 1, last, EXPORT_PAGE))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?
    };
    let base_hash = match page.first() {
        Some(c) if c.record.seq == first => c.prev_hash.clone(),
        _ => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "record {first} is no longer in the live log (a compaction ran); try again"
                ),
            ));
        }
    };
    let (cluster_id, cluster_name) = info
        .map(|i| (i.id, i.name))
        .unwrap_or_else(|| (st.cluster_id.clone(), String::new()));
    let header = ExportHeader {
        format: audit_file::FORMAT.into(),
        version: audit_file::VERSION,
        cluster_id,
        cluster_name,
        node_id: st.node_id,
        first_seq: first,
        last_seq: last,
        base_hash,
        exported_at_ms: outpost_raft::now_ms(),
    };
    let head = audit_file::json_line(&header).map_err(ApiError::internal)?;
    tracing::info!(first, last, "audit export");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || stream_pages(&reader, page, first, last, &tx));
    let body = futures::StreamExt::chain(
        futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(head))]),
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }),
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(body))
        .map_err(ApiError::internal)
}

/// Sends the export's record lines, a page at a time, starting with `page` (already read
/// from `first`), until `last`. Stops when the receiver is gone; ends the stream with an
/// error when a read fails or a record is missing (moved out meanwhile), so the client sees a
/// cut, not an end.
fn stream_pages(
    reader: &outpost_storage::Reader,
    page: Vec<outpost_storage::ChainedAuditRecord>,
    first: u64,
    last: u64,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut body = PageSender {
        tx,
        lines: Vec::new(),
    };
    if let Err(e) = write_records(reader, page, first, last, &mut body) {
        // When the receiver is gone there is nobody left to tell.
        let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
    }
}

/// The response body as `impl Write`: lines gather in memory and each flush (one a page)
/// sends them as one chunk. A receiver that is gone is a broken pipe, which stops the walk.
struct PageSender<'a> {
    tx: &'a tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    lines: Vec<u8>,
}

impl std::io::Write for PageSender<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lines.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.lines.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.lines));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

/// Why the record lines of an export stopped before its last record.
#[derive(Debug, thiserror::Error)]
pub enum WriteRecordsError {
    #[error("audit record {0} is no longer in the live log")]
    Gone(u64),
    #[error("reading audit records after {after}: {source}")]
    Read {
        after: u64,
        source: outpost_storage::StorageError,
    },
    #[error("encoding audit record {seq}: {source}")]
    Encode { seq: u64, source: serde_json::Error },
    #[error(transparent)]
    Write(#[from] std::io::Error),
}

/// Writes the export file's record lines `first..=last` to `out`, starting with `page`
/// (already read from `first`: the caller took the header's base hash from it) and reading
/// the rest `EXPORT_PAGE` at a time, with a flush after each page. Every record must follow
/// the one before: a missing one (moved out by a compaction meanwhile) stops the walk with
/// `Gone`, so neither the stream nor the archive ends as if it were whole. Blocking: the
/// `audit export` stream and retention's archive (`node::archive`) both call it on a
/// blocking thread.
pub fn write_records(
    reader: &outpost_storage::Reader,
    mut page: Vec<outpost_storage::ChainedAuditRecord>,
    first: u64,
    last: u64,
    out: &mut impl std::io::Write,
) -> Result<(), WriteRecordsError> {
    let mut expected = first;
    while expected <= last {
        if page.is_empty() {
            return Err(WriteRecordsError::Gone(expected));
        }
        for c in std::mem::take(&mut page) {
            let seq = c.record.seq;
            if seq != expected {
                return Err(WriteRecordsError::Gone(expected));
            }
            let line = audit_file::json_line(&ExportRecord::from(c))
                .map_err(|source| WriteRecordsError::Encode { seq, source })?;
            out.write_all(&line)?;
            expected = seq + 1;
        }
        out.flush()?;
        if expected <= last {
            let after = expected - 1;
            page = reader
                .audit_chained(after, last, EXPORT_PAGE)
                .map_err(|source| WriteRecordsError::Read { after, source })?;
        }
    }
    Ok(())
}
