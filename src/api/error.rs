//! The API's error answer: a status and `{"error": message}`, and how a rejected command
//! maps to a status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use outpost_storage::{Outcome, RejectCode, Response as Done};

#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Sent as `Retry-After` (whole seconds).
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    /// 429 with `Retry-After` (rounded up to whole seconds, at least 1).
    pub(crate) fn too_many(
        message: impl Into<String>,
        retry_after: std::time::Duration,
    ) -> ApiError {
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        ApiError {
            retry_after: Some(secs.max(1)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
        }
    }
    pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
    pub(crate) fn unavailable(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
    /// 507: the data directory's file system is below its free-space floor
    /// (`metrics::diskguard`); `message` names the node, the path and the sizes.
    pub(crate) fn insufficient_storage(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INSUFFICIENT_STORAGE, message)
    }
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

pub type ApiResult<T> = Result<Json<T>, ApiError>;

pub(crate) fn outcome(o: Outcome) -> Result<Done, ApiError> {
    o.map_err(|r| {
        let status = match r.code {
            RejectCode::NotFound => StatusCode::NOT_FOUND,
            RejectCode::AlreadyExists => StatusCode::CONFLICT,
            RejectCode::TokenInvalid | RejectCode::TokenExpired | RejectCode::TokenUsedUp => {
                StatusCode::FORBIDDEN
            }
            RejectCode::Invalid => StatusCode::BAD_REQUEST,
            RejectCode::NotInitialized => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, r.message)
    })
}
