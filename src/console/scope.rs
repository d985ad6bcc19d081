//! What a signed-in person's scope lets the console offer. The rules themselves (which
//! clients are in reach, the refusals and their messages, config by scope, a deployment's
//! reach) are the API's (`api::clients::{ids_outside, outside_refusal, beyond_reach}`,
//! `api::config::config_reach`, `api::deployments::check_deployment_reach`), called with the
//! operator's `Caller`, so the console refuses exactly what the API refuses, in the same words.

use outpost_storage::{Grant, Scope};

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

    #[test]
    fn config_forms_follow_the_scope() {
        let scoped = Grant {
            role: PersonRole::Operator,
            scopes: vec![RoleScope::Group("lab".into())],
        };
        assert!(!config_offered(&scoped, &Scope::Global));
        assert!(config_offered(&scoped, &Scope::Group("lab".into())));
        assert!(!config_offered(&scoped, &Scope::Group("office".into())));
        assert!(config_offered(&scoped, &Scope::Client("c-1".into())));
        assert!(config_offered(&Grant::admin(), &Scope::Global));
    }
}
