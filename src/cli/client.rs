//! `outpost client list | show | revoke | label`: enrolled clients and the operator's labels
//! on them, through the API.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use hyper::Method;

use super::{DataDirArg, Remote, api, format_ms};
use crate::shared::client::{NO_BODY, urlencode};
use crate::wire::{LabelRequest, LabelResponse};

#[derive(Subcommand, Debug)]
pub(super) enum ClientCmd {
    List {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        json: bool,
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
        ClientCmd::List { dir, json } => {
            let list: Vec<crate::wire::ClientRecord> = api(remote, &dir)?
                .call(Method::GET, "/v1/clients", NO_BODY)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<16} {:<24} {:<20} {:<20} {:<8} LAST SEEN",
                    "ID", "HOSTNAME", "GROUPS", "LABELS", "REVOKED"
                );
                for c in list {
                    let seen = c.last_seen.map(format_ms).unwrap_or_else(|| "never".into());
                    println!(
                        "{:<16} {:<24} {:<20} {:<20} {:<8} {}",
                        c.id,
                        c.hostname,
                        c.groups.join(","),
                        c.labels.join(","),
                        c.revoked,
                        seen
                    );
                }
            }
        }
        ClientCmd::Show { id, dir, json } => {
            let c: crate::wire::ClientRecord = api(remote, &dir)?
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
