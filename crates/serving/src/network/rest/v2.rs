//! The Open Inference Protocol ("KServe v2") over REST, on the REST port beside TF Serving's
//! API: `GET /v2`, `/v2/health/{live,ready}`, `/v2/models/<name>[/versions/<v>]` (metadata),
//! `.../ready`, and `POST .../infer` with JSON tensors or the binary tensor data extension.
//!
//! Facts: the protocol's `required_api.md` (github.com/kserve/open-inference-protocol: paths,
//! the JSON request and response objects, `{"error": ...}`), and Triton's
//! `docs/protocol/extension_binary_data.md` (the `Inference-Header-Content-Length` header, the
//! `binary_data_size`, `binary_data` and `binary_data_output` parameters).

use axum::body::Body;
use hyper::{Method, Request, Response};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tonic::Code;

use super::body::{read_body, JsonCost};
use super::response::{bad, error, ok_json, resp_with, respond, RestContext};
use crate::api::error::ApiError;
use crate::api::service::{lookup_signature, Entry, ServingCore};
use crate::api::v2::{self as api, check_inputs, Declared, DeclaresInput};
use teeserve_tensor::{v2, write_json_string, Tensor};
use teeserve_wire::heavy;

/// The request header that says how long the JSON part of a body is when binary tensor data
/// follows it; the response carries it back when its outputs do the same.
pub(crate) const HEADER_LENGTH: &str = "inference-header-content-length";

/// A `/v2` path.
#[derive(Debug, PartialEq, Eq)]
enum V2Path {
    Server,
    Live,
    Ready,
    Model {
        name: String,
        version: String,
        verb: Verb,
    },
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Verb {
    Metadata,
    Ready,
    Infer,
}

fn parse_path(path: &str) -> Option<V2Path> {
    let rest = path.strip_prefix("/v2")?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').skip(1).collect();
    Some(match parts.as_slice() {
        [] => V2Path::Server,
        ["health", "live"] => V2Path::Live,
        ["health", "ready"] => V2Path::Ready,
        ["models", name, tail @ ..] if !name.is_empty() => {
            let (version, tail) = match tail {
                ["versions", v, t @ ..] => (*v, t),
                t => ("", t),
            };
            let verb = match tail {
                [] => Verb::Metadata,
                ["ready"] => Verb::Ready,
                ["infer"] => Verb::Infer,
                _ => return None,
            };
            V2Path::Model {
                name: super::url_decode(name),
                version: super::url_decode(version),
                verb,
            }
        }
        _ => return None,
    })
}

/// Handles a request whose path starts with `/v2`; gives the model name (for the access log)
/// and the response.
pub(super) async fn route(
    core: &ServingCore,
    ctx: &RestContext,
    req: Request<Body>,
) -> (String, Response<Body>) {
    let path = req.uri().path().to_owned();
    let Some(p) = parse_path(&path) else {
        let e = ApiError::new(Code::NotFound, format!("no such path {path}"));
        return (String::new(), error(&e, ctx));
    };
    let method = req.method().clone();
    let want = match &p {
        V2Path::Model {
            verb: Verb::Infer, ..
        } => Method::POST,
        _ => Method::GET,
    };
    if method != want {
        let msg = format!("{path} takes {want}, not {method}");
        return (String::new(), resp_with((405, msg), ctx));
    }
    let json = "application/json";
    let r = match p {
        V2Path::Server => Ok(json!({
            "name": api::SERVER_NAME,
            "version": env!("CARGO_PKG_VERSION"),
            "extensions": api::EXTENSIONS,
        })
        .to_string()),
        V2Path::Live => Ok(json!({"live": true}).to_string()),
        V2Path::Ready => {
            let ready = core.repo.ready();
            let body = json!({ "ready": ready }).to_string();
            return (
                String::new(),
                respond(if ready { 200 } else { 503 }, body, ctx, json),
            );
        }
        V2Path::Model {
            name,
            version,
            verb,
        } => {
            let r = match verb {
                Verb::Metadata => core.v2_metadata(&name, &version).map(metadata_json),
                Verb::Ready => match core.v2_model_ready(&name, &version) {
                    Ok(ready) => {
                        let body = json!({ "name": name, "ready": ready }).to_string();
                        let status = if ready { 200 } else { 400 };
                        return (name, respond(status, body, ctx, json));
                    }
                    Err(e) => Err(e),
                },
                Verb::Infer => return (name.clone(), infer(core, ctx, req, &name, &version).await),
            };
            return (
                name,
                match r {
                    Ok(s) => ok_json(s, ctx),
                    Err(e) => error(&e, ctx),
                },
            );
        }
    };
    match r {
        Ok(s) => (String::new(), ok_json(s, ctx)),
        Err(e) => (String::new(), error(&e, ctx)),
    }
}

fn metadata_json(m: api::ModelMetadata) -> String {
    let tensors = |ts: &[api::TensorMetadata]| -> Vec<Value> {
        ts.iter()
            .map(|t| json!({"name": t.name, "datatype": t.datatype, "shape": t.shape}))
            .collect()
    };
    json!({
        "name": m.name,
        "versions": m.versions,
        "platform": m.platform,
        "inputs": tensors(&m.inputs),
        "outputs": tensors(&m.outputs),
    })
    .to_string()
}

/// An inference request's JSON object (the part before any binary data).
#[derive(Debug, Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    outputs: Vec<OutputTensor>,
}

#[derive(Debug, Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    data: Option<Value>,
}

impl DeclaresInput for InputTensor {
    fn declared(&self) -> Declared<'_> {
        Declared {
            name: &self.name,
            datatype: &self.datatype,
            shape: &self.shape,
        }
    }
}

#[derive(Debug, Deserialize)]
struct OutputTensor {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// `POST /v2/models/<name>[/versions/<v>]/infer`. Admitted and its body's memory reserved as
/// for TF Serving's API; then what every input declares is checked against the signature, and
/// each binary input's length against its shape, before any input is decoded.
async fn infer(
    core: &ServingCore,
    ctx: &RestContext,
    req: Request<Body>,
    name: &str,
    version: &str,
) -> Response<Body> {
    let wants_receipt = crate::api::scope::wants_receipt(req.headers());
    if wants_receipt && ctx.receipts.is_none() {
        return error(&crate::network::receipts::no_receipts(), ctx);
    }
    let admitted = match core.admit() {
        Ok(a) => a,
        Err(e) => return error(&e, ctx),
    };
    let header_len = match req
        .headers()
        .get(HEADER_LENGTH)
        .map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<usize>().ok()))
    {
        None => None,
        Some(Some(n)) => Some(n),
        Some(None) => {
            let e = bad("Inference-Header-Content-Length is not a number of bytes");
            return error(&e, ctx);
        }
    };
    let receipts = ctx.receipts.as_ref().filter(|_| wants_receipt);
    let (body, _held, request_hash) =
        match read_body(core, req, ctx.max_body, receipts.is_some()).await {
            Ok(b) => b,
            Err(e) => return resp_with(e, ctx),
        };
    if wants_receipt {
        if let Err(e) = receipt_request_checks(core, &body, header_len).await {
            return error(&e, ctx);
        }
    }
    let out = match infer_body(core, name, version, &body, header_len).await {
        Ok(out) => out,
        Err(e) => return error(&e, ctx),
    };
    let mut resp = respond(200, String::new(), ctx, "application/json");
    if let Some(json_len) = out.binary_from {
        let h = resp.headers_mut();
        h.insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(HEADER_LENGTH, json_len.into());
    }
    let bytes = out.body;
    // The answer is made: the place in flight is given back before any wait for a receipt.
    drop(admitted);
    if let Some((r, request_hash)) = receipts.zip(request_hash) {
        match r.rest("ModelInfer", request_hash, &bytes).await {
            Ok(Some(receipt)) => {
                if let Ok(v) = hyper::header::HeaderValue::from_str(&receipt) {
                    resp.headers_mut()
                        .insert(crate::network::receipts::RECEIPT_HEADER, v);
                }
            }
            Ok(None) => {}
            Err(e) => return error(&e, ctx),
        }
    }
    *resp.body_mut() = Body::from(bytes);
    resp
}

/// What a request that asks for a receipt must be besides what every request must be: the
/// receipt names the body, not the header that says where its JSON part ends, so the body alone
/// must read one way.
/// - The JSON part is strict JSON without a repeated key ([`super::receipt_json_checks`]).
/// - With binary data, the JSON part ends where its object ends: whitespace after the object,
///   counted in the JSON part, would be binary data to a reader that splits the body where the
///   object ends.
/// - With binary data, no input has both `data` and a `binary_data_size`: binary data of only
///   whitespace after the object would let a reader take the body as plain JSON and run `data`,
///   where this server runs the binary data.
async fn receipt_request_checks(
    core: &ServingCore,
    body: &bytes::Bytes,
    header_len: Option<usize>,
) -> Result<(), ApiError> {
    let Some(json) = (match header_len {
        Some(n) => (n <= body.len()).then(|| body.slice(..n)),
        None => Some(body.clone()),
    }) else {
        // Longer than the body: refused by the request's own reading.
        return Ok(());
    };
    if header_len.is_some() && json.last() != Some(&b'}') {
        return Err(bad(
            "a request that asks for a receipt ends its JSON part (Inference-Header-Content-Length) \
             where its JSON object ends, so that the body alone says where the binary data begins",
        ));
    }
    super::receipt_json_checks(core, json.clone()).await?;
    if header_len.is_some() {
        // Read for these three fields only: the values are skipped, not kept (`IgnoredAny`).
        use serde::de::IgnoredAny;
        #[derive(Deserialize)]
        struct Head {
            #[serde(default)]
            inputs: Vec<HeadInput>,
        }
        #[derive(Deserialize)]
        struct HeadInput {
            #[serde(default)]
            name: String,
            data: Option<IgnoredAny>,
            #[serde(default)]
            parameters: HeadParameters,
        }
        #[derive(Deserialize, Default)]
        struct HeadParameters {
            binary_data_size: Option<IgnoredAny>,
        }
        let head: Head = serde_json::from_slice(&json).map_err(|e| bad(format!("JSON: {e}")))?;
        for input in head.inputs {
            if input.data.is_some() && input.parameters.binary_data_size.is_some() {
                let name = input.name;
                return Err(bad(format!(
                    "input {name:?} of a request that asks for a receipt has both data and \
                     binary_data_size: the body could then be read as plain JSON, with data"
                )));
            }
        }
    }
    Ok(())
}

/// A response body: JSON, and binary outputs after it from `binary_from` (the JSON's length).
struct InferBody {
    body: Vec<u8>,
    binary_from: Option<usize>,
}

async fn infer_body(
    core: &ServingCore,
    name: &str,
    version: &str,
    body: &[u8],
    header_len: Option<usize>,
) -> Result<InferBody, ApiError> {
    let split = header_len.unwrap_or(body.len());
    if split > body.len() {
        return Err(bad(format!(
            "Inference-Header-Content-Length is {split}, but the body has only {} bytes",
            body.len()
        )));
    }
    let (head, binary) = body.split_at(split);
    let _parse = core.reserve(JsonCost::of(head).tree(), "reading the request's JSON")?;
    // Parsed and decoded, and the answer written, aside from the I/O threads when large.
    let r: InferRequest = heavy::run(head.len(), || serde_json::from_slice(head))
        .map_err(|e| bad(format!("JSON Parse error: {e}")))?;
    let target = core.v2_resolve(name, version)?;
    let sig_name = string_param(&r.parameters, "signature_name")?.unwrap_or_default();
    let sig = lookup_signature(target.model.signatures(), sig_name, Entry::V2Rest)?;
    let mut held = Vec::new();
    let inputs = heavy::run(body.len(), || {
        decode_inputs(&r, binary, sig, core.options.max_tensor_bytes, &mut |n| {
            held.push(core.reserve(n, "the request's input tensors")?);
            Ok(())
        })
    })?;
    let filter: Vec<String> = r.outputs.iter().map(|o| o.name.clone()).collect();
    let outputs = core
        .infer(&target, sig_name, inputs, &filter, Entry::V2Rest)
        .await?;
    let all_binary = bool_param(&r.parameters, "binary_data_output")?.unwrap_or(false);
    let mut binary_of = Vec::with_capacity(outputs.len());
    for (n, _) in &outputs {
        let asked = r.outputs.iter().find(|o| &o.name == n);
        let b = match asked {
            Some(o) => bool_param(&o.parameters, "binary_data")?.unwrap_or(all_binary),
            None => all_binary,
        };
        binary_of.push(b);
    }
    let bytes = outputs.iter().map(|(_, t)| t.data_bytes()).sum();
    heavy::run(bytes, || {
        write_response(&target, r.id.as_deref(), &outputs, &binary_of)
    })
}

/// The inputs of a request's JSON object `r`, with `binary` the bytes after it: what each
/// declares checked against signature `sig` and each binary length against its shape, then
/// `reserve` asked for the bytes the tensors take, then each decoded.
fn decode_inputs(
    r: &InferRequest,
    binary: &[u8],
    sig: &crate::engine::Signature,
    max: usize,
    reserve: &mut dyn FnMut(usize) -> Result<(), ApiError>,
) -> Result<Vec<(String, Tensor)>, ApiError> {
    let (accepted, total) = check_inputs(sig, &r.inputs, max)?;
    let slices = binary_slices(&r.inputs, &accepted, binary)?;
    reserve(total)?;
    let mut inputs = Vec::with_capacity(r.inputs.len());
    for ((input, a), raw) in r.inputs.iter().zip(accepted).zip(slices) {
        let t = match (raw, &input.data) {
            (Some(raw), _) => v2::from_raw(a.dtype, a.shape, raw),
            (None, Some(data)) => v2::from_json_data(data, a.dtype, a.shape, max),
            (None, None) => {
                return Err(bad(format!(
                    "input {} has neither data nor parameters.binary_data_size",
                    input.name
                )))
            }
        }
        .map_err(|e| bad(format!("input {}: {e}", input.name)))?;
        inputs.push((input.name.clone(), t));
    }
    Ok(inputs)
}

/// The input tensors an inference request body carries for a model of signature `sig`, as
/// the REST API reads them (`header_len`: its Inference-Header-Content-Length), none larger
/// than `max_bytes`; for the fuzz targets.
pub fn infer_inputs(
    body: &[u8],
    header_len: Option<usize>,
    sig: &crate::engine::Signature,
    max_bytes: usize,
) -> Result<Vec<(String, Tensor)>, ApiError> {
    let (head, binary) = body.split_at(header_len.unwrap_or(body.len()).min(body.len()));
    // Parsed and decoded, and the answer written, aside from the I/O threads when large.
    let r: InferRequest = heavy::run(head.len(), || serde_json::from_slice(head))
        .map_err(|e| bad(format!("JSON Parse error: {e}")))?;
    decode_inputs(&r, binary, sig, max_bytes, &mut |_| Ok(()))
}

/// The binary data of each input that has `parameters.binary_data_size`, cut from `binary` in
/// the inputs' order; every size checked against the input's shape (for all but BYTES) and the
/// sizes together against the bytes sent, before anything is decoded.
fn binary_slices<'b>(
    inputs: &[InputTensor],
    accepted: &[api::Accepted],
    binary: &'b [u8],
) -> Result<Vec<Option<&'b [u8]>>, ApiError> {
    let mut at = 0usize;
    let mut out = Vec::with_capacity(inputs.len());
    for (input, a) in inputs.iter().zip(accepted) {
        let Some(size) = u64_param(&input.parameters, "binary_data_size")? else {
            out.push(None);
            continue;
        };
        let n: usize = a.shape.iter().product();
        if let Some(want) = v2::raw_len(a.dtype, n).filter(|&w| w as u64 != size) {
            return Err(bad(format!(
                "input {}: binary_data_size is {size}, but shape {:?} of {} takes {want} bytes",
                input.name, a.shape, input.datatype
            )));
        }
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| at.checked_add(s))
            .filter(|&e| e <= binary.len())
            .ok_or_else(|| {
                bad(format!(
                    "input {}: binary_data_size is {size}, but only {} bytes of binary data are left",
                    input.name,
                    binary.len() - at
                ))
            })?;
        out.push(Some(&binary[at..end]));
        at = end;
    }
    if at != binary.len() {
        return Err(bad(format!(
            "{} bytes of binary data follow the inputs' binary_data_size ({at} bytes)",
            binary.len() - at
        )));
    }
    Ok(out)
}

fn param<'p, T>(
    p: &'p Map<String, Value>,
    key: &str,
    kind: &str,
    f: impl Fn(&'p Value) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    match p.get(key) {
        None => Ok(None),
        Some(v) => f(v).map(Some).ok_or_else(|| {
            bad(format!(
                "parameter {key} must be {kind}, not {}",
                json_kind(v)
            ))
        }),
    }
}

/// What kind of JSON value `v` is, to name in an error without echoing what was sent.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn string_param<'p>(p: &'p Map<String, Value>, key: &str) -> Result<Option<&'p str>, ApiError> {
    param(p, key, "a string", Value::as_str)
}

fn bool_param(p: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    param(p, key, "true or false", Value::as_bool)
}

fn u64_param(p: &Map<String, Value>, key: &str) -> Result<Option<u64>, ApiError> {
    param(p, key, "a number of bytes", Value::as_u64)
}

/// The response: JSON, with each output's data in it or, for those in `binary`, after it.
fn write_response(
    target: &crate::models::ResolvedModel,
    id: Option<&str>,
    outputs: &[(String, Tensor)],
    binary: &[bool],
) -> Result<InferBody, ApiError> {
    let mut head = String::with_capacity(256);
    head.push_str("{\"model_name\":");
    write_json_string(&target.name, &mut head);
    head.push_str(",\"model_version\":");
    write_json_string(&target.version.to_string(), &mut head);
    if let Some(id) = id {
        head.push_str(",\"id\":");
        write_json_string(id, &mut head);
    }
    head.push_str(",\"outputs\":[");
    let mut raw: Vec<u8> = Vec::new();
    for (k, ((n, t), &b)) in outputs.iter().zip(binary).enumerate() {
        let datatype = api::output_datatype(n, t)?;
        if k > 0 {
            head.push(',');
        }
        head.push_str("{\"name\":");
        write_json_string(n, &mut head);
        head.push_str(&format!(
            ",\"datatype\":\"{datatype}\",\"shape\":{}",
            json!(t.shape)
        ));
        if b {
            let start = raw.len();
            v2::write_raw(t, &mut raw).ok_or_else(|| {
                ApiError::new(
                    Code::Internal,
                    format!("output {n} has an element longer than 4 GiB"),
                )
            })?;
            head.push_str(&format!(
                ",\"parameters\":{{\"binary_data_size\":{}}}}}",
                raw.len() - start
            ));
        } else {
            head.push_str(",\"data\":");
            v2::write_json_data(t, &mut head)
                .map_err(|e| ApiError::new(Code::FailedPrecondition, format!("output {n} {e}")))?;
            head.push('}');
        }
    }
    head.push_str("]}");
    if !binary.iter().any(|&b| b) {
        return Ok(InferBody {
            body: head.into_bytes(),
            binary_from: None,
        });
    }
    let json_len = head.len();
    let mut body = head.into_bytes();
    body.extend_from_slice(&raw);
    Ok(InferBody {
        body,
        binary_from: Some(json_len),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(parse_path("/v2"), Some(V2Path::Server));
        assert_eq!(parse_path("/v2/"), Some(V2Path::Server));
        assert_eq!(parse_path("/v2/health/live"), Some(V2Path::Live));
        assert_eq!(
            parse_path("/v2/models/digits/versions/2/infer"),
            Some(V2Path::Model {
                name: "digits".into(),
                version: "2".into(),
                verb: Verb::Infer
            })
        );
        assert_eq!(
            parse_path("/v2/models/a%20b/ready"),
            Some(V2Path::Model {
                name: "a b".into(),
                version: String::new(),
                verb: Verb::Ready
            })
        );
        assert_eq!(parse_path("/v2/models//infer"), None);
        assert_eq!(parse_path("/v2/models/d/infer/x"), None);
        assert_eq!(parse_path("/v2x"), None);
    }
}
