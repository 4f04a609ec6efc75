//! Reading a REST body: within the size bound and the request deadline, its memory reserved
//! from the in-flight budget as it arrives, and what reading its JSON will take, found before
//! any of it is parsed.

use axum::body::Body;
use hyper::Request;
use serde_json::{Map, Value};

use bytes::Bytes;

use super::response::bad;
use crate::api::error::ApiError;
use crate::api::service::{Reservation, ServingCore};

/// Reads a body (at most `max` bytes, within the request deadline), reserving its memory from
/// the in-flight budget as it arrives. With `hash`, the body is hashed (SHA-256) as its frames
/// arrive, while the requester is still sending: the hash a receipt names then costs the
/// answer no time of its own.
pub(super) async fn read_body(
    core: &ServingCore,
    req: Request<Body>,
    max: usize,
    hash: bool,
) -> Result<(Bytes, Reservation, Option<[u8; 32]>), (u16, String)> {
    let declared = crate::network::admission::declared_length(req.headers());
    let mut sha = hash.then(|| ring::digest::Context::new(&ring::digest::SHA256));
    let each = |data: &[u8]| {
        if let Some(h) = sha.as_mut() {
            h.update(data);
        }
    };
    crate::network::admission::read_body(core, req.into_body(), declared, max, |_| None, each)
        .await
        .map(|(body, held)| {
            let hash = sha.map(|h| crate::network::receipt_request::digest32(h.finish()));
            (body, held, hash)
        })
        .map_err(|e| {
            let status = match &e {
                crate::network::admission::BodyError::TooLarge(_) => Some(413),
                crate::network::admission::BodyError::Timeout => Some(408),
                _ => None,
            };
            let e = e.api_error(max, core);
            (status.unwrap_or_else(|| e.http_status()), e.message)
        })
}

/// What reading a JSON body takes, found by one pass over its bytes that allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct JsonCost {
    /// Upper bound of the number of values (each comma, colon and opening bracket starts one).
    values: usize,
    /// Objects.
    objects: usize,
    /// The body's length.
    len: usize,
}

impl JsonCost {
    pub(super) fn of(body: &[u8]) -> Self {
        let (mut values, mut objects) = (1usize, 0usize);
        let (mut in_str, mut escaped) = (false, false);
        for &b in body {
            if in_str {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_str = false;
                }
                continue;
            }
            match b {
                b'"' => in_str = true,
                b',' | b'[' | b':' => values += 1,
                b'{' => {
                    values += 1;
                    objects += 1;
                }
                _ => {}
            }
        }
        Self {
            values,
            objects,
            len: body.len(),
        }
    }

    /// Reading a regular list of numbers straight into a tensor: at most one element of 8
    /// bytes per value, in a list that may have doubled its capacity.
    pub(super) fn direct(&self) -> usize {
        self.values.saturating_mul(16)
    }

    /// Reading it as a JSON tree and then into tensors: per value a tree node (32 bytes) in a
    /// list that may have doubled (64), a copy for the columns of a row-format request (32),
    /// a reference in the list of leaves (8) and an element (8); per object one B-tree node of
    /// eleven (String, Value) entries; strings twice (tree and tensor).
    pub(super) fn tree(&self) -> usize {
        self.values
            .saturating_mul(112)
            .saturating_add(self.objects.saturating_mul(640))
            .saturating_add(self.len.saturating_mul(2))
    }
}

pub(super) fn parse_json(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad("JSON Parse error: The document is empty"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad(
            "JSON Parse error: the request body is not a JSON object",
        )),
        Err(e) => Err(bad(format!("JSON Parse error: {e}"))),
    }
}
