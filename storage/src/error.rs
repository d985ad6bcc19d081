//! The crate's error type.

/// Everything that can go wrong in storage. Command rejections are not errors: they are
/// `Outcome`s, decided deterministically and recorded in the audit log.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("sqlite: {0}")]
    Sqlite(#[source] rusqlite::Error),
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

impl From<rusqlite::Error> for StorageError {
    /// A row that did not decode into its record (`rows::corrupt`) is `Corrupt`, with the
    /// message that names the row; every other SQLite error is `Sqlite`.
    fn from(e: rusqlite::Error) -> StorageError {
        match e {
            rusqlite::Error::FromSqlConversionFailure(_, _, cause) if cause.is::<CorruptRow>() => {
                StorageError::Corrupt(cause.to_string())
            }
            e => StorageError::Sqlite(e),
        }
    }
}

/// Why a row read back from the database does not fit its record: carried inside
/// `rusqlite::Error::FromSqlConversionFailure` from a row mapper to `From` above.
#[derive(Debug)]
pub(crate) struct CorruptRow(pub(crate) String);

impl std::fmt::Display for CorruptRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CorruptRow {}
