//! What a signed-in person's scope lets the console show and change: the rules the API's
//! handlers apply, with the same refusals. Lists are filtered (never an error); one client
//! outside reach is refused; an action that touches any client outside reach is refused,
//! naming the first of them.

use axum::http::StatusCode;
use outpost_storage::{Grant, Reader, Scope, StorageError};

use crate::api::ApiError;
use crate::console::Operator;

/// How many clients outside reach a refusal names; the rest are counted.
const NAMED: usize = 10;

/// Refusal of one client outside `op`'s scope.
pub fn client_refused(op: &Operator, id: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "{}'s scope ({}) does not reach client {id}",
            op.user,
            op.grant.scope_text()
        ),
    )
}

/// Refusal of an action whose clients include `outside` (not empty): `subject` says what
/// reaches them ("the selector reaches", "the deployment targets").
pub fn clients_refused(op: &Operator, subject: &str, outside: &[String]) -> ApiError {
    let n = outside.len();
    let named = outside
        .iter()
        .take(NAMED)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let more = if n > NAMED {
        format!(" (and {} more)", n - NAMED)
    } else {
        String::new()
    };
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "{subject} {n} client{} outside {}'s scope ({}): {named}{more}",
            if n == 1 { "" } else { "s" },
            op.user,
            op.grant.scope_text()
        ),
    )
}

/// The ids among `ids` whose client `grant` does not reach. A client the state does not
/// know is counted outside: a scoped person cannot be shown to reach it.
pub fn outside<'a>(
    r: &Reader,
    grant: &Grant,
    ids: impl IntoIterator<Item = &'a String>,
) -> Result<Vec<String>, StorageError> {
    if grant.whole_site() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for id in ids {
        let reached = r
            .client(id)?
            .is_some_and(|c| grant.reaches(&c.groups, &c.labels));
        if !reached {
            out.push(id.clone());
        }
    }
    Ok(out)
}

/// Whether `grant` may change the keys of config scope `scope`: the whole site may change
/// any; a scoped person the groups named in its scope and the clients it reaches.
/// Err: the refusal's text.
pub fn config_allowed(
    r: &Reader,
    name: &str,
    grant: &Grant,
    scope: &Scope,
) -> Result<Result<(), String>, StorageError> {
    if grant.whole_site() {
        return Ok(Ok(()));
    }
    let refused = |what: String| {
        Err(format!(
            "{name}'s scope ({}) does not reach {what}",
            grant.scope_text()
        ))
    };
    Ok(match scope {
        Scope::Global => refused("the global config".into()),
        Scope::Group(g) => {
            if grant
                .scopes
                .contains(&outpost_storage::RoleScope::Group(g.clone()))
            {
                Ok(())
            } else {
                refused(format!("the config of group:{g}"))
            }
        }
        Scope::Client(id) => match r.client(id)? {
            Some(c) if grant.reaches(&c.groups, &c.labels) => Ok(()),
            _ => refused(format!("client {id}")),
        },
    })
}

/// Whether the config page offers forms for `scope` without reading the state: the scopes a
/// scoped person may change are its groups and its clients (checked again on submit).
pub fn config_offered(grant: &Grant, scope: &Scope) -> bool {
    grant.whole_site()
        || match scope {
            Scope::Global => false,
            Scope::Group(g) => grant
                .scopes
                .contains(&outpost_storage::RoleScope::Group(g.clone())),
            Scope::Client(_) => true,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_storage::{PersonRole, RoleScope};

    fn op(scopes: Vec<RoleScope>) -> Operator {
        Operator {
            user: "alice".into(),
            grant: Grant {
                role: PersonRole::Operator,
                scopes,
            },
            session: "s".into(),
            csrf: "t".into(),
        }
    }

    #[test]
    fn refusals_name_the_scope_and_at_most_ten_clients() {
        let alice = op(vec![RoleScope::Label("line2".into())]);
        let ids: Vec<String> = (1..=12).map(|i| format!("c-{i}")).collect();
        let e = clients_refused(&alice, "the selector reaches", &ids);
        assert_eq!(
            e.message(),
            "the selector reaches 12 clients outside alice's scope (label:line2): \
             c-1, c-2, c-3, c-4, c-5, c-6, c-7, c-8, c-9, c-10 (and 2 more)"
        );
        let e = clients_refused(&alice, "the labels name", &ids[..1]);
        assert_eq!(
            e.message(),
            "the labels name 1 client outside alice's scope (label:line2): c-1"
        );
        assert_eq!(
            client_refused(&alice, "c-9").message(),
            "alice's scope (label:line2) does not reach client c-9"
        );
    }

    #[test]
    fn config_forms_follow_the_scope() {
        let scoped = op(vec![RoleScope::Group("lab".into())]).grant;
        assert!(!config_offered(&scoped, &Scope::Global));
        assert!(config_offered(&scoped, &Scope::Group("lab".into())));
        assert!(!config_offered(&scoped, &Scope::Group("office".into())));
        assert!(config_offered(&scoped, &Scope::Client("c-1".into())));
        assert!(config_offered(&Grant::admin(), &Scope::Global));
    }
}
