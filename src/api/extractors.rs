//! Extractors that apply a route's rate before its handler (and its body) runs: the
//! per-client report rates (`ApiLimits::check_report`) and the enroll/join rate per source
//! (`ApiLimits::check`). Over the rate they answer `too_many` with Retry-After.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::Response;

use crate::api::Caller;
use crate::api::limits::{ApiLimits, Remote, too_many, too_many_of};
use crate::api::requests::Report;

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
