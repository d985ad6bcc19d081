//! outpost-raft: openraft 0.9 wired to SQLite and to an mTLS peer transport.
//!
//! It owns the type config, the SQLite Raft log store, the state-machine adapter over
//! `outpost-storage`, the peer transport (bincode frames over TLS TCP), write batching and
//! forwarding to the leader. openraft's types do not leak past this crate's public API.
