//! openraft's own storage test suite, run against our SQLite log store and state machine.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use outpost_raft::log_store::LogStore;
use outpost_raft::state_machine::{Health, StateMachine};
use outpost_raft::types::{StorageError, TypeConfig};
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir()
            .map_err(|e| openraft::StorageIOError::write(openraft::AnyError::new(&e)))?;
        let log = LogStore::open(&dir.path().join("raft.db"))
            .map_err(|e| openraft::StorageIOError::write(openraft::AnyError::new(&e)))?;
        let store = outpost_storage::Store::open(&dir.path().join("state.db"))
            .map_err(|e| openraft::StorageIOError::write(openraft::AnyError::new(&e)))?;
        let sm = StateMachine::new(
            store,
            &dir.path().join("snapshots"),
            Arc::new(Health::default()),
        )
        .map_err(|e| openraft::StorageIOError::write(openraft::AnyError::new(&e)))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft storage suite");
}
