//! What one request may spend, decided from its head before its body is read: the body rule
//! per caller class and route, each connection's share of body bytes in flight, and the
//! extractors that apply the per-client report rates and the enroll/join rate.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::Response;

use crate::api::Caller;
use crate::api::limits::{ApiLimits, Remote, too_many, too_many_of};

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
            Caller::Local | Caller::Admin { .. } | Caller::Node(_) | Caller::Console(_) => {
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
/// route (bundle commit: operators; inventory: clients); an anonymous caller reaches only
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

/// An extractor that applies the client's report rate (`ApiLimits::check_report`) before
/// the handler reads the body: `Inventory`. Callers without a client certificate, and
/// requests over the local socket, pass (the handler refuses them).
pub struct InventoryRate;
/// The same for deployment results.
pub struct ResultsRate;

/// `Err(retry after)` when the calling client sent too many `report`s.
fn report_rate(parts: &Parts, report: Report) -> Result<(), Duration> {
    let (Some(Caller::Client { id, .. }), Some(limits)) = (
        parts.extensions.get::<Caller>(),
        parts.extensions.get::<Arc<ApiLimits>>(),
    ) else {
        return Ok(());
    };
    limits.check_report(report, id)
}

impl<S: Send + Sync> FromRequestParts<S> for InventoryRate {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        report_rate(parts, Report::Inventory)
            .map(|()| InventoryRate)
            .map_err(|wait| too_many_of("inventory reports from this client", wait))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ResultsRate {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        report_rate(parts, Report::Results)
            .map(|()| ResultsRate)
            .map_err(|wait| too_many_of("deployment results from this client", wait))
    }
}

/// An extractor that applies `ApiLimits::check` to the request's source address before the
/// handler (and its body) runs, and answers `too_many` when the limit is reached. Requests
/// over the local socket carry no `Remote` and pass.
pub struct RateLimited;

impl<S: Send + Sync> FromRequestParts<S> for RateLimited {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let remote = parts.extensions.get::<Remote>().copied();
        let limits = parts.extensions.get::<Arc<ApiLimits>>();
        match (remote, limits) {
            (Some(Remote(addr)), Some(limits)) => limits
                .check(addr.ip())
                .map(|()| RateLimited)
                .map_err(too_many),
            _ => Ok(RateLimited),
        }
    }
}
