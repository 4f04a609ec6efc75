//! Admission of requests before their bodies are read: a place among the requests in flight
//! ([`ServingCore::admit`]), and memory from the in-flight budget ([`ServingCore::reserve`])
//! for the body as it arrives and for what decoding it takes. REST does this in its handler;
//! gRPC in `grpc_layer`, before tonic decodes the message.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body_util::BodyExt;
use tonic::Code;

use crate::api::error::ApiError;
use crate::api::service::{Reservation, ServingCore};

/// Why a body was not read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Larger than the largest request; the length when it was declared.
    TooLarge(Option<usize>),
    /// The in-flight budget refused its memory.
    Refused(ApiError),
    /// The connection failed while it was read.
    Read(String),
    /// Its framing is malformed (an HTTP/1.1 chunk size line, say).
    Malformed(String),
    /// It did not arrive within the request deadline.
    Timeout,
}

impl BodyError {
    /// The error as the APIs report it (`max`: the largest request).
    pub(crate) fn api_error(self, max: usize, core: &ServingCore) -> ApiError {
        match self {
            BodyError::TooLarge(len) => ApiError::new(
                Code::ResourceExhausted,
                format!(
                    "request body{} is larger than the {max} bytes allowed (--max_request_bytes)",
                    len.map(|l| format!(" of {l} bytes")).unwrap_or_default()
                ),
            ),
            BodyError::Refused(e) => e,
            BodyError::Read(e) => {
                ApiError::new(Code::Cancelled, format!("reading the request body: {e}"))
            }
            BodyError::Malformed(e) => ApiError::new(
                Code::InvalidArgument,
                format!("the request body is malformed: {e}"),
            ),
            BodyError::Timeout => ApiError::new(
                Code::DeadlineExceeded,
                format!(
                    "the request body did not arrive within {:?} (--request_timeout_ms)",
                    core.options.timeout
                ),
            ),
        }
    }
}

/// Why a body could not be read: malformed framing the peer sent (hyper reports a bad chunk
/// size line, extension or trailer as invalid data or input), or the connection failing or
/// closing under it.
fn read_error(e: axum::Error) -> BodyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            ) {
                return BodyError::Malformed(io.to_string());
            }
        }
        source = s.source();
    }
    BodyError::Read(e.to_string())
}

/// A request's Content-Length, if it declares one that can be read.
pub(crate) fn declared_length(headers: &hyper::HeaderMap) -> Option<usize> {
    headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// What a body holds of the in-flight budget ahead of its bytes: one step, or as much again as
/// has arrived. A body is reserved (and its buffer allocated) as it arrives, never more than
/// that ahead of it, so that a request that declares a large body and sends none of it holds
/// at most one step: holding memory takes sending bytes.
pub(crate) const BODY_STEP: usize = 1 << 20;

/// The room (reservation and buffer) for a body of which `len` bytes have arrived and that is
/// `target` bytes long (its declared or framed length, else the largest allowed): what has
/// arrived, and ahead of it at most [`BODY_STEP`] or as much again, never past the body's end.
fn body_room(len: usize, target: usize) -> usize {
    len.max(target.min(BODY_STEP.max(len.saturating_mul(2))))
}

/// Reads a body of at most `max` bytes within the request deadline, reserving its memory
/// from the in-flight budget as it arrives ([`body_room`]; `declared`: its Content-Length, if
/// any). Without a declared length, `sized` may read the whole body's length from its first
/// bytes (a gRPC message's frame header), so that the room stops at the body's end. A body
/// within one step is read into one buffer of its length, allocated once; a longer one grows
/// by doubling as it arrives. The buffer becomes the decoder's own without a copy
/// (`wire::codec`).
pub(crate) async fn read_body(
    core: &ServingCore,
    mut body: Body,
    declared: Option<usize>,
    max: usize,
    sized: fn(&[u8]) -> Option<usize>,
    mut each: impl FnMut(&[u8]),
) -> Result<(Bytes, Reservation), BodyError> {
    if let Some(len) = declared.filter(|&l| l > max) {
        return Err(BodyError::TooLarge(Some(len)));
    }
    let mut target = declared.unwrap_or(max);
    // A body of unknown length has nothing reserved until its first bytes, which may say it.
    let mut held = core
        .reserve(declared.map_or(0, |d| body_room(0, d)), "the request body")
        .map_err(BodyError::Refused)?;
    let mut buf: Vec<u8> = Vec::with_capacity(held.bytes());
    let mut size_known = declared.is_some();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(read_error)?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let len = buf.len() + data.len();
            if len > max {
                return Err(BodyError::TooLarge(None));
            }
            if !size_known {
                // The frame header may be in the bytes that have come with this frame.
                let mut head = [0u8; 5];
                let have = buf.len().min(5);
                head[..have].copy_from_slice(&buf[..have]);
                let rest = (5 - have).min(data.len());
                head[have..have + rest].copy_from_slice(&data[..rest]);
                if let Some(want) = sized(&head[..have + rest]) {
                    size_known = true;
                    if want > max {
                        return Err(BodyError::TooLarge(Some(want)));
                    }
                    target = want;
                }
            }
            if len > target {
                // More than the length its frame header gave: not one message of that length
                // (a second message follows), so it grows in steps as a body of unknown
                // length does, not a byte (and a KiB of the budget) per frame.
                target = max;
            }
            if len > held.bytes() {
                let room = body_room(len, target);
                held.merge(
                    core.reserve(room - held.bytes(), "the request body")
                        .map_err(BodyError::Refused)?,
                );
                buf.reserve_exact(room - buf.len());
            }
            each(&data);
            buf.extend_from_slice(&data);
        }
        Ok(())
    };
    tokio::time::timeout(core.options.timeout, read)
        .await
        .map_err(|_| BodyError::Timeout)??;
    Ok((Bytes::from(buf), held))
}

/// State of [`grpc_layer`].
#[derive(Debug, Clone)]
pub(crate) struct GrpcAdmission {
    /// The core.
    pub(crate) core: Arc<ServingCore>,
    /// The largest message, bytes.
    pub(crate) max_message: usize,
    /// The receipt signer, when the server has a TEE.
    pub(crate) receipts: Option<Arc<crate::network::receipts::Receipts>>,
}

fn grpc_error(e: ApiError) -> Response {
    e.into_status().into_http::<Body>()
}

/// The answer to a gRPC call whose method is not POST, as grpc-go gives it
/// (`internal/transport/http2_server.go`, `operateHeaders`): HTTP 405 with `INTERNAL` naming
/// the method, before any of the body is read. tonic itself would serve the call whatever its
/// method.
fn method_not_allowed(method: &hyper::Method) -> Response {
    let mut r = ApiError::into_status(ApiError::new(
        Code::Internal,
        format!("Received a HEADERS frame with :method \"{method}\" which should be POST"),
    ))
    .into_http::<Body>();
    *r.status_mut() = hyper::StatusCode::METHOD_NOT_ALLOWED;
    r
}

/// Admits a gRPC call before tonic reads and decodes its message: a place among the requests
/// in flight, the message's memory as it arrives, and then what decoding it takes (estimated
/// from the bytes, [`decoded_bytes`]). A call whose method is not POST is refused before its
/// body is read ([`method_not_allowed`]), so none reaches tonic's decoder unbudgeted. Health
/// checks pass straight through, so that an overloaded server still answers them (their
/// message is bounded instead). `/v1/attestation`, the one GET of the gRPC port, is routed
/// outside this layer.
pub(crate) async fn grpc_layer(
    State(a): State<GrpcAdmission>,
    req: Request,
    next: Next,
) -> Response {
    if req.method() != hyper::Method::POST {
        return method_not_allowed(req.method());
    }
    // A request for a receipt that this server cannot sign is refused at once.
    if a.receipts.is_none() && crate::api::scope::wants_receipt(req.headers()) {
        return crate::network::receipts::no_receipts()
            .into_status()
            .into_http();
    }
    let path = req.uri().path();
    if path.starts_with("/grpc.health.v1.") {
        return health_call(&a, req, next).await;
    }
    let kind = match path {
        "/tensorflow.serving.PredictionService/Predict" => GrpcMessage::Predict,
        "/inference.GRPCInferenceService/ModelInfer" => GrpcMessage::ModelInfer,
        _ => GrpcMessage::Other,
    };
    let _admitted = match a.core.admit() {
        Ok(x) => x,
        Err(e) => return grpc_error(e),
    };
    let (parts, body) = req.into_parts();
    let declared = declared_length(&parts.headers);
    // The message and its 5-byte gRPC frame header.
    let max = a.max_message.saturating_add(5);
    // A call that asks for a receipt has its messages hashed as their frames arrive, while the
    // requester is still sending: an image's hash then costs its answer no time.
    let mut request_hash = (a.receipts.is_some()
        && crate::api::scope::wants_receipt(&parts.headers))
    .then(crate::network::receipt_request::GrpcHasher::default);
    let hash = |data: &[u8]| {
        if let Some(h) = request_hash.as_mut() {
            h.update(data);
        }
    };
    let (bytes, _body) = match read_body(&a.core, body, declared, max, grpc_body_len, hash).await {
        Ok(x) => x,
        Err(e) => return grpc_error(e.api_error(a.max_message, &a.core)),
    };
    let estimate = decoded_bytes(&bytes, kind);
    let _decoding = match a.core.reserve(estimate, "decoding the request") {
        Ok(x) => x,
        Err(e) => return grpc_error(e),
    };
    // The places taken are given back once the handler has answered, before any wait for a
    // receipt.
    let admission = (_admitted, _body, _decoding);
    crate::network::receipts::grpc_answer(
        a.receipts.as_ref(),
        parts,
        bytes,
        request_hash,
        next,
        admission,
    )
    .await
}

/// The largest health check message (a service name).
const MAX_HEALTH_MESSAGE: usize = 4096;

/// A health check (`Check`, `Watch`): not held to the server's in-flight limit, so that an
/// overloaded server still answers it, but to everything else: a place of its peer's share,
/// its message (at most [`MAX_HEALTH_MESSAGE`]) read within the request deadline and from the
/// memory budget, before tonic sees it. (Passed straight through, a check whose message never
/// ended held its stream, and its connection, until the connection's maximum age, and many
/// such streams held memory outside the budget.)
async fn health_call(a: &GrpcAdmission, req: Request, next: Next) -> Response {
    let _place = match a.core.admit_peer() {
        Ok(x) => x,
        Err(e) => return grpc_error(e),
    };
    let (parts, body) = req.into_parts();
    let declared = declared_length(&parts.headers);
    let (bytes, _held) = match read_body(
        &a.core,
        body,
        declared,
        MAX_HEALTH_MESSAGE + 5,
        grpc_body_len,
        |_| {},
    )
    .await
    {
        Ok(x) => x,
        Err(e) => return grpc_error(e.api_error(MAX_HEALTH_MESSAGE, &a.core)),
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The length of a gRPC body of one message, from its frame header (the gRPC over HTTP/2
/// protocol, grpc/doc/PROTOCOL-HTTP2.md: a compressed-flag byte and a 4-byte big-endian length,
/// then the message): `None` until those 5 bytes are in.
fn grpc_body_len(head: &[u8]) -> Option<usize> {
    let len = head.get(1..5)?;
    (u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize).checked_add(5)
}

/// Which message a gRPC call carries, for [`decoded_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcMessage {
    /// `tensorflow.serving.PredictRequest`.
    Predict,
    /// `inference.ModelInferRequest`.
    ModelInfer,
    /// Any other.
    Other,
}

/// An upper bound of the memory that decoding a gRPC request body takes, besides the body
/// itself, summed over every length-prefixed message in it: tonic decodes the first, and a
/// unary call's later ones too, while it drains the stream for its trailers. A PredictRequest
/// is walked field by field (`predict_request_bytes`); a ModelInferRequest's raw contents are
/// taken from the body without a copy and its other fields counted at 640 bytes each plus 16
/// per byte (`model_infer_request_bytes`); other messages (Classify, Regress, metadata and
/// status), whose nested lists cost at most a few dozen bytes per byte sent, are counted at 64
/// per byte.
pub fn decoded_bytes(body: &[u8], kind: GrpcMessage) -> usize {
    let mut rest = body;
    let mut total = 0usize;
    while !rest.is_empty() {
        let msg = match rest {
            [0, a, b, c, d, tail @ ..] => {
                let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
                match tail.get(..len) {
                    Some(m) => {
                        rest = &tail[len..];
                        m
                    }
                    // Cut off: tonic refuses it before decoding it.
                    None => return total.saturating_add(rest.len()),
                }
            }
            // Compressed or malformed: tonic refuses it before decoding it.
            _ => return total.saturating_add(rest.len()),
        };
        // tonic copies the message into its own buffer before decoding.
        let copy = msg.len();
        let decoded = match kind {
            GrpcMessage::Predict => predict_request_bytes(msg),
            GrpcMessage::ModelInfer => model_infer_request_bytes(msg),
            GrpcMessage::Other => None,
        };
        total = total
            .saturating_add(copy)
            .saturating_add(decoded.unwrap_or_else(|| msg.len().saturating_mul(64)));
    }
    total
}

/// Protobuf wire format (protobuf.dev "Encoding"): calls `f(field, wire type, payload)` for
/// each field; the payload of a varint, fixed64 or fixed32 field is its bytes. `None` for
/// bytes that are not a sequence of fields (groups included: nothing here has any).
fn fields(mut b: &[u8], f: &mut impl FnMut(u64, u8, &[u8]) -> usize) -> Option<usize> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&x, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(x & 0x7f) << shift;
            if x & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut total = 0usize;
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let (field, wire) = (key >> 3, (key & 7) as u8);
        let len = match wire {
            0 => {
                varint(&mut b)?;
                total = total.saturating_add(f(field, wire, &[]));
                continue;
            }
            1 => 8,
            5 => 4,
            2 => usize::try_from(varint(&mut b)?).ok()?,
            _ => return None,
        };
        let payload = b.get(..len)?;
        b = &b[len..];
        total = total.saturating_add(f(field, wire, payload));
    }
    Some(total)
}

/// What prost allocates to decode a ModelInferRequest (the Open Inference Protocol's
/// `grpc_predict_v2.proto`), as an upper bound: `raw_input_contents` (field 7) share the
/// received buffer (a `Bytes` handle each); every other field 640 bytes (an empty
/// `InferInputTensor` of two bytes on the wire decodes to some 312 bytes, in a list that may
/// have doubled) and, per byte of its payload, 16 (a packed varint of one byte becomes an
/// 8-byte element at most, in a list that may have doubled) or, for a `parameters` map
/// (field 4 here and in an input; the outputs, field 6, carry one too), 32 (an entry of a few
/// bytes is a String key and an `InferParameter` in a hash table that may have doubled). An
/// input's `bytes_contents` (field 5, its contents; field 8 there) count 80 bytes each and
/// their length: a `Vec` header in a list that may have doubled and a heap chunk of at least
/// 32 bytes, for an entry of two or three bytes on the wire.
fn model_infer_request_bytes(msg: &[u8]) -> Option<usize> {
    let mut bad = false;
    let total = fields(msg, &mut |field, _, p| {
        640 + match field {
            7 => 0,
            5 => infer_input_bytes(p).unwrap_or_else(|| {
                bad = true;
                0
            }),
            4 | 6 => p.len().saturating_mul(32),
            _ => p.len().saturating_mul(16),
        }
    })?;
    (!bad).then_some(total)
}

/// [`model_infer_request_bytes`] of one `InferInputTensor`.
fn infer_input_bytes(p: &[u8]) -> Option<usize> {
    let mut bad = false;
    let total = fields(p, &mut |field, _, p| match field {
        5 => fields(p, &mut |field, _, p| match field {
            8 => 80 + p.len(),
            _ => p.len().saturating_mul(16),
        })
        .unwrap_or_else(|| {
            bad = true;
            0
        }),
        4 => p.len().saturating_mul(32),
        _ => p.len().saturating_mul(16),
    })?;
    (!bad).then_some(total)
}

/// What prost allocates to decode a PredictRequest (tensorflow_serving/apis/predict.proto),
/// as an upper bound: list capacities may have doubled, and each map entry costs a String
/// and a TensorProto in a hash table that may have doubled.
fn predict_request_bytes(msg: &[u8]) -> Option<usize> {
    let mut bad = false;
    let total = fields(msg, &mut |field, wire, p| match (field, wire) {
        // model_spec
        (1, 2) => 128 + p.len(),
        // inputs: map<string, TensorProto>
        (2, 2) => {
            let entry = fields(p, &mut |field, wire, p| match (field, wire) {
                (1, 2) => p.len(),
                (2, 2) => tensor_proto_bytes(p).unwrap_or_else(|| {
                    bad = true;
                    0
                }),
                _ => 0,
            });
            1024 + entry.unwrap_or_else(|| {
                bad = true;
                0
            })
        }
        // output_filter: repeated string
        (3, 2) => 48 + p.len(),
        _ => 0,
    })?;
    (!bad).then_some(total)
}

/// What prost allocates to decode a TensorProto (tensorflow/core/framework/tensor.proto as
/// /proto has it): packed lists at their element width (varints widen: one byte may become
/// eight), doubled for capacity; each string a `Vec` header and its bytes.
fn tensor_proto_bytes(p: &[u8]) -> Option<usize> {
    let mut bad = false;
    let total = fields(p, &mut |field, wire, p| {
        let len = p.len();
        match (field, wire) {
            // tensor_shape: repeated Dim { int64 size, string name }
            (2, 2) => {
                64 + fields(p, &mut |field, wire, p| match (field, wire) {
                    (2, 2) => 64 + p.len(),
                    _ => 0,
                })
                .unwrap_or_else(|| {
                    bad = true;
                    0
                })
            }
            // tensor_content, float8_val
            (4 | 18, 2) => len,
            // string_val
            (8, 2) => 48 + len,
            // float_val, scomplex_val, double_val, dcomplex_val, bool_val: one byte sent is
            // at most one byte kept
            (5 | 6 | 9 | 11 | 12, 2) => len.saturating_mul(2),
            // int_val, half_val, uint32_val: varints kept as 4 bytes
            (7 | 13 | 16, 2) => len.saturating_mul(8),
            // int64_val, uint64_val: varints kept as 8 bytes
            (10 | 17, 2) => len.saturating_mul(16),
            // One element of a list sent unpacked.
            (5 | 6 | 7 | 9 | 10 | 11 | 12 | 13 | 16 | 17, _) => 16,
            _ => 0,
        }
    })?;
    (!bad).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use teeserve_tensor::{Data, Tensor};
    use teeserve_wire::tensorflow::serving::PredictRequest;

    fn framed(m: &impl Message) -> Vec<u8> {
        let msg = m.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        out.extend_from_slice(&msg);
        out
    }

    #[test]
    fn packed_floats_are_counted_near_their_size() {
        let t = Tensor::new(vec![100, 64], Data::F32(vec![0.5; 6400])).unwrap();
        let req = PredictRequest {
            inputs: [("pixels".to_owned(), t.to_proto(false))]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let body = framed(&req);
        let est = decoded_bytes(&body, GrpcMessage::Predict);
        assert!(est >= 25_600, "{est}");
        assert!(
            est < 4 * body.len() + 4096,
            "{est} for {} bytes",
            body.len()
        );
    }

    #[test]
    fn many_empty_strings_are_counted_at_their_decoded_size() {
        let t = Tensor {
            shape: vec![100_000],
            data: Data::Str(vec![Vec::new(); 100_000]),
        };
        let req = PredictRequest {
            inputs: [("s".to_owned(), t.to_proto(false))].into_iter().collect(),
            ..Default::default()
        };
        let body = framed(&req);
        // Two bytes sent per string; prost keeps 24 each, in a list that may have doubled.
        assert!(decoded_bytes(&body, GrpcMessage::Predict) >= 100_000 * 48);
    }

    #[test]
    fn bytes_that_are_not_a_message_are_counted_generously() {
        let mut body = vec![0, 0, 0, 0, 4];
        body.extend_from_slice(&[0x0b, 0x0c, 0x0d, 0x0e]); // group wire types
        assert!(decoded_bytes(&body, GrpcMessage::Predict) >= 4 * 64);
        assert_eq!(decoded_bytes(&[1, 2, 3], GrpcMessage::Predict), 3);
    }

    #[test]
    fn every_message_of_a_body_is_counted() {
        // A ModelInferRequest of many empty inputs (two bytes each on the wire), alone and
        // after another message in the same body.
        let mut empty = vec![0x0a, 1, b'x'];
        for _ in 0..10_000 {
            empty.extend_from_slice(&[0x2a, 0]);
        }
        let one = framed_raw(&empty);
        let alone = decoded_bytes(&one, GrpcMessage::ModelInfer);
        assert!(alone >= 10_000 * 600, "{alone}");
        let mut two = framed_raw(&[0x0a, 1, b'y']);
        two.extend_from_slice(&one);
        assert!(decoded_bytes(&two, GrpcMessage::ModelInfer) >= alone);
        // A second message cut off counts its bytes.
        let mut cut = one.clone();
        cut.extend_from_slice(&[0, 0, 0, 1, 0]);
        assert!(decoded_bytes(&cut, GrpcMessage::ModelInfer) >= alone);
    }

    #[test]
    fn many_tiny_bytes_contents_are_counted_at_their_decoded_size() {
        let t = teeserve_wire::inference::model_infer_request::InferInputTensor {
            name: "s".into(),
            datatype: "BYTES".into(),
            shape: vec![100_000],
            contents: Some(teeserve_wire::inference::InferTensorContents {
                bytes_contents: vec![vec![7]; 100_000],
                ..Default::default()
            }),
            ..Default::default()
        };
        let req = teeserve_wire::inference::ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![t],
            ..Default::default()
        };
        let body = framed_raw(&prost::Message::encode_to_vec(&req));
        // Three bytes sent per entry; prost keeps a 24-byte Vec each, in a list that may have
        // doubled, and a heap chunk of at least 32 bytes.
        assert!(decoded_bytes(&body, GrpcMessage::ModelInfer) >= 100_000 * 80);
    }

    fn core() -> ServingCore {
        core_with(Default::default())
    }

    /// A core of no models with these options.
    fn core_with(options: crate::api::CoreOptions) -> ServingCore {
        use crate::{ModelRepository, ModelSource};
        let engine = crate::engine::EngineChoice::default().start(1).unwrap();
        let repo = ModelRepository::new(
            engine,
            ModelSource {
                key: None,
                admitted: None,
            },
            Vec::new(),
        );
        ServingCore::new(Arc::new(repo), Default::default(), options, None)
    }

    /// A body sent in frames of 16 KiB, as an HTTP/2 peer sends it, without a length.
    fn in_frames(body: &[u8]) -> Body {
        let frames: Vec<Result<_, std::convert::Infallible>> = body
            .chunks(16 * 1024)
            .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
    }

    #[tokio::test]
    async fn a_grpc_body_is_read_into_one_buffer_of_its_length_that_the_decoder_can_own() {
        let core = core();
        let body = framed_raw(&vec![7u8; 600_000]);
        let (bytes, held) = read_body(
            &core,
            in_frames(&body),
            None,
            1 << 20,
            grpc_body_len,
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(bytes, body);
        assert!(held.bytes() >= body.len());
        // The buffer is exactly the body: it becomes tonic's decoding buffer without a copy
        // (bytes' `BytesMut::put` into an empty buffer takes a buffer nothing else holds).
        let owned = bytes
            .try_into_mut()
            .expect("the body's buffer is not shared");
        assert_eq!(owned.capacity(), body.len());
    }

    #[tokio::test]
    async fn a_grpc_message_longer_than_allowed_is_refused_from_its_frame_header() {
        let core = core();
        let body = framed_raw(&vec![7u8; 600_000]);
        // Only the first frame is sent: the header already says the message is too long.
        let e = read_body(
            &core,
            in_frames(&body[..16 * 1024]),
            None,
            100_000,
            grpc_body_len,
            |_| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(e, BodyError::TooLarge(Some(600_005))), "{e:?}");
    }

    /// A body is reserved as it arrives: one that declares 64 MiB (in its Content-Length or
    /// its gRPC frame header) and sends a few bytes holds one step of the budget, not 64 MiB.
    #[tokio::test]
    async fn a_body_holds_of_the_budget_no_more_than_a_step_ahead_of_its_bytes() {
        let core = core();
        let big = 64 << 20;
        type Frame = Result<http_body::Frame<Bytes>, std::convert::Infallible>;
        let (mut tx, rx) = futures::channel::mpsc::channel::<Frame>(4);
        let body = Body::new(http_body_util::StreamBody::new(rx));
        let mut head = vec![0u8];
        head.extend_from_slice(&(big as u32).to_be_bytes());
        tx.try_send(Ok(http_body::Frame::data(Bytes::from(head))))
            .unwrap();
        let reading = tokio::spawn({
            let core = Arc::new(core);
            let c = core.clone();
            async move {
                let r = read_body(&c, body, None, big + 5, grpc_body_len, |_| {}).await;
                (r.map(|(b, h)| (b.len(), h.bytes())), core)
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(tx);
        let (r, core) = reading.await.unwrap();
        assert_eq!(r.unwrap(), (5, BODY_STEP));
        // Declared in full and not sent: one step reserved, then the whole budget is free again.
        let declared = read_body(&core, in_frames(b""), Some(big), big, grpc_body_len, |_| {})
            .await
            .unwrap();
        assert_eq!(declared.1.bytes(), BODY_STEP);
        drop(declared);
        core.reserve(crate::api::DEFAULT_MAX_IN_FLIGHT_BYTES, "the whole budget")
            .unwrap();
    }

    /// Bytes past the length a gRPC frame header gave (a second message) grow the room in
    /// steps, as a body of unknown length does: 3,000 one-byte frames after a 10-byte message
    /// fit in a 2 MiB budget (reserved a byte at a time, each rounded up to a KiB of the
    /// budget, they took 3,000 KiB).
    #[tokio::test]
    async fn bytes_past_the_framed_length_reserve_in_steps_not_per_frame() {
        let core = core_with(crate::api::CoreOptions {
            max_in_flight_bytes: 2 << 20,
            ..Default::default()
        });
        let mut frames = vec![Bytes::from(framed_raw(&[7u8; 10]))];
        frames.extend((0..3000).map(|_| Bytes::from_static(&[1u8])));
        let body = Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames
                .into_iter()
                .map(|f| Ok::<_, std::convert::Infallible>(http_body::Frame::data(f))),
        )));
        let (bytes, held) = read_body(&core, body, None, 1 << 20, grpc_body_len, |_| {})
            .await
            .unwrap();
        assert_eq!(bytes.len(), 3015);
        assert!(held.bytes() <= BODY_STEP, "{}", held.bytes());
    }

    #[test]
    fn room_is_what_arrived_and_at_most_a_step_or_as_much_again_ahead() {
        assert_eq!(body_room(0, 100), 100);
        assert_eq!(body_room(0, 64 << 20), BODY_STEP);
        assert_eq!(body_room(BODY_STEP, 64 << 20), 2 * BODY_STEP);
        assert_eq!(body_room(3 * BODY_STEP, 4 * BODY_STEP), 4 * BODY_STEP);
        assert_eq!(body_room(700, 600), 700);
    }

    #[test]
    fn the_grpc_body_length_is_read_from_its_frame_header() {
        assert_eq!(grpc_body_len(&[0, 0, 0, 1]), None);
        assert_eq!(grpc_body_len(&[0, 0, 0, 1, 0]), Some(261));
        assert_eq!(
            grpc_body_len(&[1, 0xff, 0xff, 0xff, 0xff, 9]),
            Some(0xffff_ffff + 5)
        );
    }

    fn framed_raw(msg: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
        out.extend_from_slice(msg);
        out
    }
}
