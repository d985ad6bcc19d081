//! What `identity_still_valid` last read about an admin's name, a node's id or a client's
//! certificate state, kept until the state changes who may call (storage's identity epoch
//! moves). Every request of an admin or a peer passes that check, and every TLS connection
//! with a certificate passes it once after its handshake (`crate::api::refused_identity`);
//! without this each cost a read on a blocking thread.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use outpost_storage::ClientCertState;

/// Whom an answer is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Admin(String),
    Node(u64),
    Client(String),
}

/// The standing read for an identity: an admin's revocation time (ms) and role, a node's role
/// (None: never joined), or a client's certificate state (None: no such client).
#[derive(Debug, Clone, PartialEq)]
pub enum Standing {
    Admin {
        revoked_at: Option<i64>,
        grant: outpost_storage::Grant,
    },
    Node(Option<outpost_storage::NodeRole>),
    Client(Option<Arc<ClientCertState>>),
}

/// At most this many answers are kept; the map starts again when full (only identities with
/// a certificate of this cluster's CA get here, so it stays small in practice).
const MAX_ENTRIES: usize = 4096;

#[derive(Default)]
pub struct IdentityCache {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    epoch: u64,
    answers: HashMap<Identity, Standing>,
}

impl IdentityCache {
    /// The answer read while the epoch was `epoch`, if the epoch has not moved since.
    pub fn get(&self, epoch: u64, who: &Identity) -> Option<Standing> {
        let e = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (e.epoch == epoch)
            .then(|| e.answers.get(who).cloned())
            .flatten()
    }

    /// Keeps `standing`, read from the state after the epoch was seen to be `epoch`.
    pub fn put(&self, epoch: u64, who: Identity, standing: Standing) {
        let mut e = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if e.epoch != epoch {
            if epoch < e.epoch {
                // Read before a change another request has already seen: not worth keeping.
                return;
            }
            e.epoch = epoch;
            e.answers.clear();
        }
        if e.answers.len() >= MAX_ENTRIES {
            e.answers.clear();
        }
        e.answers.insert(who, standing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_last_until_the_epoch_moves() {
        let c = IdentityCache::default();
        let alice = Identity::Admin("alice".into());
        c.put(
            3,
            alice.clone(),
            Standing::Admin {
                revoked_at: None,
                grant: outpost_storage::Grant::admin(),
            },
        );
        assert_eq!(
            c.get(3, &alice),
            Some(Standing::Admin {
                revoked_at: None,
                grant: outpost_storage::Grant::admin()
            })
        );
        assert_eq!(c.get(3, &Identity::Node(2)), None);
        // The state changed: the old answer is not used, and a late answer read under the
        // old epoch is not kept over a newer one.
        assert_eq!(c.get(4, &alice), None);
        c.put(
            4,
            alice.clone(),
            Standing::Admin {
                revoked_at: Some(9),
                grant: outpost_storage::Grant::admin(),
            },
        );
        c.put(
            3,
            alice.clone(),
            Standing::Admin {
                revoked_at: None,
                grant: outpost_storage::Grant::admin(),
            },
        );
        assert_eq!(
            c.get(4, &alice),
            Some(Standing::Admin {
                revoked_at: Some(9),
                grant: outpost_storage::Grant::admin()
            })
        );
        for id in 0..(MAX_ENTRIES as u64 + 10) {
            c.put(
                4,
                Identity::Node(id),
                Standing::Node(Some(outpost_storage::NodeRole::Voter)),
            );
        }
        assert!(c.inner.lock().unwrap().answers.len() <= MAX_ENTRIES);
    }
}
