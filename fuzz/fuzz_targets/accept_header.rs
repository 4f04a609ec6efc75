//! A requester's `x-teeserve-accept-sha256` header (its per-request model pin): any bytes are
//! read into digests per model or refused with a reason, within the digest bound. The same
//! bytes as a gRPC call's `grpc-timeout` are read into a deadline of at most 99,999,999 hours
//! or refused.
//!
//! ```text
//! cargo fuzz run accept_header -- -rss_limit_mb=512
//! ```
#![no_main]
use libfuzzer_sys::fuzz_target;
use teeserve_serving::scope::{accepted, grpc_timeout, ACCEPT_HEADER, MAX_ACCEPTED};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = hyper::http::HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = hyper::http::HeaderMap::new();
    headers.append("grpc-timeout", value.clone());
    headers.append("content-type", "application/grpc".parse().unwrap());
    if let Ok(Some(d)) = grpc_timeout(&headers) {
        assert!(d <= std::time::Duration::from_secs(99_999_999 * 3600));
    }
    headers.append(ACCEPT_HEADER, value);
    if let Ok(Some(a)) = accepted(&headers) {
        let n = a.any.len() + a.by_model.values().map(Vec::len).sum::<usize>();
        assert!(n >= 1 && n <= MAX_ACCEPTED);
        for d in a.any.iter().chain(a.by_model.values().flatten()) {
            assert_eq!(d.len(), 64);
        }
    }
});
