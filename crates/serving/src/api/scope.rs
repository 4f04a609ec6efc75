//! What a request carries besides its message, for the layers below the transport: the
//! connection it arrived on (batching keeps requesters apart by it) and the model files the
//! requester accepts (`x-teeserve-accept-sha256`), so that a requester's pin holds for every
//! request and not only for the handshake.
//!
//! The connection layer sets it once per request ([`scoped`]); the API layer reads it
//! ([`current`]) where it resolves the model and batches, and says there which model version
//! answered, for the request's receipt when it asked for one ([`RECEIPT_HEADER`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use teeserve_ratls::document::ACCEPT_HEADER;

use crate::api::shares::PeerKey;

/// The header (REST) and metadata key (gRPC) with which a request asks for a receipt (`1`).
pub const RECEIPT_HEADER: &str = "x-teeserve-receipt";

/// The most digests one request may list.
pub const MAX_ACCEPTED: usize = 64;

/// One request's scope.
#[derive(Debug, Clone, Default)]
pub struct RequestScope {
    /// The connection the request arrived on (0: none, e.g. warmup replay).
    pub connection: u64,
    /// The peer it came from, whose share of the requests in flight and of their memory it
    /// counts against ([`crate::api::shares`]).
    pub peer: PeerKey,
    /// The model files the requester accepts, if it said.
    pub accepted: Option<Arc<Accepted>>,
    /// Why the requester's list could not be read: the request is refused.
    pub malformed: Option<String>,
    /// Where the API layer says what answered, when the request asked for a receipt.
    pub receipt: Option<Arc<std::sync::OnceLock<Answered>>>,
    /// When the requester stops waiting (a gRPC call's `grpc-timeout`), if it said.
    pub deadline: Option<std::time::Instant>,
    /// Memory of the budget the request's answer keeps until its response body has been sent
    /// (or dropped): the response's body, and the request's body it was made from.
    pub held: Option<ResponseHold>,
}

/// What a response keeps until its body has been sent or dropped (the memory it holds of the
/// in-flight budget): the connection's response body holds one clone, the request's scope
/// another, so a response the peer does not read keeps its memory counted against the peer's
/// share.
#[derive(Clone, Default)]
pub struct ResponseHold(Arc<std::sync::Mutex<Vec<Box<dyn std::any::Any + Send>>>>);

impl std::fmt::Debug for ResponseHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|v| v.len()).unwrap_or(0);
        write!(f, "ResponseHold({n})")
    }
}

/// Keeps `held` until the current request's response has been sent (dropped at once outside a
/// request, e.g. warmup replay).
pub fn hold_until_sent<T: Send + 'static>(held: T) {
    let _ = SCOPE.try_with(|s| {
        if let Some(h) = &s.held {
            if let Ok(mut v) = h.0.lock() {
                v.push(Box::new(held));
            }
        }
    });
}

/// The model version that answered a request, and the signature it ran, for its receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// The model.
    pub model: String,
    /// Its version.
    pub version: i64,
    /// SHA-256 (hex) of the file the version was loaded from.
    pub sha256: String,
    /// The signature run (`serving_default` when the request named none).
    pub signature: String,
}

/// Whether `headers` ask for a receipt: exactly one [`RECEIPT_HEADER`] of value `1`. Any other
/// value, or the header more than once, is an error that names it ([`receipt_asked`]), which
/// refuses the request: a requester that meant to ask for a receipt learns that it did not.
pub fn wants_receipt(headers: &hyper::http::HeaderMap) -> bool {
    receipt_asked(headers) == Ok(true)
}

/// Reads [`RECEIPT_HEADER`]: absent, `1` once, or an error naming what was sent instead.
pub fn receipt_asked(headers: &hyper::http::HeaderMap) -> Result<bool, String> {
    let mut values = headers.get_all(RECEIPT_HEADER).iter();
    let Some(first) = values.next() else {
        return Ok(false);
    };
    let more = values.count();
    if more > 0 {
        return Err(format!(
            "{RECEIPT_HEADER}: sent {} times; send it once, with the value 1",
            more + 1
        ));
    }
    if first.as_bytes() != b"1" {
        let shown: String = String::from_utf8_lossy(first.as_bytes())
            .chars()
            .take(40)
            .collect();
        return Err(format!(
            "{RECEIPT_HEADER}: {shown:?} is not 1, the one value it takes (it asks for a receipt)"
        ));
    }
    Ok(true)
}

/// The model files a requester accepts: `[model=]<sha256>[,<sha256>...]` entries separated by
/// `;`. An entry without a model name applies to whichever model the request names (what a
/// requester of one model sends); a named entry to that model only (what a requester sends
/// that pins several models and does not read its requests, as the Python package's
/// forwarder). A model with no entry is not restricted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Digests for any model.
    pub any: Vec<String>,
    /// Digests per model.
    pub by_model: std::collections::BTreeMap<String, Vec<String>>,
}

impl Accepted {
    /// The digests a request for `model` accepts, if restricted.
    pub fn for_model(&self, model: &str) -> Option<&[String]> {
        match self.by_model.get(model) {
            Some(d) => Some(d),
            None if !self.any.is_empty() => Some(&self.any),
            None => None,
        }
    }
}

tokio::task_local! {
    static SCOPE: RequestScope;
}

static CONNECTIONS: AtomicU64 = AtomicU64::new(1);

/// A number for a new connection, unique in the process (both ports).
pub fn next_connection() -> u64 {
    CONNECTIONS.fetch_add(1, Ordering::Relaxed)
}

/// The scope of the request being served (the default outside any).
pub fn current() -> RequestScope {
    SCOPE.try_with(|s| s.clone()).unwrap_or_default()
}

/// The peer of the request being served ([`PeerKey::Unknown`] outside any).
pub fn current_peer() -> PeerKey {
    SCOPE.try_with(|s| s.peer).unwrap_or_default()
}

impl RequestScope {
    /// The scope of a request with `headers` on connection `connection`.
    pub fn of(connection: u64, headers: &hyper::http::HeaderMap) -> Self {
        let mut scope = RequestScope {
            connection,
            ..Default::default()
        };
        match accepted(headers) {
            Ok(a) => scope.accepted = a.map(Arc::new),
            Err(e) => scope.malformed = Some(e),
        }
        match grpc_timeout(headers) {
            Ok(t) => scope.deadline = t.map(|t| std::time::Instant::now() + t),
            Err(e) => {
                scope.malformed.get_or_insert(e);
            }
        }
        match receipt_asked(headers) {
            Ok(true) => scope.receipt = Some(Arc::default()),
            Ok(false) => {}
            Err(e) => {
                scope.malformed.get_or_insert(e);
            }
        }
        scope
    }
}

/// How long a gRPC requester waits for its answer (`grpc-timeout`: at most 8 digits and a unit,
/// `H`, `M`, `S`, `m`, `u` or `n`; gRPC's "HTTP/2 protocol" document), if it said. Read on gRPC
/// requests only (`content-type: application/grpc...`).
pub fn grpc_timeout(
    headers: &hyper::http::HeaderMap,
) -> Result<Option<std::time::Duration>, String> {
    use std::time::Duration;
    let grpc = headers
        .get(hyper::http::header::CONTENT_TYPE)
        .is_some_and(|c| c.as_bytes().starts_with(b"application/grpc"));
    let Some(v) = headers.get("grpc-timeout").filter(|_| grpc) else {
        return Ok(None);
    };
    let bad = || format!("grpc-timeout {v:?} is not up to 8 digits and a unit (H, M, S, m, u, n)");
    let text = v.to_str().map_err(|_| bad())?;
    let (digits, unit) = text.split_at(text.len().saturating_sub(1));
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    Ok(Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(bad()),
    }))
}

/// Reads [`ACCEPT_HEADER`] (every occurrence).
pub fn accepted(headers: &hyper::http::HeaderMap) -> Result<Option<Accepted>, String> {
    let mut out = Accepted::default();
    let mut any = false;
    let mut count = 0usize;
    for v in headers.get_all(ACCEPT_HEADER) {
        any = true;
        let text = v
            .to_str()
            .map_err(|_| format!("{ACCEPT_HEADER}: not ASCII"))?;
        for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (model, digests) = match entry.split_once('=') {
                Some((m, d)) => (Some(m.trim()), d),
                None => (None, entry),
            };
            let list = match model {
                Some("") => return Err(format!("{ACCEPT_HEADER}: an entry names no model")),
                Some(m) => out.by_model.entry(m.to_owned()).or_default(),
                None => &mut out.any,
            };
            for d in digests.split(',').map(str::trim).filter(|d| !d.is_empty()) {
                count += 1;
                if count > MAX_ACCEPTED {
                    return Err(format!("{ACCEPT_HEADER}: more than {MAX_ACCEPTED} digests"));
                }
                let d = d.to_ascii_lowercase();
                if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                    let shown: String = d.chars().take(70).collect();
                    return Err(format!(
                        "{ACCEPT_HEADER}: {shown:?} is not a SHA-256 digest (64 hex digits)"
                    ));
                }
                list.push(d);
            }
        }
    }
    if any && count == 0 {
        return Err(format!("{ACCEPT_HEADER}: present but lists no digest"));
    }
    if out.by_model.values().any(Vec::is_empty) {
        return Err(format!("{ACCEPT_HEADER}: a model's entry lists no digest"));
    }
    Ok(any.then_some(out))
}

/// Runs `fut` (a request's handling) in `scope`.
pub async fn scoped<F: std::future::Future>(scope: RequestScope, fut: F) -> F::Output {
    SCOPE.scope(scope, fut).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_is_asked_with_one_header_of_value_1_and_anything_else_is_named() {
        let mut h = hyper::http::HeaderMap::new();
        assert_eq!(receipt_asked(&h), Ok(false));
        h.insert(RECEIPT_HEADER, "1".parse().unwrap());
        assert_eq!(receipt_asked(&h), Ok(true));
        assert!(RequestScope::of(1, &h).receipt.is_some());
        for bad in ["0", "true", "yes", "2", "11", "", " 1", "1 "] {
            let mut h = hyper::http::HeaderMap::new();
            h.insert(RECEIPT_HEADER, bad.parse().unwrap());
            let e = receipt_asked(&h).unwrap_err();
            assert!(e.contains("is not 1"), "{bad:?}: {e}");
            let scope = RequestScope::of(1, &h);
            assert!(
                scope.receipt.is_none() && scope.malformed.is_some(),
                "{bad:?}"
            );
        }
        let mut h = hyper::http::HeaderMap::new();
        h.append(RECEIPT_HEADER, "0".parse().unwrap());
        h.append(RECEIPT_HEADER, "1".parse().unwrap());
        assert!(receipt_asked(&h).unwrap_err().contains("sent 2 times"));
        assert!(!wants_receipt(&h));
    }

    #[test]
    fn accepted_digests_are_read_and_bad_ones_named() {
        let mut h = hyper::http::HeaderMap::new();
        assert_eq!(accepted(&h).unwrap(), None);
        let a = "AB".repeat(32);
        let b = "cd".repeat(32);
        h.append(ACCEPT_HEADER, format!("{a}, {b}").parse().unwrap());
        let got = accepted(&h).unwrap().unwrap();
        assert_eq!(got.any, vec!["ab".repeat(32), b.clone()]);
        assert_eq!(got.for_model("digits").unwrap().len(), 2);
        let mut named = hyper::http::HeaderMap::new();
        named.append(
            ACCEPT_HEADER,
            format!("digits={a};other = {b}").parse().unwrap(),
        );
        let got = accepted(&named).unwrap().unwrap();
        assert_eq!(got.for_model("digits").unwrap(), &["ab".repeat(32)][..]);
        assert_eq!(got.for_model("other").unwrap(), &[b.clone()][..]);
        assert_eq!(got.for_model("third"), None);
        h.append(ACCEPT_HEADER, "xyz".parse().unwrap());
        assert!(accepted(&h).unwrap_err().contains("not a SHA-256"));
        let mut h = hyper::http::HeaderMap::new();
        h.append(ACCEPT_HEADER, " , ".parse().unwrap());
        assert!(accepted(&h).unwrap_err().contains("no digest"));
        let mut h = hyper::http::HeaderMap::new();
        h.append(
            ACCEPT_HEADER,
            vec![b.as_str(); MAX_ACCEPTED + 1]
                .join(",")
                .parse()
                .unwrap(),
        );
        assert!(accepted(&h).unwrap_err().contains("more than"));
    }
}
