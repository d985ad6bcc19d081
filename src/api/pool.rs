//! The connection pools of the API port: connections held per source, oldest first, with the
//! caps and the take-over rule of `limits` (pure bookkeeping, no sockets).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolKind {
    Anonymous,
    Authenticated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    Total,
    PerSource,
}

/// Connections held per source, oldest first.
pub(crate) struct Pool {
    pub(crate) max_total: usize,
    pub(crate) max_per_source: usize,
    /// When full, a source holding fewer than the biggest holder takes over that holder's
    /// oldest slot (max-min fairness) instead of being refused.
    pub(crate) take_over: bool,
    pub(crate) count: usize,
    pub(crate) next_id: u64,
    pub(crate) sources: HashMap<IpAddr, Vec<(u64, Arc<Notify>)>>,
}

impl Pool {
    pub(crate) fn new(max_total: usize, max_per_source: usize, take_over: bool) -> Pool {
        Pool {
            max_total,
            max_per_source,
            take_over,
            count: 0,
            next_id: 0,
            sources: HashMap::new(),
        }
    }

    /// `Ok(((id, kick), victim))`: admitted; `victim` must be told to close.
    #[allow(clippy::type_complexity)]
    pub(crate) fn admit(
        &mut self,
        key: IpAddr,
    ) -> Result<((u64, Arc<Notify>), Option<Arc<Notify>>), Full> {
        let held = self.held(key);
        if held >= self.max_per_source {
            return Err(Full::PerSource);
        }
        let mut victim = None;
        if self.count >= self.max_total {
            if !self.take_over {
                return Err(Full::Total);
            }
            // The biggest holder; among equals the one whose oldest slot is oldest.
            let biggest = self
                .sources
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .max_by(|(_, a), (_, b)| a.len().cmp(&b.len()).then(b[0].0.cmp(&a[0].0)))
                .map(|(k, v)| (*k, v.len()));
            match biggest {
                Some((big, n)) if n > held => {
                    let slots = self.sources.get_mut(&big).ok_or(Full::Total)?;
                    let (_, kick) = slots.remove(0);
                    if slots.is_empty() {
                        self.sources.remove(&big);
                    }
                    self.count -= 1;
                    victim = Some(kick);
                }
                _ => return Err(Full::Total),
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let kick = Arc::new(Notify::new());
        self.sources
            .entry(key)
            .or_default()
            .push((id, kick.clone()));
        self.count += 1;
        Ok(((id, kick), victim))
    }

    /// Gives a slot back; a slot already taken over is no longer there.
    pub(crate) fn release(&mut self, key: IpAddr, id: u64) {
        if let Some(slots) = self.sources.get_mut(&key)
            && let Some(i) = slots.iter().position(|(s, _)| *s == id)
        {
            slots.remove(i);
            self.count -= 1;
            if slots.is_empty() {
                self.sources.remove(&key);
            }
        }
    }

    pub(crate) fn held(&self, key: IpAddr) -> usize {
        self.sources.get(&key).map_or(0, Vec::len)
    }
}
