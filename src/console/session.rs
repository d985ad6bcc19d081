//! Who is signed in to the console, and how one signs in and out.
//!
//! A session is a row replicated through Raft (`StartConsoleSession`), so it is valid on
//! every node once applied there. The cookie `__Host-outpost-session` carries the session's id
//! and a secret (32 random bytes) whose SHA-256 the row keeps: HttpOnly, Secure,
//! SameSite=Strict, host-only, 24 hours at most. A session ends when it is ended (sign-out,
//! `console session end`, the account removed), 24 hours after it started, or after 8 hours
//! unused (each node reports the sessions used on it every minute).
//!
//! Every POST passes `Operator::check`: the request must come from this origin
//! (`Sec-Fetch-Site: same-origin` when sent, `Origin` equal to this host when not `null`) and carry the form
//! field `csrf`, the SHA-256 of the session secret under a fixed prefix: a page of another
//! site can neither read it nor get the cookie sent. The sign-in form, before any session,
//! uses a double-submit token instead (a random cookie equal to the form field).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use outpost_storage::{Command, SessionProof, SignInLock};
use serde::Deserialize;

use crate::api::console::{SESSION_MAX_MS, random_hex, session_active};
use crate::api::limits::Remote;
use crate::api::{ApiError, Caller};
use crate::console::views::{Chrome, Message, SignIn, render};
use crate::console::{Console, throttle};

pub const SESSION_COOKIE: &str = "__Host-outpost-session";
const SIGNIN_COOKIE: &str = "__Host-outpost-signin";

/// An operator with an open session, as every page and action sees it.
#[derive(Debug, Clone)]
pub struct Operator {
    pub user: String,
    /// The account's role and scope as of this request.
    pub grant: outpost_storage::Grant,
    pub session: String,
    /// The token every form of this session carries.
    pub csrf: String,
}

impl Operator {
    /// The caller the console's commands are committed as (`console:NAME` in the audit).
    pub fn caller(&self) -> Caller {
        Caller::Console {
            user: self.user.clone(),
            grant: self.grant.clone(),
        }
    }

    /// The checks of an unsafe request: same origin, and the session's CSRF token.
    pub fn check(&self, headers: &HeaderMap, csrf: &str) -> Result<(), Refused> {
        same_origin(headers)?;
        if crate::shared::text::shown(csrf).is_empty()
            || !ct_eq(csrf.as_bytes(), self.csrf.as_bytes())
        {
            return Err(refused("the form's token is missing or not this session's"));
        }
        Ok(())
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The CSRF token of a session: derived from its secret, so any node can check it.
fn csrf_of(secret: &str) -> String {
    crate::shared::token::secret_sha256(&format!("outpost-console-csrf\n{secret}"))
}

impl FromRequestParts<Arc<Console>> for Operator {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        con: &Arc<Console>,
    ) -> Result<Operator, Response> {
        // The rule's check (`enforce_rule`) already read the session of this request.
        let found = match parts.extensions.get::<Resolved>() {
            Some(Resolved(op)) => Ok(op.clone()),
            None => con.operator(&parts.headers).await,
        };
        match found {
            Ok(Some(op)) => Ok(op),
            Ok(None) if parts.method == Method::GET => {
                let next = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_else(|| "/".into());
                Err(signin_answer(con, StatusCode::UNAUTHORIZED, &next, None))
            }
            Ok(None) => Err((StatusCode::UNAUTHORIZED, "sign in first\n").into_response()),
            Err(e) => Err(failed(con, None, e)),
        }
    }
}

/// The session a request's rule was checked against, kept for the handler's `Operator`.
#[derive(Clone)]
struct Resolved(Option<Operator>);

/// Checks the route's rule (`api::access::Need`) for a signed-in person before the handler
/// reads a byte of the form: a role below the rule's is refused (403, a page naming the role
/// and what the route needs). Open routes and requests without a session go on: the
/// handler's `Operator` answers those with the sign-in page.
pub async fn enforce_rule(
    State((con, rules)): State<(Arc<Console>, Arc<Vec<crate::api::access::RouteRule>>)>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use crate::api::access::{Need, rule_of};
    // A HEAD is answered by the GET route, under its rule.
    let method = if req.method() == Method::HEAD {
        Method::GET
    } else {
        req.method().clone()
    };
    let need = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .and_then(|p| rule_of(&rules, &method, p.as_str()))
        .map(|r| r.need);
    match need {
        // No rule: a method the path does not have (the router answers 405).
        None | Some(Need::Open) => next.run(req).await,
        Some(need) => match con.operator(req.headers()).await {
            Ok(Some(op)) => {
                let path = req.uri().path().to_owned();
                if let Some(e) = crate::api::need_refusal(&op.caller(), Some(need), &method, &path)
                {
                    return failed(&con, Some(&op), e);
                }
                req.extensions_mut().insert(Resolved(Some(op)));
                next.run(req).await
            }
            Ok(None) => {
                req.extensions_mut().insert(Resolved(None));
                next.run(req).await
            }
            Err(e) => failed(&con, None, e),
        },
    }
}

impl Console {
    /// The operator behind the request's session cookie, if it names an open session.
    pub async fn operator(&self, headers: &HeaderMap) -> Result<Option<Operator>, ApiError> {
        let Some((id, secret)) = cookie(headers, SESSION_COOKIE).and_then(|v| {
            let (id, secret) = v.split_once('.')?;
            let hexes =
                |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
            (hexes(id, 16) && hexes(secret, 64)).then(|| (id.to_owned(), secret.to_owned()))
        }) else {
            return Ok(None);
        };
        // A session started a moment ago through another node is found after catching up.
        // Only an account's session is one (links are made only for accounts; a session
        // named otherwise was not made by this version's proposers).
        // The account's role is read after catching up with the leader (single-flight, see
        // `api::access::Freshness`), so a role changed through another node is in force on
        // the next page.
        self.app.catch_up_for_person().await;
        let i = id.clone();
        let row = self
            .app
            .read_caught_up(move |r| {
                Ok(match r.console_session(&i)? {
                    Some(s) if r.console_user(&s.user)?.is_some() => {
                        let grant = r.grant(&s.user)?;
                        Some((s, grant))
                    }
                    _ => None,
                })
            })
            .await?;
        let Some((s, grant)) = row else {
            return Ok(None);
        };
        let hash = crate::shared::token::secret_sha256(&secret);
        let now = outpost_raft::now_ms();
        if !ct_eq(hash.as_bytes(), s.secret_sha256.as_bytes())
            || !session_active(&s, self.seen_here(&s.id), now)
        {
            return Ok(None);
        }
        self.note_seen(&s.id, now);
        Ok(Some(Operator {
            user: s.user,
            grant,
            session: s.id,
            csrf: csrf_of(&secret),
        }))
    }

    /// The sign-in rate limit for the request's source: Err(retry after).
    fn signin_allowed(&self, remote: Option<Remote>) -> Result<(), Duration> {
        use governor::clock::{Clock, DefaultClock};
        self.signin
            .check_key(&outpost_storage::signin_source_key(source_ip(remote)))
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Counts a wrong password for the account (when it exists) and the source on this
    /// node, and commits a lock (in the background) for each that reached its limit, unless
    /// this node already proposed its locks for this minute: then the key stays at its limit
    /// and its next failure asks again.
    fn note_failure(
        self: &Arc<Self>,
        keys: &[(throttle::Scope, String)],
        locks: &[SignInLock],
        now: i64,
    ) {
        let mut propose = Vec::new();
        {
            let Ok(mut f) = self.failures.lock() else {
                return;
            };
            for (scope, key) in keys {
                if !f.fail(*scope, key, now) {
                    continue;
                }
                if self.lock_proposals.check().is_err() {
                    // At most once a minute on this node, however many keys wait.
                    if self.spent_logged.check().is_ok() {
                        tracing::warn!(
                            "sign-in locks wait: this node's {} locks for this minute are spent",
                            throttle::LOCKS_PER_MINUTE
                        );
                    }
                    continue;
                }
                f.proposed(*scope, key);
                propose.push((*scope, key.clone()));
            }
        }
        for (scope, key) in propose {
            let existing = locks.iter().find(|l| l.key == key);
            let until_ms = throttle::next_lock_until(existing, now, self.lock_base_ms);
            let con = self.clone();
            tokio::spawn(async move {
                let app = &con.app;
                let cmd = Command::LockSignIn {
                    key: key.clone(),
                    until_ms,
                };
                match app.commit(&Caller::Node(app.node_id), cmd).await {
                    // One line per lock: at most `LOCKS_PER_MINUTE` a minute per node.
                    Ok(_) => {
                        tracing::warn!(%key, until = %crate::shared::text::format_ms(until_ms), "console sign-ins locked after repeated wrong passwords")
                    }
                    Err(e) => {
                        // The key's next failure proposes the lock again.
                        if let Ok(mut f) = con.failures.lock() {
                            f.not_committed(scope, &key, outpost_raft::now_ms());
                        }
                        tracing::warn!(%key, error = %e.message(), "console sign-in lock not committed")
                    }
                }
            });
        }
    }

    /// Starts a session for `user` with `proof`, and answers with its cookie and a redirect.
    async fn start(
        &self,
        user: &str,
        proof: SessionProof,
        next: &str,
    ) -> Result<Response, ApiError> {
        let (id, secret) = (random_hex(8), random_hex(32));
        let expires_at_ms = outpost_raft::now_ms() + SESSION_MAX_MS;
        // Seen by this node before the redirect (it may have committed through the leader).
        self.commit(
            // A session's start is committed as its account alone (`AppState::commit`).
            &Caller::Console {
                user: user.to_owned(),
                grant: Caller::unresolved(),
            },
            Command::StartConsoleSession {
                id: id.clone(),
                user: user.to_owned(),
                secret_sha256: crate::shared::token::secret_sha256(&secret),
                expires_at_ms,
                proof,
            },
        )
        .await?;
        let cookie = format!(
            "{SESSION_COOKIE}={id}.{secret}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
            SESSION_MAX_MS / 1000
        );
        let mut r = Redirect::to(safe_next(next)).into_response();
        set_cookie(&mut r, &cookie);
        set_cookie(&mut r, &clear(SIGNIN_COOKIE));
        Ok(r)
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    next: String,
}

/// `GET /login`: the sign-in form (or the overview when already signed in).
pub async fn signin_page(
    State(con): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    match con.operator(&headers).await {
        Ok(Some(_)) => Redirect::to(safe_next(&q.next)).into_response(),
        _ => signin_answer(&con, StatusCode::OK, &q.next, None),
    }
}

/// The sign-in page, with a fresh double-submit token in a cookie and in the form.
fn signin_answer(con: &Console, status: StatusCode, next: &str, error: Option<String>) -> Response {
    let token = random_hex(16);
    let page = SignIn {
        c: Chrome::anonymous(con, "Sign in"),
        next: safe_next(next).to_owned(),
        token: token.clone(),
        error,
    };
    let mut r = (status, render(&page)).into_response();
    set_cookie(
        &mut r,
        &format!(
            "{SIGNIN_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=3600"
        ),
    );
    r
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    name: String,
    password: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /login`: a name and password. Same origin and the double-submit token first, then
/// the rate limit per source, then the locks of the account and the source (`throttle`), then
/// a free password check (else 429 at once), then the hash (on a blocking thread; a name
/// without an account costs the same as a wrong password).
pub async fn signin(
    State(con): State<Arc<Console>>,
    remote: Option<axum::Extension<Remote>>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<SignInForm>,
) -> Response {
    if let Err(r) = same_origin(&headers) {
        return r.into_response();
    }
    let token_ok = cookie(&headers, SIGNIN_COOKIE)
        .is_some_and(|c| !c.is_empty() && ct_eq(c.as_bytes(), form.token.as_bytes()));
    if !token_ok {
        return refused("the sign-in form's token is missing or does not match its cookie")
            .into_response();
    }
    let remote = remote.map(|axum::Extension(r)| r);
    let ip = source_ip(remote);
    let busy = |con: &Console, wait: u64, text: String| {
        let mut r = signin_answer(con, StatusCode::TOO_MANY_REQUESTS, &form.next, Some(text));
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait.max(1)));
        r
    };
    if let Err(wait) = con.signin_allowed(remote) {
        con.app.refusals.count(ROUTE, "source-rate", Some(ip));
        let wait = wait.as_secs() + 1;
        return busy(
            &con,
            wait,
            format!("Too many sign-in attempts from your address; try again in {wait} s."),
        );
    }
    let wrong = || {
        signin_answer(
            &con,
            StatusCode::UNAUTHORIZED,
            &form.next,
            Some("Wrong name or password.".into()),
        )
    };
    if crate::api::fields::id("name", &form.name).is_err() || form.password.len() > 1024 {
        return wrong();
    }
    let (account, source) = (
        outpost_storage::signin_account_key(&form.name),
        outpost_storage::signin_source_key(ip),
    );
    let (name, k) = (form.name.clone(), vec![account.clone(), source.clone()]);
    let (user, locks) = match con
        .app
        .read(move |r| Ok((r.console_user(&name)?, r.signin_locks(&k)?)))
        .await
    {
        Ok(u) => u,
        Err(e) => return failed(&con, None, e),
    };
    let now = outpost_raft::now_ms();
    if let Some(until) = throttle::locked_until(&locks, now) {
        if con.app.refusals.count(ROUTE, "locked", Some(ip)) {
            tracing::info!(source = %ip, name = %crate::shared::text::shown(&form.name), "console sign-in refused: locked after repeated wrong passwords (logged once a minute per source)");
        }
        let wait = ((until - now) / 1000 + 1) as u64;
        return busy(
            &con,
            wait,
            format!(
                "Sign-ins to this account or from your address are paused until {} after repeated wrong passwords; try again in {wait} s. A one-time link from `outpost console login` on a node works at any time.",
                super::when(until)
            ),
        );
    }
    // Each check holds 19 MiB and a core: never more at once than the node has cores.
    let Ok(permit) = con.argon2.clone().try_acquire_owned() else {
        con.app.refusals.count(ROUTE, "busy", Some(ip));
        return busy(
            &con,
            1,
            "This node is busy checking other sign-ins; try again in a moment.".into(),
        );
    };
    let exists = user.is_some();
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let password = zeroize::Zeroizing::new(form.password);
    let verified = con
        .checkers
        .run(move || {
            let ok = verify_password(stored.as_deref(), &password);
            drop(permit);
            ok
        })
        .await;
    let verified = match verified {
        Ok(v) => v,
        Err(e) => {
            con.app.refusals.count(ROUTE, "busy", Some(ip));
            return busy(
                &con,
                1,
                format!("This node is busy checking other sign-ins ({e}); try again in a moment."),
            );
        }
    };
    let Some(user) = user.filter(|_| verified) else {
        if con.app.refusals.count(ROUTE, "wrong-password", Some(ip)) {
            tracing::info!(source = %ip, name = %crate::shared::text::shown(&form.name), "console sign-in refused: wrong name or password (logged once a minute per source)");
        }
        // A name without an account is not counted (made-up names would take the room of
        // real ones); its source is.
        let keys = throttle::failure_keys(exists, account, source);
        con.note_failure(&keys, &locks, now);
        return wrong();
    };
    if let Ok(mut f) = con.failures.lock() {
        f.forget(throttle::Scope::Account, &account);
    }
    let proof = SessionProof::Password {
        hash_sha256: crate::shared::token::secret_sha256(&user.password_hash),
    };
    match con.start(&user.name, proof, &form.next).await {
        Ok(r) => r,
        Err(e) => failed(&con, None, e),
    }
}

/// The refusals of the sign-in form in `/metrics`: `outpost_refused_requests_total{route="console.signin"}`.
const ROUTE: &str = "console.signin";

/// The request's source address (the local socket counts as loopback).
fn source_ip(remote: Option<Remote>) -> std::net::IpAddr {
    remote
        .map(|Remote(a)| a.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// A dummy hash verified when the account does not exist, so that both cost the same.
const NO_SUCH_USER: &str = "$argon2id$v=19$m=19456,t=2,p=1$b3V0cG9zdC1ub2JvZHk$Y8dvrlJ5Ecp4DgV1B2JiTC4VnWoj8Y0E3bNmVgjnC3c";

fn verify_password(stored: Option<&str>, password: &str) -> bool {
    use argon2::{Argon2, PasswordHash, PasswordVerifier};
    let phc = stored.unwrap_or(NO_SUCH_USER);
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_ok();
    ok && stored.is_some()
}

/// `GET /login/link/ID.SECRET`: a one-time link from `outpost console login`. Consumed by a
/// Raft command, so it works once on whichever node it is opened.
pub async fn link(
    State(con): State<Arc<Console>>,
    remote: Option<axum::Extension<Remote>>,
    Path(token): Path<String>,
) -> Response {
    let invalid = |con: &Console, text: &str| {
        message(
            con,
            StatusCode::FORBIDDEN,
            "This sign-in link does not work",
            text,
        )
    };
    if let Err(wait) = con.signin_allowed(remote.map(|axum::Extension(r)| r)) {
        con.app.refusals.count(ROUTE, "source-rate", None);
        return message(
            &con,
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts",
            &format!("Try again in {} s.", wait.as_secs() + 1),
        );
    }
    let Some((id, secret)) = token.split_once('.').filter(|(id, secret)| {
        crate::api::fields::id("link", id).is_ok()
            && crate::api::fields::sha256_hex("secret", secret).is_ok()
    }) else {
        return invalid(&con, "It is not a sign-in link.");
    };
    let (id, secret) = (id.to_owned(), secret.to_owned());
    let i = id.clone();
    let user = match con
        .app
        .read_caught_up(move |r| r.console_link_user(&i))
        .await
    {
        Ok(u) => u,
        Err(e) => return failed(&con, None, e),
    };
    let Some(user) = user else {
        return invalid(
            &con,
            "This cluster never made it. Make a new one with `outpost console login` on a node.",
        );
    };
    // Links are made only for accounts: one for a name without an account starts nothing.
    let u = user.clone();
    match con.app.read(move |r| r.console_user(&u)).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return invalid(
                &con,
                "It names no console account. Add the account with `outpost console user add NAME --role R` first.",
            );
        }
        Err(e) => return failed(&con, None, e),
    }
    let proof = SessionProof::Link {
        id,
        secret_sha256: crate::shared::token::secret_sha256(&secret),
    };
    match con.start(&user, proof, "/").await {
        Ok(r) => r,
        Err(e) => invalid(
            &con,
            &format!(
                "{}. A link works once, for five minutes: make a new one with `outpost console login` on a node.",
                e.message()
            ),
        ),
    }
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// `POST /logout`: ends this session on every node.
pub async fn signout(
    State(con): State<Arc<Console>>,
    op: Operator,
    headers: HeaderMap,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    if let Err(r) = op.check(&headers, &form.csrf) {
        return r.into_response();
    }
    let cmd = Command::EndConsoleSession {
        id: op.session.clone(),
    };
    if let Err(e) = con.commit(&op.caller(), cmd).await {
        return failed(&con, Some(&op), e);
    }
    let mut r = Redirect::to("/login").into_response();
    set_cookie(&mut r, &clear(SESSION_COOKIE));
    r
}

/// Refuses a request that is not from this origin: `Sec-Fetch-Site` other than
/// `same-origin`, an `Origin` other than this host, or neither header (every browser that
/// runs the console sends at least one on a POST).
pub fn same_origin(headers: &HeaderMap) -> Result<(), Refused> {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if site.is_some_and(|s| s != "same-origin") {
        return Err(refused("a request from another site"));
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    // A browser says `Origin: null` where a referrer policy hides the origin: then only
    // `Sec-Fetch-Site` (which no page can set) tells.
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| *o != "null");
    match (origin, host) {
        (Some(origin), Some(host)) if origin == format!("https://{host}") => Ok(()),
        (Some(origin), host) => Err(refused(&format!(
            "a request from another origin ({} is not https://{})",
            crate::shared::text::shown(origin),
            crate::shared::text::shown(host.unwrap_or("?"))
        ))),
        (None, _) if site.is_some() => Ok(()),
        (None, _) => Err(refused("a request without Origin or Sec-Fetch-Site")),
    }
}

/// A request refused before anything was read or written: 403 with the reason.
#[derive(Debug)]
pub struct Refused(String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (StatusCode::FORBIDDEN, format!("refused: {}\n", self.0)).into_response()
    }
}

fn refused(why: &str) -> Refused {
    Refused(why.to_owned())
}

/// A page that says one thing (a refusal, an error), with nothing of the cluster in it
/// unless `op` is signed in.
pub fn message(con: &Console, status: StatusCode, heading: &str, text: &str) -> Response {
    let page = Message {
        c: Chrome::anonymous(con, heading),
        heading: heading.to_owned(),
        text: text.to_owned(),
    };
    (status, render(&page)).into_response()
}

/// An error answer as a page: its status from the API error, its text as the node said it.
pub fn failed(con: &Console, op: Option<&Operator>, e: ApiError) -> Response {
    let text = e.message().to_owned();
    let status = e.into_response().status();
    let page = Message {
        c: match op {
            Some(op) => Chrome::new(con, op, "Error", ""),
            None => Chrome::anonymous(con, "Error"),
        },
        heading: format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ),
        text,
    };
    (status, render(&page)).into_response()
}

/// `next` if it is a path on this site, else `/`.
fn safe_next(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/"
    }
}

/// The value of cookie `name` in the request, if sent.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn clear(name: &str) -> String {
    format!("{name}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

fn set_cookie(r: &mut Response, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_next_and_origins() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-outpost-session=abc.def; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc.def"));
        assert_eq!(cookie(&h, "c"), None);
        for (next, want) in [
            ("/clients?q=a", "/clients?q=a"),
            ("//evil.example/", "/"),
            ("https://evil.example/", "/"),
            ("/\\evil", "/"),
            ("", "/"),
        ] {
            assert_eq!(safe_next(next), want, "{next}");
        }
        let origin = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("10.0.0.1:7443"));
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            same_origin(&h).is_ok()
        };
        assert!(origin(&[("origin", "https://10.0.0.1:7443")]));
        assert!(origin(&[("sec-fetch-site", "same-origin")]));
        assert!(!origin(&[("origin", "https://evil.example")]));
        assert!(!origin(&[("origin", "http://10.0.0.1:7443")]));
        assert!(!origin(&[
            ("origin", "https://10.0.0.1:7443"),
            ("sec-fetch-site", "cross-site")
        ]));
        assert!(!origin(&[("sec-fetch-site", "same-site")]));
        assert!(!origin(&[]));
        assert!(!origin(&[("origin", "null")]));
        assert!(origin(&[
            ("origin", "null"),
            ("sec-fetch-site", "same-origin")
        ]));
    }

    #[test]
    fn passwords_verify_only_for_an_account() {
        use argon2::PasswordHasher;
        let salt = argon2::password_hash::SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap();
        let hash = argon2::Argon2::default()
            .hash_password(b"right horse", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password(Some(&hash), "right horse"));
        assert!(!verify_password(Some(&hash), "wrong horse"));
        assert!(!verify_password(None, "right horse"));
        assert!(argon2::PasswordHash::new(NO_SUCH_USER).is_ok());
    }
}
