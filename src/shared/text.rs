//! Text shown to people: short echoes of untrusted input, tails of long output.

/// At most 24 characters of `s`, escaped: enough to recognise, never an echo of the whole.
pub fn shown(s: &str) -> String {
    let head: String = s.chars().take(24).collect();
    if head.len() < s.len() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
}

/// The last `max` bytes of `s` (on a character boundary), marked with `…` when cut.
pub fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails() {
        assert_eq!(tail("abcdef", 3), "…def");
        assert_eq!(tail("ab", 3), "ab");
    }
}
