//! Times as bundles write them: RFC 3339 text to and from unix seconds (a spec's `created`
//! and `expires`, and what `inspect` prints). No clock is read here.

/// Parse an RFC 3339 time to unix seconds.
pub fn parse_time(s: &str) -> Result<i64, time::error::Parse> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)?;
    Ok(t.unix_timestamp())
}

/// Format unix seconds as RFC 3339 (for `inspect`).
pub fn format_time(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-01T00:01:00Z").unwrap(), 60);
        assert_eq!(parse_time("2027-06-01T00:00:00Z").unwrap(), 1_811_808_000);
        assert!(parse_time("2027-06-01").is_err());
        assert_eq!(format_time(60), "1970-01-01T00:01:00Z");
    }
}
