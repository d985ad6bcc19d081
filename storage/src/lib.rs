//! outpost-storage: the replicated state of an Outpost cluster as a SQLite database.
//!
//! It owns the schema and its migrations, the versioned `Command` set, the deterministic
//! `apply`, the queries, and snapshot export/import. It knows nothing of Raft or the network:
//! the Raft layer hands it encoded commands in log order, plus an opaque "applied position"
//! blob that is stored in the same transaction.
