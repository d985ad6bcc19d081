//! `outpost client list | show | revoke | label`: enrolled clients and the operator's labels
//! on them, through the API.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use hyper::Method;

use super::{DataDirArg, Remote, api, format_ms};
use crate::shared::client::{NO_BODY, urlencode};
use crate::wire::{ClientRecord, InventoryView, LabelRequest, LabelResponse};

#[derive(Subcommand, Debug)]
pub(super) enum ClientCmd {
    /// The clients; --failing and --unseen filter them (both: clients that are both).
    List {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        json: bool,
        /// Only clients with at least one failing health check (`agent.check.*`).
        #[arg(long)]
        failing: bool,
        /// Only clients not seen for this long (e.g. 7d, 12h); never-seen clients included.
        #[arg(long, value_name = "DURATION")]
        unseen: Option<humantime::Duration>,
    },
    Show {
        id: String,
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a client: every node refuses its certificate once the revocation commits.
    Revoke {
        id: String,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Add or remove labels (names like groups) on clients: by id, on every client whose
    /// facts match --where PATH=VALUE, or on the ids of --from-file (one a line).
    Label {
        ids: Vec<String>,
        #[arg(long = "add", value_name = "L")]
        add: Vec<String>,
        #[arg(long = "remove", value_name = "L")]
        remove: Vec<String>,
        #[arg(long = "where", value_name = "PATH=VALUE")]
        where_fact: Option<String>,
        #[arg(long = "from-file", value_name = "FILE")]
        from_file: Option<PathBuf>,
        #[command(flatten)]
        dir: DataDirArg,
    },
}

/// The ids of a `--from-file`: one a line; blank lines and `#` comments skipped. Pure.
pub fn ids_from_text(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Whether `client list` shows `c`: with `failing`, only a client with a failing check; with
/// `unseen_before_ms`, only one never seen or last seen before then. Either leaves revoked
/// clients out (nobody expects them to sync again). Pure.
pub fn listed(c: &ClientRecord, failing: bool, unseen_before_ms: Option<i64>) -> bool {
    if c.revoked && (failing || unseen_before_ms.is_some()) {
        return false;
    }
    let failing_ok = !failing || !c.failing.is_empty();
    let unseen_ok = match (unseen_before_ms, c.last_seen) {
        (None, _) | (Some(_), None) => true,
        (Some(before), Some(seen)) => seen < before,
    };
    failing_ok && unseen_ok
}

/// The failing checks of a client with their details from its facts (`health.NAME.detail`),
/// one line each. Pure.
pub fn failing_lines(failing: &[String], facts: Option<&serde_json::Value>) -> Vec<String> {
    failing
        .iter()
        .map(|name| {
            let detail = facts
                .and_then(|f| f.get("health")?.get(name)?.get("detail")?.as_str())
                .unwrap_or("");
            if detail.is_empty() {
                format!("  {name}")
            } else {
                format!("  {name}: {detail}")
            }
        })
        .collect()
}

/// The clients a `client label` names: ids, the ids of a file, or a fact (not two of them).
fn label_request(
    ids: Vec<String>,
    where_fact: Option<String>,
    from_file: Option<&Path>,
    add: Vec<String>,
    remove: Vec<String>,
) -> Result<LabelRequest> {
    if add.is_empty() && remove.is_empty() {
        bail!("nothing to do: give --add L or --remove L");
    }
    let mut clients = ids;
    if let Some(path) = from_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --from-file {}", path.display()))?;
        clients.extend(ids_from_text(&text));
    }
    match (clients.is_empty(), &where_fact) {
        (true, None) => bail!("name the clients: IDs, --where PATH=VALUE or --from-file FILE"),
        (false, Some(_)) => bail!("give client ids (or --from-file) or --where, not both"),
        _ => {}
    }
    Ok(LabelRequest {
        clients,
        where_fact,
        add,
        remove,
    })
}

pub(super) async fn run(remote: &Remote, cmd: ClientCmd) -> Result<()> {
    match cmd {
        ClientCmd::List {
            dir,
            json,
            failing,
            unseen,
        } => {
            let mut list: Vec<ClientRecord> = api(remote, &dir)?
                .call(Method::GET, "/v1/clients", NO_BODY)
                .await?;
            let unseen_before_ms = unseen.map(|d| {
                let ms =
                    i64::try_from(std::time::Duration::from(d).as_millis()).unwrap_or(i64::MAX);
                crate::shared::now_ms().saturating_sub(ms)
            });
            list.retain(|c| listed(c, failing, unseen_before_ms));
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<16} {:<24} {:<20} {:<20} {:<8} {:<20} LAST SEEN",
                    "ID", "HOSTNAME", "GROUPS", "LABELS", "REVOKED", "FAILING"
                );
                for c in list {
                    let seen = c.last_seen.map(format_ms).unwrap_or_else(|| "never".into());
                    let failing = if c.failing.is_empty() {
                        "-".to_string()
                    } else {
                        c.failing.join(",")
                    };
                    println!(
                        "{:<16} {:<24} {:<20} {:<20} {:<8} {:<20} {}",
                        c.id,
                        c.hostname,
                        c.groups.join(","),
                        c.labels.join(","),
                        c.revoked,
                        failing,
                        seen
                    );
                }
            }
        }
        ClientCmd::Show { id, dir, json } => {
            let client = api(remote, &dir)?;
            let c: ClientRecord = client
                .call(
                    Method::GET,
                    &format!("/v1/clients/{}", urlencode(&id)),
                    NO_BODY,
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                println!("client {} ({})", c.id, c.hostname);
                println!("groups: {}", c.groups.join(", "));
                println!("labels: {}", c.labels.join(", "));
                println!("certificate serial: {}", c.cert_serial);
                println!("enrolled: {}", format_ms(c.enrolled_at_ms));
                println!(
                    "last seen: {}",
                    c.last_seen.map(format_ms).unwrap_or_else(|| "never".into())
                );
                println!("revoked: {}", c.revoked);
                if c.failing.is_empty() {
                    println!("failing checks: none");
                } else {
                    // The details are in the client's facts; without them, the names.
                    let view: Option<InventoryView> = client
                        .call(
                            Method::GET,
                            &format!("/v1/inventory/{}", urlencode(&id)),
                            NO_BODY,
                        )
                        .await
                        .ok();
                    println!("failing checks:");
                    let facts = view.as_ref().map(|v| &v.inventory.facts);
                    for line in failing_lines(&c.failing, facts) {
                        println!("{line}");
                    }
                }
            }
        }
        ClientCmd::Revoke { id, dir } => {
            let path = format!("/v1/clients/{}/revoke", urlencode(&id));
            let _: serde_json::Value = api(remote, &dir)?
                .call(Method::POST, &path, NO_BODY)
                .await?;
            println!("client {id} revoked");
        }
        ClientCmd::Label {
            ids,
            add,
            remove,
            where_fact,
            from_file,
            dir,
        } => {
            let req = label_request(ids, where_fact, from_file.as_deref(), add, remove)?;
            let done: LabelResponse = api(remote, &dir)?
                .call(Method::POST, "/v1/clients/labels", Some(&req))
                .await?;
            let mut what: Vec<String> = req.add.iter().map(|l| format!("+{l}")).collect();
            what.extend(req.remove.iter().map(|l| format!("-{l}")));
            println!(
                "labelled {} client{}: {}",
                done.clients.len(),
                if done.clients.len() == 1 { "" } else { "s" },
                what.join(" ")
            );
            for c in done.clients {
                println!("  {c}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_filters_combine() {
        let client = |seen: Option<i64>, failing: &[&str]| ClientRecord {
            id: "c".into(),
            hostname: "h".into(),
            groups: vec![],
            cert_serial: "01".into(),
            enrolled_at_ms: 1,
            revoked: false,
            last_seen: seen,
            last_seen_node: None,
            labels: vec![],
            failing: failing.iter().map(|f| f.to_string()).collect(),
        };
        // (last seen, failing checks, --failing, unseen before, listed)
        let cases = [
            (Some(50), vec![], false, None, true),
            (Some(50), vec![], true, None, false),
            (Some(50), vec!["cmd.x"], true, None, true),
            (Some(50), vec![], false, Some(100), true),
            (Some(100), vec![], false, Some(100), false),
            (None, vec![], false, Some(100), true),
            (None, vec![], true, Some(100), false),
            (Some(150), vec!["disk"], true, Some(100), false),
            (Some(50), vec!["disk"], true, Some(100), true),
        ];
        for (seen, failing, only_failing, before, want) in cases {
            let mut c = client(seen, &failing);
            assert_eq!(
                listed(&c, only_failing, before),
                want,
                "{seen:?} {failing:?} {only_failing} {before:?}"
            );
            // Revoked: listed only without a health filter.
            c.revoked = true;
            let filtered = only_failing || before.is_some();
            assert_eq!(listed(&c, only_failing, before), !filtered, "revoked");
            c.revoked = false;
            assert_eq!(
                listed(&c, only_failing, before),
                want,
                "{seen:?} {failing:?} {only_failing} {before:?}"
            );
        }
    }

    #[test]
    fn failing_checks_show_their_details() {
        let facts = serde_json::json!({"health": {
            "cmd.flag": {"ok": false, "detail": "exit 1: flag present"},
            "disk": {"ok": false},
        }});
        let failing = ["cmd.flag".to_string(), "disk".into(), "gone".into()];
        assert_eq!(
            failing_lines(&failing, Some(&facts)),
            ["  cmd.flag: exit 1: flag present", "  disk", "  gone"]
        );
        assert_eq!(failing_lines(&failing[..1], None), ["  cmd.flag"]);
    }

    #[test]
    fn ids_of_a_file() {
        assert_eq!(
            ids_from_text("c-1\n\n  c-2  \n# a comment\nc-3"),
            ["c-1", "c-2", "c-3"]
        );
        assert!(ids_from_text("").is_empty());
    }

    #[test]
    fn a_label_request_names_its_clients_once() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let ok = label_request(s(&["c-1"]), None, None, s(&["line2"]), vec![]).expect("ids");
        assert_eq!(ok.clients, ["c-1"]);
        let ok = label_request(vec![], Some("os.id=debian".into()), None, vec![], s(&["x"]))
            .expect("where");
        assert_eq!(ok.where_fact.as_deref(), Some("os.id=debian"));
        for (ids, fact, add, want) in [
            (s(&["c-1"]), None, vec![], "nothing to do"),
            (vec![], None, s(&["a"]), "name the clients"),
            (s(&["c-1"]), Some("a=b".to_string()), s(&["a"]), "not both"),
        ] {
            let e = label_request(ids, fact, None, add, vec![]).expect_err("refused");
            assert!(e.to_string().contains(want), "{e}");
        }
        let missing = Path::new("/nonexistent/ids.txt");
        let e = label_request(vec![], None, Some(missing), s(&["a"]), vec![]).expect_err("no file");
        assert!(
            format!("{e:#}").contains("--from-file /nonexistent/ids.txt"),
            "{e:#}"
        );
    }
}
