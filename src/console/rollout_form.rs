//! The console's "New deployment" form as the API's requests (pure): the selector fields
//! split on commas and new lines, windows one a line, `NAME[@VERSION]`, and the same fields
//! again as the preview's hidden inputs, so its confirm button creates exactly what was shown.
//!
//! The checks of the values themselves (names, phases, soak, windows, counts) are the API's
//! (`api::deployments::{rollout_command, plan}`); here only the form's own shape is checked,
//! and the sizes it may carry.

use serde::Deserialize;

use crate::wire::{DeploymentRequest, PlanRequest, SelectorArgs};

/// Terms one selector field may carry.
pub const MAX_TERMS: usize = 1000;
/// Windows one form may carry.
pub const MAX_WINDOWS: usize = 20;
/// Characters of one single-line field (artifact, phases, soak, ...).
const MAX_FIELD: usize = 200;

/// The form's fields as the browser sends them (every one a text; absent = empty).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct RolloutForm {
    pub csrf: String,
    /// Which button sent it: `preview` (or none), `edit`, `create`.
    pub step: String,
    pub artifact: String,
    pub groups: String,
    pub labels: String,
    pub facts: String,
    pub clients: String,
    pub exclude_labels: String,
    pub exclude_clients: String,
    pub phases: String,
    pub soak: String,
    pub max_failures: String,
    pub windows: String,
    pub start_at: String,
    pub id: String,
}

impl RolloutForm {
    /// The selector: each field's terms, split on commas and new lines, trimmed.
    pub fn selector(&self) -> Result<SelectorArgs, String> {
        Ok(SelectorArgs {
            groups: terms("groups", &self.groups)?,
            labels: terms("labels", &self.labels)?,
            facts: terms("facts", &self.facts)?,
            clients: terms("clients", &self.clients)?,
            exclude_labels: terms("exclude labels", &self.exclude_labels)?,
            exclude_clients: terms("exclude clients", &self.exclude_clients)?,
        })
    }

    /// What `deployment create` with the same flags sends. One group and nothing else in the
    /// selector goes as `group` (the CLI's `--group G`), so a plain deployment stays plain.
    pub fn request(&self) -> Result<DeploymentRequest, String> {
        let (artifact, version) = artifact(&self.artifact)?;
        let (group, selector) = self.group_and_selector()?;
        let windows = lines("windows", &self.windows, MAX_WINDOWS)?;
        Ok(DeploymentRequest {
            artifact,
            version,
            group,
            id: single("id", &self.id)?,
            selector,
            phases: single("phases", &self.phases)?,
            soak: single("soak", &self.soak)?,
            max_failures: single("max failures", &self.max_failures)?,
            windows,
            start_at: single("start at", &self.start_at)?,
        })
    }

    /// What `deployment plan` with the same flags sends.
    pub fn plan_request(&self) -> Result<PlanRequest, String> {
        let (group, selector) = self.group_and_selector()?;
        Ok(PlanRequest {
            selector,
            group,
            phases: single("phases", &self.phases)?,
            id: single("id", &self.id)?,
        })
    }

    fn group_and_selector(&self) -> Result<(String, SelectorArgs), String> {
        let mut s = self.selector()?;
        let only_groups = s.labels.is_empty()
            && s.facts.is_empty()
            && s.clients.is_empty()
            && s.exclude_labels.is_empty()
            && s.exclude_clients.is_empty();
        if only_groups && s.groups.len() == 1 {
            return Ok((s.groups.remove(0), s));
        }
        Ok((String::new(), s))
    }

    /// The fields as (name, value) for the preview's hidden inputs (not the CSRF token: the
    /// template adds the session's own).
    pub fn hidden(&self) -> Vec<(&'static str, String)> {
        [
            ("artifact", &self.artifact),
            ("groups", &self.groups),
            ("labels", &self.labels),
            ("facts", &self.facts),
            ("clients", &self.clients),
            ("exclude_labels", &self.exclude_labels),
            ("exclude_clients", &self.exclude_clients),
            ("phases", &self.phases),
            ("soak", &self.soak),
            ("max_failures", &self.max_failures),
            ("windows", &self.windows),
            ("start_at", &self.start_at),
            ("id", &self.id),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.clone()))
        .collect()
    }

    /// The selector as the CLI's flags (`--group lab --label line2 ...`), for the preview.
    pub fn flags(&self) -> String {
        let Ok(s) = self.selector() else {
            return String::new();
        };
        let mut out = Vec::new();
        for (flag, list) in [
            ("--group", &s.groups),
            ("--label", &s.labels),
            ("--where", &s.facts),
            ("--client", &s.clients),
            ("--exclude-label", &s.exclude_labels),
            ("--exclude-client", &s.exclude_clients),
        ] {
            out.extend(list.iter().map(|t| format!("{flag} {t}")));
        }
        out.join(" ")
    }
}

/// The terms of one selector field: split on commas and new lines, trimmed, empty ones
/// dropped, at most `MAX_TERMS`.
pub fn terms(field: &str, text: &str) -> Result<Vec<String>, String> {
    let out: Vec<String> = text
        .split([',', '\n', '\r'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if out.len() > MAX_TERMS {
        return Err(format!("{field}: {} terms, at most {MAX_TERMS}", out.len()));
    }
    Ok(out)
}

/// One entry a line (windows hold commas: `Sat,Sun 10:00-12:00`).
fn lines(field: &str, text: &str, max: usize) -> Result<Vec<String>, String> {
    let out: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if out.len() > max {
        return Err(format!("{field}: {} lines, at most {max}", out.len()));
    }
    Ok(out)
}

/// A one-line field: trimmed, None when empty.
fn single(field: &str, text: &str) -> Result<Option<String>, String> {
    let t = text.trim();
    if t.chars().count() > MAX_FIELD {
        return Err(format!("{field}: longer than {MAX_FIELD} characters"));
    }
    if t.contains(['\n', '\r']) {
        return Err(format!("{field}: one line only"));
    }
    Ok((!t.is_empty()).then(|| t.to_owned()))
}

/// `NAME[@VERSION]` as the artifact field takes it (like `deployment create --artifact`).
pub fn artifact(text: &str) -> Result<(String, Option<u64>), String> {
    let t = single("artifact", text)?.ok_or("artifact: name one (NAME or NAME@VERSION)")?;
    match t.split_once('@') {
        None => Ok((t, None)),
        Some((name, v)) if !name.is_empty() => v
            .parse::<u64>()
            .map(|v| (name.to_owned(), Some(v)))
            .map_err(|_| format!("artifact {t}: the version after @ must be a number")),
        Some(_) => Err(format!("artifact {t}: NAME or NAME@VERSION")),
    }
}

/// A new deployment id, chosen when the preview is shown so that the preview and the
/// deployment it confirms split the clients into the same phases.
pub fn new_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 5];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("d-{}", hex::encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_split_on_commas_and_lines() {
        for (text, want) in [
            ("", vec![]),
            ("line2", vec!["line2"]),
            ("line2, line3", vec!["line2", "line3"]),
            ("a\nb\r\nc,,d ,", vec!["a", "b", "c", "d"]),
            ("  \n , ", vec![]),
        ] {
            assert_eq!(terms("labels", text).unwrap(), want, "{text:?}");
        }
        let many = vec!["x"; MAX_TERMS + 1].join(",");
        let e = terms("labels", &many).unwrap_err();
        assert!(e.contains("labels") && e.contains("1001"), "{e}");
    }

    #[test]
    fn artifacts() {
        for (text, want) in [
            ("tool", Some(("tool", None))),
            (" tool@3 ", Some(("tool", Some(3)))),
            ("", None),
            ("@3", None),
            ("tool@", None),
            ("tool@x", None),
            ("a\nb", None),
        ] {
            let got = artifact(text).ok();
            let want = want.map(|(n, v)| (n.to_owned(), v));
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn request_from_the_form() {
        let f = RolloutForm {
            artifact: "tool@2".into(),
            labels: "line2".into(),
            exclude_labels: "quarantine".into(),
            facts: "os.version_id=12".into(),
            phases: " 10%,50%,100% ".into(),
            soak: "30m".into(),
            windows: "Mon-Fri 22:00-05:00\n\nSat,Sun 10:00-12:00\n".into(),
            id: "d-1".into(),
            ..RolloutForm::default()
        };
        let r = f.request().unwrap();
        assert_eq!((r.artifact.as_str(), r.version), ("tool", Some(2)));
        assert_eq!(r.group, "");
        assert_eq!(r.selector.labels, ["line2"]);
        assert_eq!(r.selector.exclude_labels, ["quarantine"]);
        assert_eq!(r.selector.facts, ["os.version_id=12"]);
        assert_eq!(r.phases.as_deref(), Some("10%,50%,100%"));
        assert_eq!(r.soak.as_deref(), Some("30m"));
        assert_eq!(r.max_failures, None);
        assert_eq!(r.start_at, None);
        assert_eq!(r.windows, ["Mon-Fri 22:00-05:00", "Sat,Sun 10:00-12:00"]);
        assert_eq!(r.id.as_deref(), Some("d-1"));
        assert_eq!(
            f.flags(),
            "--label line2 --where os.version_id=12 --exclude-label quarantine"
        );
        let p = f.plan_request().unwrap();
        assert_eq!(p.selector.labels, ["line2"]);
        assert_eq!(p.phases.as_deref(), Some("10%,50%,100%"));
    }

    #[test]
    fn one_group_alone_is_a_plain_group() {
        let f = RolloutForm {
            artifact: "tool".into(),
            groups: "lab".into(),
            ..RolloutForm::default()
        };
        let r = f.request().unwrap();
        assert_eq!(r.group, "lab");
        assert!(r.selector.groups.is_empty());
        let f = RolloutForm {
            groups: "lab, line".into(),
            ..f
        };
        let r = f.request().unwrap();
        assert_eq!(r.group, "");
        assert_eq!(r.selector.groups, ["lab", "line"]);
    }

    #[test]
    fn the_hidden_fields_give_the_same_request() {
        let f = RolloutForm {
            artifact: "tool".into(),
            clients: "c-1\nc-2".into(),
            windows: "daily 01:00-02:00".into(),
            id: "d-9".into(),
            ..RolloutForm::default()
        };
        let mut back = RolloutForm::default();
        for (k, v) in f.hidden() {
            let slot = match k {
                "artifact" => &mut back.artifact,
                "clients" => &mut back.clients,
                "windows" => &mut back.windows,
                "id" => &mut back.id,
                _ => continue,
            };
            *slot = v;
        }
        assert_eq!(back.request().unwrap().selector.clients, ["c-1", "c-2"]);
        assert_eq!(back.request().unwrap().windows, ["daily 01:00-02:00"]);
        assert_eq!(f.hidden().len(), 13);
    }

    #[test]
    fn refusals_name_the_field() {
        let f = RolloutForm {
            artifact: "tool".into(),
            soak: "30m\n1h".into(),
            ..RolloutForm::default()
        };
        assert!(f.request().unwrap_err().starts_with("soak"));
        let f = RolloutForm {
            artifact: "tool".into(),
            windows: vec!["daily 01:00-02:00"; MAX_WINDOWS + 1].join("\n"),
            ..RolloutForm::default()
        };
        assert!(f.request().unwrap_err().starts_with("windows"));
        let f = RolloutForm::default();
        assert!(f.request().unwrap_err().starts_with("artifact"));
    }
}
