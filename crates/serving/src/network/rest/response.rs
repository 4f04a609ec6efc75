//! REST responses: TF Serving's JSON bodies and error objects, with CORS headers when enabled.

use std::sync::Arc;

use axum::body::Body;
use hyper::{Response, StatusCode};
use serde_json::json;
use tonic::Code;

use crate::api::error::ApiError;

/// What the REST handler needs besides the core.
#[derive(Debug, Clone)]
pub(crate) struct RestContext {
    /// Prometheus path, when metrics are enabled.
    pub metrics_path: Option<String>,
    /// Who may read the metrics, when not everyone: clients whose certificate this verifier
    /// accepts (the monitoring client CA's).
    pub metrics_clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    /// Add CORS headers.
    pub cors: bool,
    /// What answers /v1/attestation (None: this server publishes no attestation).
    pub attestation: Option<Arc<crate::network::attestation::Attestor>>,
    /// Signs receipts (None: this server cannot, having no attestation document).
    pub receipts: Option<Arc<crate::network::receipts::Receipts>>,
    /// Largest request body.
    pub max_body: usize,
}

pub(super) fn respond(
    status: u16,
    body: String,
    ctx: &RestContext,
    content_type: &'static str,
) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    if ctx.cors {
        h.insert(
            "access-control-allow-origin",
            hyper::header::HeaderValue::from_static("*"),
        );
        h.insert(
            "access-control-allow-methods",
            hyper::header::HeaderValue::from_static("POST, GET"),
        );
        h.insert(
            "access-control-allow-headers",
            hyper::header::HeaderValue::from_static("Content-Type"),
        );
    }
    r
}

pub(super) fn error(e: &ApiError, ctx: &RestContext) -> Response<Body> {
    respond(
        e.http_status(),
        json!({"error": e.message}).to_string(),
        ctx,
        "application/json",
    )
}

pub(super) fn ok_json(v: String, ctx: &RestContext) -> Response<Body> {
    respond(200, v, ctx, "application/json")
}

pub(super) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidArgument, msg)
}

pub(super) fn resp_with(e: (u16, String), ctx: &RestContext) -> Response<Body> {
    respond(
        e.0,
        json!({"error": e.1}).to_string(),
        ctx,
        "application/json",
    )
}
