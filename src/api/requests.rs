//! What one request may spend, decided from its head before its body is read: the body rule
//! per caller class and route, and each connection's share of body bytes in flight. Pure; the
//! extractors that apply the rates are in `extractors`.

use axum::http::{Method, StatusCode};

use crate::api::Caller;

/// Whose body a request carries, for the body limits and the bytes in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// No certificate (enroll, join, the console's pages and forms).
    Anonymous,
    Client,
    /// Admins, the local socket and nodes.
    Operator,
}

impl Class {
    pub(crate) const ALL: [Class; 3] = [Class::Anonymous, Class::Client, Class::Operator];

    pub fn of(caller: &Caller) -> Class {
        match caller {
            Caller::Anonymous => Class::Anonymous,
            Caller::Client { .. } => Class::Client,
            Caller::Local | Caller::Admin { .. } | Caller::Node(_) | Caller::Console { .. } => {
                Class::Operator
            }
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Class::Anonymous => "anonymous",
            Class::Client => "client",
            Class::Operator => "operator",
        }
    }
}

/// Bytes of request bodies one connection of `class` may have in flight at once: one body of
/// the largest route its caller may use. HTTP/2 streams of one connection share it, so a
/// connection cannot take a class's budget with many streams of trickled bodies.
pub fn connection_body_bytes(class: Class) -> usize {
    match class {
        Class::Anonymous => crate::api::BODY_LIMIT,
        Class::Client => crate::api::INVENTORY_BODY_LIMIT,
        Class::Operator => crate::api::BUNDLE_BODY_LIMIT,
    }
}

/// What may be read of a request's body: decided from its caller's class, method and path
/// before a byte of it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRule {
    /// At most this many bytes.
    Read(usize),
    /// Answered at once with this status; the body is never read.
    Refuse(StatusCode),
}

/// Pure: the body rule of one request. Big limits only for the identity that may use the
/// route (bundle commit and client labels: operators; inventory: clients); an anonymous caller reaches only
/// health, enroll, join and the console's pages (which sign in by cookie), with the small
/// limit; every other API route answers it 401 unread.
pub fn body_rule(class: Class, method: &Method, path: &str) -> BodyRule {
    use crate::api::{BODY_LIMIT, BUNDLE_BODY_LIMIT, INVENTORY_BODY_LIMIT};
    let path = path.trim_end_matches('/');
    if *method == Method::POST && path == "/v1/bundles" {
        return match class {
            Class::Operator => BodyRule::Read(BUNDLE_BODY_LIMIT),
            Class::Anonymous => BodyRule::Refuse(StatusCode::UNAUTHORIZED),
            Class::Client => BodyRule::Refuse(StatusCode::FORBIDDEN),
        };
    }
    if *method == Method::PUT && path == "/v1/agent/inventory" {
        return match class {
            Class::Client => BodyRule::Read(INVENTORY_BODY_LIMIT),
            Class::Anonymous => BodyRule::Refuse(StatusCode::UNAUTHORIZED),
            Class::Operator => BodyRule::Refuse(StatusCode::FORBIDDEN),
        };
    }
    if *method == Method::POST && path == "/v1/clients/labels" {
        return match class {
            Class::Operator => BodyRule::Read(crate::api::rollout_input::LABELS_BODY_LIMIT),
            Class::Anonymous => BodyRule::Refuse(StatusCode::UNAUTHORIZED),
            Class::Client => BodyRule::Refuse(StatusCode::FORBIDDEN),
        };
    }
    if class == Class::Anonymous {
        let open = match path {
            "/healthz" | "/readyz" => true,
            "/v1/enroll" | "/v1/join" => *method == Method::POST,
            "/metrics" => false,
            p => !(p == "/v1" || p.starts_with("/v1/")),
        };
        if !open {
            return BodyRule::Refuse(StatusCode::UNAUTHORIZED);
        }
    }
    BodyRule::Read(BODY_LIMIT)
}

/// Which per-client report rate a route counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    Inventory,
    Results,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::limits::LimitsConfig;

    #[test]
    fn body_rules_follow_the_caller() {
        use crate::api::rollout_input::LABELS_BODY_LIMIT;
        use crate::api::{BODY_LIMIT, BUNDLE_BODY_LIMIT, INVENTORY_BODY_LIMIT};
        use BodyRule::{Read, Refuse};
        use Class::{Anonymous, Client, Operator};
        let (get, post, put) = (Method::GET, Method::POST, Method::PUT);
        let cases = [
            (
                Anonymous,
                &post,
                "/v1/bundles",
                Refuse(StatusCode::UNAUTHORIZED),
            ),
            (Client, &post, "/v1/bundles", Refuse(StatusCode::FORBIDDEN)),
            (Operator, &post, "/v1/bundles/", Read(BUNDLE_BODY_LIMIT)),
            (
                Anonymous,
                &put,
                "/v1/agent/inventory",
                Refuse(StatusCode::UNAUTHORIZED),
            ),
            (
                Operator,
                &put,
                "/v1/agent/inventory",
                Refuse(StatusCode::FORBIDDEN),
            ),
            (
                Client,
                &put,
                "/v1/agent/inventory",
                Read(INVENTORY_BODY_LIMIT),
            ),
            (Anonymous, &post, "/v1/enroll", Read(BODY_LIMIT)),
            (Anonymous, &post, "/v1/join", Read(BODY_LIMIT)),
            (
                Anonymous,
                &get,
                "/v1/join",
                Refuse(StatusCode::UNAUTHORIZED),
            ),
            (Anonymous, &get, "/healthz", Read(BODY_LIMIT)),
            (Anonymous, &get, "/readyz", Read(BODY_LIMIT)),
            (
                Anonymous,
                &get,
                "/metrics",
                Refuse(StatusCode::UNAUTHORIZED),
            ),
            (
                Anonymous,
                &get,
                "/v1/status",
                Refuse(StatusCode::UNAUTHORIZED),
            ),
            (
                Anonymous,
                &post,
                "/v1/agent/results",
                Refuse(StatusCode::UNAUTHORIZED),
            ),
            (
                Anonymous,
                &put,
                "/v1/config",
                Refuse(StatusCode::UNAUTHORIZED),
            ),
            (Anonymous, &get, "/v1", Refuse(StatusCode::UNAUTHORIZED)),
            // The console signs in by cookie on an anonymous connection: small bodies.
            (Anonymous, &post, "/login", Read(BODY_LIMIT)),
            (Anonymous, &post, "/config/set", Read(BODY_LIMIT)),
            (Anonymous, &get, "/", Read(BODY_LIMIT)),
            (Client, &post, "/v1/agent/results", Read(BODY_LIMIT)),
            (Operator, &put, "/v1/config", Read(BODY_LIMIT)),
            // A label request may name 10,000 clients.
            (
                Operator,
                &post,
                "/v1/clients/labels",
                Read(LABELS_BODY_LIMIT),
            ),
            (
                Client,
                &post,
                "/v1/clients/labels",
                Refuse(StatusCode::FORBIDDEN),
            ),
            (
                Anonymous,
                &post,
                "/v1/clients/labels",
                Refuse(StatusCode::UNAUTHORIZED),
            ),
        ];
        for (class, method, path, want) in cases {
            assert_eq!(
                body_rule(class, method, path),
                want,
                "{class:?} {method} {path}"
            );
        }
        assert!(BUNDLE_BODY_LIMIT <= LimitsConfig::default().body_bytes[Class::Operator as usize]);
        assert!(INVENTORY_BODY_LIMIT <= LimitsConfig::default().body_bytes[Class::Client as usize]);
    }
}
