//! Client certificate renewal routes: a new certificate for the calling client from a CSR,
//! committed before it is handed out (`/v1/agent/renew`), and the agent's confirmation that
//! it uses it, which ends the retired one (`/v1/agent/renew/confirm`). The agent's side is
//! `agent::renewal`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use outpost_certs::Role;
use outpost_storage::Command;

use crate::api::clients::authorized_client;
use crate::api::{ApiError, ApiResult, AppState, Caller};
use crate::shared::policy::renewal_due;
use crate::wire::{RenewRequest, RenewResponse};

/// A new certificate for the calling client from a CSR; committed before it is handed out.
pub async fn renew(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<RenewRequest>,
) -> Result<Json<RenewResponse>, Response> {
    let client = authorized_client(&st, &caller)
        .await
        .map_err(IntoResponse::into_response)?;
    let Caller::Client {
        serial,
        not_before,
        not_after,
        ..
    } = &caller
    else {
        return Err(
            ApiError::new(StatusCode::FORBIDDEN, "a client certificate is required")
                .into_response(),
        );
    };
    crate::api::fields::csr(&req.csr_pem).map_err(IntoResponse::into_response)?;
    let key_sha256 = outpost_certs::check_csr(&req.csr_pem).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("certificate request refused: {e}"),
        )
        .into_response()
    })?;
    let now_ms = outpost_raft::now_ms();
    let id = client.id.clone();
    let state = st
        .read(move |r| r.client_cert_state(&id))
        .await
        .map_err(IntoResponse::into_response)?
        .ok_or_else(|| {
            ApiError::new(StatusCode::FORBIDDEN, "client is not enrolled").into_response()
        })?;
    let validity = crate::api::clients::client_validity(now_ms / 1000);
    let sign = |serial: &outpost_certs::Serial| {
        st.ca
            .issue_with_serial(
                &req.csr_pem,
                &Role::Client(client.id.clone()),
                &validity,
                serial,
            )
            .map_err(|e| ApiError::internal(format!("signing the renewed certificate: {e}")))
    };
    if &state.cert_serial != serial {
        // The caller holds the retired certificate (still inside its grace). An agent cut off
        // after its renewal committed asks again with the same key: it gets the certificate of
        // the serial already committed, and nothing is written. Any other key is refused.
        let same_key = state.cert_key_sha256.as_deref() == Some(key_sha256.as_str());
        let current = outpost_certs::Serial::from_hex(&state.cert_serial);
        return match (same_key, current) {
            (true, Some(current)) => {
                let cert_pem = sign(&current).map_err(IntoResponse::into_response)?;
                tracing::info!(client = %client.id, serial = %state.cert_serial, "client certificate renewal completed again for the same key");
                Ok(Json(RenewResponse { cert_pem }))
            }
            _ => Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("certificate {serial} was already renewed: use the new certificate"),
            )
            .into_response()),
        };
    }
    // Only inside the renewal window (the last third of the certificate's life, with up to
    // a minute of slack for the agent's clock), and at most once per RENEWAL_INTERVAL_MS.
    let slack = ((not_after - not_before) / 100).clamp(0, 60);
    if !renewal_due(*not_before, *not_after, now_ms / 1000 + slack) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "certificate {serial} is not due for renewal: renew in the last third of its life (it ends at {not_after})"
            ),
        )
        .into_response());
    }
    if let Some(at) = state.renewed_at_ms {
        let next = at.saturating_add(outpost_storage::RENEWAL_INTERVAL_MS);
        if now_ms < next {
            let secs = (next - now_ms + 999) / 1000;
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, secs.to_string())],
                Json(serde_json::json!({
                    "error": format!("client {} renewed its certificate less than an hour ago", client.id)
                })),
            )
                .into_response());
        }
    }
    let new_serial = outpost_certs::Serial::random();
    st.commit(
        &caller,
        Command::RotateClientCert {
            client_id: client.id.clone(),
            old_serial: serial.clone(),
            new_serial: new_serial.to_hex(),
            new_key_sha256: key_sha256,
        },
    )
    .await
    .map_err(IntoResponse::into_response)?;
    let cert_pem = sign(&new_serial).map_err(IntoResponse::into_response)?;
    tracing::info!(client = %client.id, serial = %new_serial.to_hex(), "client certificate renewed");
    Ok(Json(RenewResponse { cert_pem }))
}

/// The agent's first request with its renewed certificate: the retired one ends now.
pub async fn renew_confirm(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<serde_json::Value> {
    let client = authorized_client(&st, &caller).await?;
    let Caller::Client { serial, .. } = &caller else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "a client certificate is required",
        ));
    };
    if &client.cert_serial != serial {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "certificate {serial} is not client {}'s current one",
                client.id
            ),
        ));
    }
    st.commit(
        &caller,
        Command::ConfirmClientCert {
            client_id: client.id.clone(),
            serial: serial.clone(),
        },
    )
    .await?;
    Ok(Json(serde_json::json!({ "confirmed": serial })))
}
