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

/// An error as one line with its chain of causes, each cause once: a cause whose text the
/// line already ends with (an error that prints its source as well as returning it) is not
/// repeated.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line.replace('\n', " ")
}

/// A time in ms since the epoch as RFC 3339 UTC, to the second.
pub fn format_ms(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("this node has stopped: {0}")]
    struct Repeats(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("raft stopped")]
    struct Inner;

    #[test]
    fn error_lines_say_each_cause_once() {
        let e = anyhow::Error::new(Repeats(Inner)).context("writing");
        assert_eq!(
            error_line(&e),
            "writing: this node has stopped: raft stopped"
        );
        let e = anyhow::anyhow!("root\ncause").context("outer");
        assert_eq!(error_line(&e), "outer: root cause");
    }

    #[test]
    fn tails() {
        assert_eq!(tail("abcdef", 3), "…def");
        assert_eq!(tail("ab", 3), "ab");
    }
}
