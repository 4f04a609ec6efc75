//! The access log: one line per request, on the `teeserve_serving::access` target, from gRPC
//! and REST alike.

use std::time::Instant;

/// One access-log line, never payloads; `status` in the entry's own terms (REST: the HTTP status; gRPC: the
/// status code's name, e.g. `OK`, `NOT_FOUND`).
pub(crate) fn access_log(
    entry: &str,
    method: &str,
    model: &str,
    status: &dyn std::fmt::Display,
    start: Instant,
) {
    tracing::info!(
        target: "teeserve_serving::access",
        entry,
        method,
        model,
        status = %status,
        latency_ms = format!("{:.3}", start.elapsed().as_secs_f64() * 1e3),
        "request"
    );
}

/// The access-log line of a gRPC call that `start`ed then, and its answer as a gRPC response.
pub(crate) fn grpc_answer<T>(
    method: &str,
    model: &str,
    start: Instant,
    out: Result<T, crate::api::error::ApiError>,
) -> Result<tonic::Response<T>, tonic::Status> {
    let status = out.as_ref().map(|_| "OK").unwrap_or_else(|e| e.code_name());
    access_log("grpc", method, model, &status, start);
    out.map(tonic::Response::new)
        .map_err(crate::api::error::ApiError::into_status)
}
