//! Shapes and size caps of the fields that enter the node through the API, checked where they
//! enter, before anything is proposed, signed, stored or logged. A refusal names the field
//! and the rule, and shows at most a short prefix of what was sent.

use axum::http::StatusCode;

use crate::api::ApiError;
use crate::shared::text::shown;

/// Names, ids and groups: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub const MAX_ID_CHARS: usize = 64;
/// A host name (DNS allows 253 bytes).
pub const MAX_HOSTNAME_BYTES: usize = 253;
/// A certificate signing request in PEM (a P-256 CSR is well under 1 KiB).
pub const MAX_CSR_BYTES: usize = 16 << 10;
/// A configuration value set through the API (bundles may carry larger ones).
pub const MAX_CONFIG_VALUE_BYTES: usize = 64 << 10;

fn bad(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

fn id_with(what: &str, s: &str, extra: &[u8]) -> Result<(), ApiError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_ID_CHARS
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b) || extra.contains(&b));
    if ok {
        Ok(())
    } else if s.len() > MAX_ID_CHARS {
        Err(bad(format!(
            "{what} is {} bytes, at most {MAX_ID_CHARS} allowed",
            s.len()
        )))
    } else {
        let set = if extra.is_empty() {
            "A-Z a-z 0-9 . _ -".to_string()
        } else {
            format!("A-Z a-z 0-9 . _ - {}", String::from_utf8_lossy(extra))
        };
        Err(bad(format!(
            "{what} {} must be 1-{MAX_ID_CHARS} of {set}",
            shown(s)
        )))
    }
}

/// A name, id or group.
pub fn id(what: &str, s: &str) -> Result<(), ApiError> {
    id_with(what, s, b"")
}

/// A configuration key: like an id, with `:` and `/` allowed too.
pub fn config_key(s: &str) -> Result<(), ApiError> {
    id_with("config key", s, b":/")
}

pub fn config_value(key: &str, value: &str) -> Result<(), ApiError> {
    if value.len() > MAX_CONFIG_VALUE_BYTES {
        return Err(bad(format!(
            "value of {key} is {} bytes, at most {MAX_CONFIG_VALUE_BYTES} allowed",
            value.len()
        )));
    }
    Ok(())
}

/// 64 hex digits.
pub fn sha256_hex(what: &str, s: &str) -> Result<(), ApiError> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(bad(format!("{what} is not 64 hex digits")))
    }
}

/// Free text of at most `max` bytes, not empty, without control characters.
pub fn text(what: &str, s: &str, max: usize) -> Result<(), ApiError> {
    if s.len() > max {
        return Err(bad(format!(
            "{what} is {} bytes, at most {max} allowed",
            s.len()
        )));
    }
    if s.trim().is_empty() || s.chars().any(char::is_control) {
        return Err(bad(format!(
            "{what} {} is empty or has control characters",
            shown(s)
        )));
    }
    Ok(())
}

/// A host name as a client reports it.
pub fn hostname(s: &str) -> Result<(), ApiError> {
    text("hostname", s, MAX_HOSTNAME_BYTES)?;
    if s.chars().any(char::is_whitespace) {
        return Err(bad(format!("hostname {} has white space", shown(s))));
    }
    Ok(())
}

/// `HOST:PORT` (a host name or an address, `[v6]:port` too).
pub fn host_port(what: &str, s: &str) -> Result<(), ApiError> {
    text(what, s, MAX_HOSTNAME_BYTES + 8)?;
    let port = s.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
    if s.chars().any(char::is_whitespace) || !matches!(port, Some(Ok(_))) {
        return Err(bad(format!("{what} {} is not HOST:PORT", shown(s))));
    }
    Ok(())
}

/// A CSR's size (its content is checked by `outpost_certs::check_csr`).
pub fn csr(s: &str) -> Result<(), ApiError> {
    if s.len() > MAX_CSR_BYTES {
        return Err(bad(format!(
            "certificate request is {} bytes, at most {MAX_CSR_BYTES} allowed",
            s.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_rules() {
        let long = "a".repeat(MAX_ID_CHARS);
        let too_long = "a".repeat(MAX_ID_CHARS + 1);
        for (s, ok) in [
            ("n2", true),
            ("c-1a2b.x_y", true),
            (long.as_str(), true),
            ("", false),
            (too_long.as_str(), false),
            ("a b", false),
            ("é", false),
            ("a/b", false),
        ] {
            assert_eq!(id("name", s).is_ok(), ok, "{s:?}");
        }
        assert!(config_key("agent.handler.artifact").is_ok());
        assert!(config_key("site/area:1").is_ok());
        assert!(config_key("a b").is_err());
        assert!(config_value("k", &"x".repeat(MAX_CONFIG_VALUE_BYTES)).is_ok());
        assert!(config_value("k", &"x".repeat(MAX_CONFIG_VALUE_BYTES + 1)).is_err());
        assert!(hostname(&"h".repeat(MAX_HOSTNAME_BYTES)).is_ok());
        assert!(hostname(&"h".repeat(MAX_HOSTNAME_BYTES + 1)).is_err());
        assert!(hostname("two words").is_err());
        assert!(hostname("nul\0").is_err());
        assert!(host_port("api", "10.0.0.1:7443").is_ok());
        assert!(host_port("api", "[::1]:7443").is_ok());
        assert!(host_port("api", "node-a.site:1").is_ok());
        assert!(host_port("api", "10.0.0.1").is_err());
        assert!(host_port("api", "h:99999").is_err());
        assert!(sha256_hex("s", &"ab".repeat(32)).is_ok());
        assert!(sha256_hex("s", &"zz".repeat(32)).is_err());
        assert!(csr(&"x".repeat(MAX_CSR_BYTES + 1)).is_err());
    }

    #[test]
    fn refusals_never_echo_long_input() {
        let huge = "x".repeat(1 << 20);
        for e in [
            id("token id", &huge),
            hostname(&huge),
            text("version", &huge, 64),
            host_port("api", &huge),
            config_key(&huge),
        ] {
            let msg = format!("{:?}", e.expect_err("refused"));
            assert!(msg.len() < 200, "{} bytes: {}", msg.len(), &msg[..200]);
        }
        assert!(shown(&huge).len() < 40);
    }
}
