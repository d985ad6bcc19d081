//! Pure rules both sides apply: when a certificate is due for renewal (the node refuses an
//! early renewal, the agent asks in time); the free-space floor of a node's data directory
//! (its writes and its blob fetches stop there). Whether inventory facts match a query is
//! `outpost_storage::rollout::fact_matches`, beside the rollout selectors that use it too.

/// Less than a third of [not_before, not_after] left at `now`. Pure.
pub fn renewal_due(not_before: i64, not_after: i64, now: i64) -> bool {
    let life = (not_after - not_before).max(0);
    not_after - now < life / 3
}

/// The disk floor is this share of the file system (2 %) ...
pub const FLOOR_PERCENT: u64 = 2;
/// ... but never more than this (1 GiB).
pub const FLOOR_MAX_BYTES: u64 = 1 << 30;

/// The floor of a file system of `total_bytes`: min(2 % of it, 1 GiB). Pure.
pub fn floor_for(total_bytes: u64) -> u64 {
    (total_bytes / 100)
        .saturating_mul(FLOOR_PERCENT)
        .min(FLOOR_MAX_BYTES)
}

/// `free_bytes` under the floor of a file system of `total_bytes` (an unread file system,
/// total 0, is never below it). Pure.
pub fn below_floor(free_bytes: u64, total_bytes: u64) -> bool {
    total_bytes > 0 && free_bytes < floor_for(total_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_windows() {
        // (not_before, not_after, now, due)
        for (nb, na, now, due) in [
            (0, 90, 10, false),
            (0, 90, 59, false),
            (0, 90, 61, true),
            (0, 90, 100, true),
        ] {
            assert_eq!(renewal_due(nb, na, now), due, "{nb} {na} {now}");
        }
    }
}
