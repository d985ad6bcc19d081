//! Pure rules both sides apply: when a certificate is due for renewal (the node refuses an
//! early renewal, the agent asks in time). Whether inventory facts match a query is
//! `outpost_storage::rollout::fact_matches`, beside the rollout selectors that use it too.

/// Less than a third of [not_before, not_after] left at `now`. Pure.
pub fn renewal_due(not_before: i64, not_after: i64, now: i64) -> bool {
    let life = (not_after - not_before).max(0);
    not_after - now < life / 3
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
