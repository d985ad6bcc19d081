//! The `config` payload of a bundle: TOML whose tables say where each key goes. Pure; the
//! importer parses it to refuse a bad payload early, and `apply` parses the very same bytes
//! (carried in the Raft command) to change the configuration.

use crate::model::Scope;

/// A `config` payload: TOML with `[global]`, `[group.NAME]` and `[client.ID]` tables; nested
/// tables flatten to dotted keys (`ntp.server = "x"` is key `ntp.server`); scalar values are
/// stored as text. Pure.
pub fn parse_config_payload(text: &str) -> Result<Vec<(Scope, String, String)>, String> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (top, v) in doc {
        let table = v
            .as_table()
            .ok_or_else(|| format!("top-level {top:?} must be a table"))?;
        match top.as_str() {
            "global" => flatten(&Scope::Global, "", table, &mut out)?,
            "group" | "client" => {
                for (name, inner) in table {
                    let inner = inner
                        .as_table()
                        .ok_or_else(|| format!("{top}.{name} must be a table of keys"))?;
                    let scope = if top == "group" {
                        Scope::Group(name.clone())
                    } else {
                        Scope::Client(name.clone())
                    };
                    flatten(&scope, "", inner, &mut out)?;
                }
            }
            other => {
                return Err(format!(
                    "unknown table [{other}]: use [global], [group.NAME] or [client.ID]"
                ));
            }
        }
    }
    Ok(out)
}

fn flatten(
    scope: &Scope,
    prefix: &str,
    table: &toml::Table,
    out: &mut Vec<(Scope, String, String)>,
) -> Result<(), String> {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let value = match v {
            toml::Value::Table(t) => {
                flatten(scope, &key, t, out)?;
                continue;
            }
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Datetime(d) => d.to_string(),
            toml::Value::Array(_) => {
                return Err(format!("{key}: arrays are not configuration values"));
            }
        };
        out.push((scope.clone(), key, value));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_payloads() {
        let g = |s: &str| Scope::Group(s.into());
        let ok = parse_config_payload(
            "[global]\nntp.server = \"10.0.0.1\"\nretries = 3\n[group.lab]\nstrict = true\n[client.c-1]\nx = 1.5\n",
        );
        assert_eq!(
            ok,
            Ok(vec![
                (Scope::Client("c-1".into()), "x".into(), "1.5".into()),
                (Scope::Global, "ntp.server".into(), "10.0.0.1".into()),
                (Scope::Global, "retries".into(), "3".into()),
                (g("lab"), "strict".into(), "true".into()),
            ])
        );
        for (text, want) in [
            ("[site]\na = 1\n", "unknown table"),
            ("global = 1\n", "must be a table"),
            ("[group]\nlab = 1\n", "must be a table of keys"),
            ("[global]\na = [1]\n", "arrays"),
            ("[global\n", "TOML"),
        ] {
            match parse_config_payload(text) {
                Err(e) => assert!(e.contains(want) || want == "TOML", "{text:?}: {e}"),
                Ok(v) => panic!("{text:?} parsed: {v:?}"),
            }
        }
    }
}
