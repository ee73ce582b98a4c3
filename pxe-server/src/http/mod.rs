//! The appliance's HTTP service: boot scripts, assets, the operator API and the agent API.
//!
//! Handlers are thin: they authenticate, validate, call the pure cores (`boot`, `lifecycle`,
//! `identity`) and the store, and map results to JSON. Every refusal is
//! `{ "error": { "code", "message" } }` with a stable code; nothing is acknowledged before the
//! store has committed it.

mod agent;
mod assets;
mod boot;
mod operator;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use pxe_api::{ApiError, ErrorBody, routes};

use crate::boot::ScriptConfig;
use crate::store::{Store, StoreError};

/// Largest accepted request body for most routes.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Largest accepted hardware report (many disks and NICs, DIMM tables).
pub const REGISTER_BODY_LIMIT: usize = 1024 * 1024;
/// Lifetime of a per-boot agent token (it is also revoked on every state change).
pub const AGENT_TOKEN_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

/// Shared state of the HTTP service.
#[derive(Debug)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Script settings.
    pub script: ScriptConfig,
    /// Assets directory (canonical).
    pub assets: PathBuf,
    /// The operator token.
    pub operator_token: String,
    /// Source of wall-clock time (injectable for tests).
    pub clock: fn() -> i64,
    /// Serve a script carrying an agent token only to the address holding the MAC's DHCP lease
    /// (full DHCP mode: the appliance is the source of truth for who holds which address).
    pub bind_tokens_to_leases: bool,
    /// MACs of registered machines, for the DHCP service's unknown-client share (kept in step
    /// with registrations; loaded from the store at start).
    pub known_macs: std::sync::RwLock<std::collections::HashSet<pxe_api::Mac>>,
    /// DHCP counters and foreign servers seen, when DHCP runs.
    pub dhcp: Option<Arc<crate::dhcp::DhcpShared>>,
    /// Retries of failed install/recycle orders.
    pub retry: crate::lifecycle::RetryPolicy,
}

/// Wall-clock Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A refusal or failure, rendered as the JSON error body.
#[derive(Debug)]
pub struct ApiFailure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiFailure {
    /// A refusal with a stable code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiFailure {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub(crate) fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub(crate) fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
}

impl From<StoreError> for ApiFailure {
    fn from(e: StoreError) -> Self {
        let mut chain = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            src = s.source();
        }
        tracing::error!(error = %chain, "store failure");
        ApiFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the appliance's store failed; nothing was changed",
        )
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ApiError {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// Parses a JSON body, mapping every failure to a stable code.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, ApiFailure> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiFailure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "request body too large",
            )
        } else {
            ApiFailure::bad_request("invalid_body", "could not read the request body")
        }
    })?;
    let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
    serde_json::from_slice(bytes)
        .map_err(|e| ApiFailure::bad_request("invalid_body", format!("invalid JSON body: {e}")))
}

/// The bearer token of a request, if the header is present.
pub(crate) fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// Builds the router.
pub fn router(state: Arc<AppState>) -> Router {
    let operator = Router::new()
        .route(routes::MACHINES, get(operator::list))
        .route("/api/v1/machines/{id}", get(operator::show))
        .route("/api/v1/machines/{id}/install", post(operator::install))
        .route("/api/v1/machines/{id}/recycle", post(operator::recycle))
        .route("/api/v1/machines/{id}/broken", post(operator::broken))
        .route("/api/v1/machines/{id}/in-use", post(operator::in_use))
        .route("/api/v1/machines/{id}/retire", post(operator::retire))
        .route("/api/v1/machines/{id}/history", get(operator::history))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    let agent_small = Router::new()
        .route(routes::AGENT_ORDERS, get(agent::orders))
        .route(routes::AGENT_PROGRESS, post(agent::progress))
        .route(routes::AGENT_RESULT, post(agent::result))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    let agent_register = Router::new()
        .route(routes::AGENT_REGISTER, post(agent::register))
        .layer(DefaultBodyLimit::max(REGISTER_BODY_LIMIT));
    Router::new()
        .route(routes::HEALTHZ, get(|| async { "ok\n" }))
        .route(routes::OPENAPI, get(openapi))
        .route("/api/v1/health", get(operator::health))
        .route(routes::BOOT_SCRIPT, get(boot::script))
        .route("/assets/{*path}", get(assets::serve))
        .merge(operator)
        .merge(agent_small)
        .merge(agent_register)
        .fallback(|| async { ApiFailure::not_found("not_found", "no such route") })
        .with_state(state)
}

/// The OpenAPI document for `/api/v1`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
