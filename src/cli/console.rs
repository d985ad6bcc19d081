//! `outpost console login | user | session`: sign-in links, operator accounts and sessions of
//! the web console, through the API (on a node: the local socket, no certificate).

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use hyper::Method;

use super::role::{self, GrantArgs};
use super::{DataDirArg, Remote, api, format_ms};
use crate::shared::client::{NO_BODY, urlencode};
use crate::wire::{
    ConsoleLinkRequest, ConsoleLinkResponse, ConsoleSessionView, ConsoleUserRequest,
    ConsoleUserView, RoleView,
};

/// Shortest password an account may have.
const MIN_PASSWORD_CHARS: usize = 10;

#[derive(Subcommand, Debug)]
pub(super) enum ConsoleCmd {
    /// Print a one-time https link to this node's console: it signs you in once, within 5
    /// minutes, and opens the overview.
    Login {
        /// The console account the link signs in as (it must exist: `outpost console user
        /// add NAME`; the audit log shows `console:NAME`); default: your user name on this
        /// machine. A link works even while the account's password sign-ins are locked.
        #[arg(long = "as", value_name = "NAME")]
        user: Option<String>,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Operator accounts (name and password, replicated to every node).
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// Console sessions: list them, end one on every node.
    Session {
        #[command(subcommand)]
        cmd: SessionCmd,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum UserCmd {
    /// Add an account, or set a new password for it (its open sessions stay open). The
    /// password is read from --password-file (first line) or standard input; only its
    /// Argon2id hash leaves this command.
    Add {
        name: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// The person's role (viewer, operator, admin), set before the account: required for
        /// a new account; for an existing one, it changes the role too.
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: Option<String>,
        /// With --role: group:NAME or label:NAME (repeatable); none: the whole site.
        #[arg(long = "scope", value_name = "group:G|label:L", requires = "role")]
        scopes: Vec<String>,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Remove an account and end its sessions.
    Remove {
        name: String,
        #[command(flatten)]
        dir: DataDirArg,
    },
    List {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum SessionCmd {
    List {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        json: bool,
    },
    /// End a session on every node (its browser is signed out at its next request).
    End {
        id: String,
        #[command(flatten)]
        dir: DataDirArg,
    },
}

pub(super) async fn run(remote: &Remote, cmd: ConsoleCmd) -> Result<()> {
    match cmd {
        ConsoleCmd::Login { user, dir } => {
            let user = match user {
                Some(u) => u,
                None => std::env::var("SUDO_USER")
                    .or_else(|_| std::env::var("USER"))
                    .unwrap_or_else(|_| "operator".into()),
            };
            let link: ConsoleLinkResponse = api(remote, &dir)?
                .call(
                    Method::POST,
                    "/v1/console/links",
                    Some(&ConsoleLinkRequest { user: user.clone() }),
                )
                .await?;
            eprintln!(
                "A one-time sign-in link for {user}, valid until {} (open it in a browser that trusts the cluster CA, D/ca.crt):",
                format_ms(link.expires_at_ms)
            );
            println!("{}", link.url);
        }
        ConsoleCmd::User { cmd } => user(remote, cmd).await?,
        ConsoleCmd::Session { cmd } => session(remote, cmd).await?,
    }
    Ok(())
}

async fn user(remote: &Remote, cmd: UserCmd) -> Result<()> {
    match cmd {
        UserCmd::Add {
            name,
            password_file,
            role,
            scopes,
            dir,
        } => {
            let client = api(remote, &dir)?;
            let set = match role {
                Some(role) => Some(GrantArgs { role, scopes }),
                None => {
                    let now: RoleView = client
                        .call(
                            Method::GET,
                            &format!("/v1/roles/{}", urlencode(&name)),
                            NO_BODY,
                        )
                        .await?;
                    if !now.console_account {
                        bail!(
                            "there is no console account {name} yet: give its role, e.g. \
                             outpost console user add {name} --role viewer (or operator, admin; \
                             --scope group:G|label:L to limit it)"
                        );
                    }
                    None
                }
            };
            let password = read_password(password_file.as_deref())?;
            let password_hash = hash_password(&password)?;
            // The role before the account: an account of a name without a row is an admin's.
            if let Some(grant) = &set {
                let view = role::set(&client, &name, grant).await?;
                println!("{} on every node", role::describe(&view, "is now"));
            }
            let _: serde_json::Value = client
                .call(
                    Method::PUT,
                    "/v1/console/users",
                    Some(&ConsoleUserRequest {
                        name: name.clone(),
                        password_hash,
                    }),
                )
                .await?;
            println!("console user {name} can sign in with its password on every node");
        }
        UserCmd::Remove { name, dir } => {
            let path = format!("/v1/console/users/{}", urlencode(&name));
            let _: serde_json::Value = api(remote, &dir)?
                .call(Method::DELETE, &path, NO_BODY)
                .await?;
            println!("console user {name} removed; its sessions are ended");
        }
        UserCmd::List { dir, json } => {
            let users: Vec<ConsoleUserView> = api(remote, &dir)?
                .call(Method::GET, "/v1/console/users", NO_BODY)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                println!("{:<24} {:<22} BY", "NAME", "CHANGED");
                for u in users {
                    println!(
                        "{:<24} {:<22} {}",
                        u.name,
                        format_ms(u.updated_at_ms),
                        u.updated_by
                    );
                }
            }
        }
    }
    Ok(())
}

async fn session(remote: &Remote, cmd: SessionCmd) -> Result<()> {
    match cmd {
        SessionCmd::List { dir, json } => {
            let list: Vec<ConsoleSessionView> = api(remote, &dir)?
                .call(Method::GET, "/v1/console/sessions", NO_BODY)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<18} {:<16} {:<9} {:<22} {:<22} STATE",
                    "ID", "USER", "VIA", "STARTED", "LAST USED"
                );
                for s in list {
                    let state = match (s.active, s.ended_at_ms) {
                        (true, _) => "open".to_string(),
                        (false, Some(at)) => format!("ended {}", format_ms(at)),
                        (false, None) => "expired".to_string(),
                    };
                    println!(
                        "{:<18} {:<16} {:<9} {:<22} {:<22} {state}",
                        s.id,
                        s.user,
                        s.via,
                        format_ms(s.started_at_ms),
                        format_ms(s.last_seen_ms)
                    );
                }
            }
        }
        SessionCmd::End { id, dir } => {
            let path = format!("/v1/console/sessions/{}/end", urlencode(&id));
            let _: serde_json::Value = api(remote, &dir)?
                .call(Method::POST, &path, NO_BODY)
                .await?;
            println!("session {id} ended on every node");
        }
    }
    Ok(())
}

/// The password: the first line of `file`, or of standard input (asked for twice, without
/// echo, on a terminal).
fn read_password(file: Option<&std::path::Path>) -> Result<zeroize::Zeroizing<String>> {
    let first_line = |text: &str| text.lines().next().unwrap_or("").to_owned();
    let password = match file {
        Some(f) => zeroize::Zeroizing::new(first_line(
            &std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
        )),
        None if is_terminal() => {
            let a = prompt_hidden("Password: ")?;
            let b = prompt_hidden("Again: ")?;
            if *a != *b {
                bail!("the two passwords differ");
            }
            a
        }
        None => {
            let mut line = zeroize::Zeroizing::new(String::new());
            std::io::stdin().lock().read_line(&mut line)?;
            zeroize::Zeroizing::new(first_line(&line))
        }
    };
    if password.chars().count() < MIN_PASSWORD_CHARS {
        bail!("a console password has at least {MIN_PASSWORD_CHARS} characters");
    }
    Ok(password)
}

fn is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal()
}

/// Reads a line from the terminal with echo off (restored afterwards).
fn prompt_hidden(prompt: &str) -> Result<zeroize::Zeroizing<String>> {
    use std::io::Write;
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    // SAFETY: tcgetattr/tcsetattr on standard input with a termios we own; the old settings
    // are put back before returning.
    let old = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) != 0 {
            bail!("cannot read the terminal's settings");
        }
        let mut quiet = t;
        quiet.c_lflag &= !libc::ECHO;
        libc::tcsetattr(0, libc::TCSANOW, &quiet);
        t
    };
    let mut line = zeroize::Zeroizing::new(String::new());
    let read = std::io::stdin().lock().read_line(&mut line);
    // SAFETY: as above.
    unsafe { libc::tcsetattr(0, libc::TCSANOW, &old) };
    eprintln!();
    read?;
    Ok(zeroize::Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).to_owned(),
    ))
}

/// An Argon2id PHC string (argon2's defaults: 19 MiB, 2 passes) with a random salt.
pub fn hash_password(password: &str) -> Result<String> {
    use argon2::PasswordHasher;
    use rand::RngCore;
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = argon2::password_hash::SaltString::encode_b64(&salt)
        .map_err(|e| anyhow::anyhow!("encoding a salt: {e}"))?;
    Ok(argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?
        .to_string())
}
