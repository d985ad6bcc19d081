//! Phases: which phase a client falls in (a stable hash of the deployment and client ids, so
//! the split does not move as other clients come and go) and the checks of a phase list.

use sha2::{Digest, Sha256};

/// Most phases a rollout may have.
pub const MAX_PHASES: usize = 10;
/// Longest phase list text (ten phases with `%` and spaces fit well).
const MAX_PHASES_BYTES: usize = 80;

/// The phase (0-based) of `client` in deployment `deployment`: with
/// `b = u64::from_be_bytes(sha256(deployment ‖ 0x00 ‖ client)[..8]) % 10_000`, the first k with
/// `b < phases[k] × 100`. A list that does not end at 100 puts the rest in its last phase.
pub fn phase_of(deployment: &str, client: &str, phases: &[u8]) -> usize {
    let mut h = Sha256::new();
    h.update(deployment.as_bytes());
    h.update([0u8]);
    h.update(client.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let b = u64::from_be_bytes(first) % 10_000;
    phases
        .iter()
        .position(|p| b < u64::from(*p) * 100)
        .unwrap_or(phases.len().saturating_sub(1))
}

/// `"5%,25%,100%"` (the `%` may be left out) into cumulative percents, checked by
/// `check_phases`.
pub fn parse_phases(text: &str) -> Result<Vec<u8>, String> {
    if text.len() > MAX_PHASES_BYTES {
        return Err(format!(
            "phases are {} bytes, at most {MAX_PHASES_BYTES} allowed",
            text.len()
        ));
    }
    let items: Vec<&str> = text.split(',').map(str::trim).collect();
    if items.len() > MAX_PHASES {
        return Err(format!(
            "phases {text:?}: {} phases, at most {MAX_PHASES} allowed",
            items.len()
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let n = item.strip_suffix('%').unwrap_or(item).trim();
        match n.parse::<u8>() {
            Ok(p) => out.push(p),
            Err(_) => {
                return Err(format!(
                    "phase {} ({item:?}) is not a percent like 25%",
                    i + 1
                ));
            }
        }
    }
    check_phases(&out)?;
    Ok(out)
}

/// Cumulative percents: 1 to 10 of them, each 1-100, strictly increasing, the last one 100.
pub fn check_phases(phases: &[u8]) -> Result<(), String> {
    if phases.is_empty() {
        return Err("name at least one phase (100%)".to_owned());
    }
    if phases.len() > MAX_PHASES {
        return Err(format!(
            "{} phases, at most {MAX_PHASES} allowed",
            phases.len()
        ));
    }
    for (i, p) in phases.iter().enumerate() {
        if !(1..=100).contains(p) {
            return Err(format!("phase {} ({p}%) must be 1% to 100%", i + 1));
        }
        if i > 0 && *p <= phases[i - 1] {
            return Err(format!(
                "phase {} ({p}%) must be above phase {} ({}%)",
                i + 1,
                i,
                phases[i - 1]
            ));
        }
    }
    if phases.last() != Some(&100) {
        return Err(format!(
            "the last phase ({}%) must be 100%: every targeted client gets it in the end",
            phases[phases.len() - 1]
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_phases_table() {
        // (text, Ok(phases) or Err(substring))
        let long = format!("100{}", " ".repeat(80));
        let cases: [(&str, Result<Vec<u8>, &str>); 10] = [
            (&long, Err("phases are 83 bytes, at most 80 allowed")),
            ("100%", Ok(vec![100])),
            ("5%,25%,100%", Ok(vec![5, 25, 100])),
            (" 10 , 50%, 100 ", Ok(vec![10, 50, 100])),
            (
                "50%,25%,100%",
                Err("phase 2 (25%) must be above phase 1 (50%)"),
            ),
            (
                "10%,10%,100%",
                Err("phase 2 (10%) must be above phase 1 (10%)"),
            ),
            ("10%,50%", Err("the last phase (50%) must be 100%")),
            ("0%,100%", Err("phase 1 (0%) must be 1% to 100%")),
            ("ten,100%", Err("phase 1 (\"ten\") is not a percent")),
            ("1,2,3,4,5,6,7,8,9,10,100", Err("at most 10 allowed")),
        ];
        for (text, want) in cases {
            match (parse_phases(text), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
                (Err(e), Err(want)) => assert!(e.contains(want), "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
        assert!(check_phases(&[]).is_err());
        assert!(check_phases(&[101]).is_err());
    }

    /// A client's phase depends only on the two ids: adding or removing other clients never
    /// moves it, and the split follows the percents roughly.
    #[test]
    fn phase_split_is_stable_and_proportional() {
        let phases = [10u8, 50, 100];
        let ids: Vec<String> = (0..2000).map(|i| format!("c{i:04}")).collect();
        let before: Vec<usize> = ids.iter().map(|c| phase_of("d-1", c, &phases)).collect();
        // The same ids, evaluated in another order and among other clients.
        for (i, c) in ids.iter().enumerate().rev() {
            assert_eq!(phase_of("d-1", c, &phases), before[i], "{c}");
        }
        let mut counts = [0usize; 3];
        for p in &before {
            counts[*p] += 1;
        }
        // 10 % / 40 % / 50 % of 2000, within a wide margin (the hash is fixed: no flakiness).
        assert!((150..=250).contains(&counts[0]), "{counts:?}");
        assert!((700..=900).contains(&counts[1]), "{counts:?}");
        assert!((900..=1100).contains(&counts[2]), "{counts:?}");
        // Another deployment splits differently.
        let other: Vec<usize> = ids.iter().map(|c| phase_of("d-2", c, &phases)).collect();
        assert_ne!(before, other);
        // One phase of 100 %: everyone in phase 0; a list not ending at 100: the rest last.
        assert!(ids.iter().all(|c| phase_of("d-1", c, &[100]) == 0));
        assert!(ids.iter().all(|c| phase_of("d-1", c, &[1, 2]) <= 1));
        assert_eq!(phase_of("d-1", "c1", &[]), 0);
    }

    /// The hash is the contract's: sha256(dep ‖ 0 ‖ client), first 8 bytes big-endian.
    #[test]
    fn phase_hash_is_the_documented_one() {
        let digest = Sha256::digest(b"d-1\0c1");
        let b = u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8])) % 10_000;
        let phases: Vec<u8> = (1..=100)
            .collect::<Vec<u8>>()
            .into_iter()
            .step_by(10)
            .chain([100])
            .collect();
        let want = phases
            .iter()
            .position(|p| b < u64::from(*p) * 100)
            .unwrap_or(0);
        assert_eq!(phase_of("d-1", "c1", &phases), want);
    }
}
