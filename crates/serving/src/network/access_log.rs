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
