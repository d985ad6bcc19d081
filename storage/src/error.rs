//! The crate's error type.

/// Everything that can go wrong in storage. Command rejections are not errors: they are
/// `Outcome`s, decided deterministically and recorded in the audit log.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A command batch was written by a newer release; this node must be upgraded before it
    /// applies anything further (applying would diverge).
    #[error(
        "command format {found} is newer than the supported format {supported}: upgrade this node"
    )]
    NeedsUpgrade { found: u16, supported: u16 },
    #[error("undecodable command batch: {0}")]
    Decode(#[source] bincode::error::DecodeError),
    #[error("database schema version {found} is newer than the supported version {supported}")]
    SchemaTooNew { found: u32, supported: u32 },
    /// What quick_check (or a row that cannot be read back) said, and the path.
    #[error("corrupt database: {0}")]
    Corrupt(String),
    /// What is wrong with the snapshot file.
    #[error("invalid snapshot: {0}")]
    SnapshotInvalid(String),
    #[error("the storage writer thread has stopped")]
    WriterStopped,
}
