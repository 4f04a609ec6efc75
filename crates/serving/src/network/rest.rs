//! The REST API of TF Serving (`model_servers/http_rest_api_handler.cc`, `util/json_tensor.cc`)
//! plus teeserve's additions: `/v1/models` (list), `/v1/attestation`, `/healthz`, `/readyz`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value};
use tonic::Code;

use crate::api::error::ApiError;
use crate::api::service::{Entry, Reservation, ServingCore};
use teeserve_tensor::{self as tensor, Tensor};

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
    /// Largest request body.
    pub max_body: usize,
}

/// One access-log line (never payloads).
/// One access-log line; `status` in the entry's own terms (REST: the HTTP status; gRPC: the
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

fn respond(
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

fn error(e: &ApiError, ctx: &RestContext) -> Response<Body> {
    respond(
        e.http_status(),
        json!({"error": e.message}).to_string(),
        ctx,
        "application/json",
    )
}

fn ok_json(v: String, ctx: &RestContext) -> Response<Body> {
    respond(200, v, ctx, "application/json")
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidArgument, msg)
}

fn url_decode(s: &str) -> String {
    teeserve_attest::collateral::pccs::percent_decode(s)
}

/// A parsed `/v1/models/...` path.
#[derive(Debug, Default, PartialEq, Eq)]
struct ModelPath {
    name: Option<String>,
    version: Option<i64>,
    label: Option<String>,
    verb: Option<String>,
    metadata: bool,
}

fn parse_model_path(path: &str) -> Option<Result<ModelPath, ApiError>> {
    let lower = path.to_ascii_lowercase();
    if !lower.starts_with("/v1/models") {
        return None;
    }
    let rest = &path["/v1/models".len()..];
    let mut mp = ModelPath::default();
    if rest.is_empty() || rest == "/" {
        return Some(Ok(mp));
    }
    let rest = rest.strip_prefix('/')?;
    let (body, verb) = match rest.rsplit_once(':') {
        Some((b, v)) if !v.contains('/') => (b, Some(v.to_ascii_lowercase())),
        _ => (rest, None),
    };
    let parts: Vec<&str> = body.split('/').collect();
    mp.name = Some(url_decode(parts[0]));
    let mut i = 1;
    if parts.len() >= 3 && parts[1].eq_ignore_ascii_case("versions") {
        mp.version = Some(match parts[2].parse() {
            Ok(v) => v,
            Err(_) => return Some(Err(bad(format!("Failed to convert version: {}", parts[2])))),
        });
        i = 3;
    } else if parts.len() >= 3 && parts[1].eq_ignore_ascii_case("labels") {
        mp.label = Some(url_decode(parts[2]));
        i = 3;
    }
    if parts.len() == i + 1 && parts[i].eq_ignore_ascii_case("metadata") {
        mp.metadata = true;
        i += 1;
    }
    if parts.len() != i || mp.name.as_deref().is_some_and(str::is_empty) {
        return Some(Err(bad(format!("Malformed request: {path}"))));
    }
    mp.verb = verb;
    Some(Ok(mp))
}

/// Handles one REST request.
pub(crate) async fn handle(
    core: Arc<ServingCore>,
    ctx: Arc<RestContext>,
    req: Request<Body>,
) -> Response<Body> {
    let start = Instant::now();
    let method = req.method().clone();
    let (model, resp) = route(&core, &ctx, req).await;
    access_log(
        "rest",
        method.as_str(),
        &model,
        &resp.status().as_u16(),
        start,
    );
    resp
}

async fn route(
    core: &ServingCore,
    ctx: &RestContext,
    req: Request<Body>,
) -> (String, Response<Body>) {
    if req.method() == Method::OPTIONS && ctx.cors {
        return (String::new(), cors_preflight(&req, ctx));
    }
    if req.method() == Method::GET {
        // The request itself is not held across the await: its body is not `Sync`.
        let query = req.uri().query().map(str::to_owned);
        let peer = req
            .extensions()
            .get::<crate::network::connection::Peer>()
            .map(|p| p.0.ip());
        let client = req
            .extensions()
            .get::<crate::network::connection::ClientCertificates>()
            .cloned();
        let path = req.uri().path();
        if let Some(resp) =
            service_endpoint(core, ctx, path, query.as_deref(), peer, client.as_ref()).await
        {
            return (String::new(), resp);
        }
    }
    model_api(core, ctx, req).await
}

/// A CORS preflight: allowed for an http(s) origin.
fn cors_preflight(req: &Request<Body>, ctx: &RestContext) -> Response<Body> {
    let origin_ok = req
        .headers()
        .get("origin")
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| o.starts_with("http://") || o.starts_with("https://"));
    if origin_ok {
        respond(200, String::new(), ctx, "application/json")
    } else {
        error(
            &ApiError::new(
                Code::FailedPrecondition,
                "CORS preflight needs an http(s) Origin",
            ),
            ctx,
        )
    }
}

/// The server's own endpoints (GET): health, readiness, attestation and metrics; `None` for
/// any other path. `peer`: the requester's address (its share of fresh quotes); `client`: the
/// certificate it presented.
async fn service_endpoint(
    core: &ServingCore,
    ctx: &RestContext,
    path: &str,
    query: Option<&str>,
    peer: Option<std::net::IpAddr>,
    client: Option<&crate::network::connection::ClientCertificates>,
) -> Option<Response<Body>> {
    let json = "application/json";
    Some(match path {
        "/healthz" => respond(200, "{\"status\": \"ok\"}\n".into(), ctx, json),
        "/readyz" => {
            let ready = core.repo.ready();
            let status = if ready { 200 } else { 503 };
            respond(status, json!({"ready": ready}).to_string(), ctx, json)
        }
        "/v1/attestation" => {
            let a = match &ctx.attestation {
                Some(a) => a.respond(query, peer).await,
                None => crate::network::attestation::no_attestation(),
            };
            let mut r = respond(a.status, a.body, ctx, json);
            if let Some(secs) = a.retry_after {
                r.headers_mut()
                    .insert(hyper::header::RETRY_AFTER, secs.into());
            }
            r
        }
        p if ctx.metrics_path.as_deref() == Some(p) => {
            if metrics_allowed(ctx, client) {
                respond(200, core.metrics.render(), ctx, "text/plain; version=0.0.4")
            } else {
                error(
                    &ApiError::new(
                        Code::PermissionDenied,
                        "the metrics are served only to clients with a certificate of the \
                         monitoring client CA",
                    ),
                    ctx,
                )
            }
        }
        _ => return None,
    })
}

/// Whether this client may read the metrics: anyone, unless a monitoring client CA is set;
/// then only a client whose certificate chains to it.
fn metrics_allowed(
    ctx: &RestContext,
    client: Option<&crate::network::connection::ClientCertificates>,
) -> bool {
    let Some(verifier) = &ctx.metrics_clients else {
        return true;
    };
    let Some((end_entity, intermediates)) = client.and_then(|c| c.0.split_first()) else {
        return false;
    };
    verifier
        .verify_client_cert(
            end_entity,
            intermediates,
            rustls::pki_types::UnixTime::now(),
        )
        .is_ok()
}

/// TF Serving's model API under `/v1/models`; gives the model name (for the access log) and the
/// response.
async fn model_api(
    core: &ServingCore,
    ctx: &RestContext,
    req: Request<Body>,
) -> (String, Response<Body>) {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mp = match parse_model_path(&path) {
        None => {
            let e = ApiError::new(Code::NotFound, format!("no such path {path}"));
            return (String::new(), error(&e, ctx));
        }
        Some(Err(e)) => return (String::new(), error(&e, ctx)),
        Some(Ok(mp)) => mp,
    };
    let model = mp.name.clone().unwrap_or_default();
    let malformed = || {
        ApiError::new(
            Code::InvalidArgument,
            format!("Malformed request: {method} {path}"),
        )
    };
    let version = mp.version;
    let label = mp.label.as_deref();
    let r = match (&method, &mp) {
        (&Method::GET, ModelPath { name: None, .. }) => Ok(list_models(core)),
        (
            &Method::GET,
            ModelPath {
                verb: None,
                metadata: true,
                name: Some(n),
                ..
            },
        ) => metadata_json(core, n, version, label),
        (
            &Method::GET,
            ModelPath {
                verb: None,
                metadata: false,
                name: Some(n),
                ..
            },
        ) => status_json(core, n, version, label),
        (
            &Method::POST,
            ModelPath {
                verb: Some(v),
                metadata: false,
                name: Some(n),
                ..
            },
        ) => {
            if !matches!(v.as_str(), "predict" | "classify" | "regress") {
                Err(malformed())
            } else {
                match post_verb(core, ctx, req, n, version, label, v).await {
                    Ok(r) => r,
                    Err(resp) => return (model, resp),
                }
            }
        }
        _ => Err(malformed()),
    };
    let resp = match r {
        Ok(s) => ok_json(s, ctx),
        Err(e) => error(&e, ctx),
    };
    (model, resp)
}

/// `POST /v1/models/<name>[/versions/<v>|/labels/<l>]:<verb>`. The request takes its place
/// among those in flight before its body is read, and the body's memory is reserved as it
/// arrives. `Err` is a response already made (the request was not admitted or its body not read).
async fn post_verb(
    core: &ServingCore,
    ctx: &RestContext,
    req: Request<Body>,
    name: &str,
    version: Option<i64>,
    label: Option<&str>,
    verb: &str,
) -> Result<Result<String, ApiError>, Response<Body>> {
    let _admitted = core.admit().map_err(|e| error(&e, ctx))?;
    let (body, _held) = read_body(core, req, ctx.max_body)
        .await
        .map_err(|e| resp_with(e, ctx))?;
    Ok(match verb {
        "predict" => predict(core, name, version, label, &body).await,
        _ => classify_regress(core, name, version, label, &body, verb == "classify").await,
    })
}

fn resp_with(e: (u16, String), ctx: &RestContext) -> Response<Body> {
    respond(
        e.0,
        json!({"error": e.1}).to_string(),
        ctx,
        "application/json",
    )
}

/// Reads a body (at most `max` bytes, within the request deadline), reserving its memory from
/// the in-flight budget as it arrives.
async fn read_body(
    core: &ServingCore,
    req: Request<Body>,
    max: usize,
) -> Result<(Bytes, Reservation), (u16, String)> {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    crate::network::admission::read_body(core, req.into_body(), declared, max)
        .await
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
struct JsonCost {
    /// Upper bound of the number of values (each comma, colon and opening bracket starts one).
    values: usize,
    /// Objects.
    objects: usize,
    /// The body's length.
    len: usize,
}

impl JsonCost {
    fn of(body: &[u8]) -> Self {
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
    fn direct(&self) -> usize {
        self.values.saturating_mul(16)
    }

    /// Reading it as a JSON tree and then into tensors: per value a tree node (32 bytes) in a
    /// list that may have doubled (64), a copy for the columns of a row-format request (32),
    /// a reference in the list of leaves (8) and an element (8); per object one B-tree node of
    /// eleven (String, Value) entries; strings twice (tree and tensor).
    fn tree(&self) -> usize {
        self.values
            .saturating_mul(112)
            .saturating_add(self.objects.saturating_mul(640))
            .saturating_add(self.len.saturating_mul(2))
    }
}

fn list_models(core: &ServingCore) -> String {
    let models: Vec<Value> = core
        .repo
        .names()
        .into_iter()
        .filter_map(|n| core.repo.model(&n))
        .map(|m| {
            json!({
                "name": m.config.name,
                "versions": m.versions.iter().rev().map(|(v, s)| json!({
                    "version": v.to_string(),
                    "state": match s.state { crate::models::repository::State::Available => "AVAILABLE", crate::models::repository::State::Loading => "LOADING", crate::models::repository::State::End => "END" },
                })).collect::<Vec<_>>(),
                "labels": m.config.labels,
            })
        })
        .collect();
    json!({ "models": models }).to_string()
}

fn status_json(
    core: &ServingCore,
    name: &str,
    version: Option<i64>,
    label: Option<&str>,
) -> Result<String, ApiError> {
    let s = core.status_of(name, version, label)?;
    let v: Vec<Value> = s
        .model_version_status
        .iter()
        .map(|m| {
            let st =
                teeserve_wire::tensorflow::serving::model_version_status::State::try_from(m.state)
                    .map(|s| s.as_str_name())
                    .unwrap_or("UNKNOWN");
            let status = m.status.clone().unwrap_or_default();
            json!({
                "version": m.version.to_string(),
                "state": st,
                "status": {
                    "error_code": teeserve_wire::code_name(Code::from_i32(status.error_code)),
                    "error_message": status.error_message,
                }
            })
        })
        .collect();
    Ok(serde_json::to_string_pretty(&json!({ "model_version_status": v })).unwrap_or_default())
}

fn metadata_json(
    core: &ServingCore,
    name: &str,
    version: Option<i64>,
    label: Option<&str>,
) -> Result<String, ApiError> {
    let t = core.resolve(name, version, label)?;
    let info = |i: &teeserve_wire::tensorflow::TensorInfo| {
        let shape = i.tensor_shape.clone().unwrap_or_default();
        json!({
            "dtype": teeserve_wire::tensorflow::DataType::try_from(i.dtype).map(|d| d.as_str_name()).unwrap_or("DT_INVALID"),
            "tensor_shape": {
                "dim": shape.dim.iter().map(|d| json!({"size": d.size.to_string(), "name": d.name})).collect::<Vec<_>>(),
                "unknown_rank": shape.unknown_rank,
            },
            "name": match &i.encoding {
                Some(teeserve_wire::tensorflow::tensor_info::Encoding::Name(n)) => n.as_str(),
                None => "",
            },
        })
    };
    let defs: Map<String, Value> = t
        .model
        .signatures()
        .def_map()
        .signature_def
        .iter()
        .map(|(name, d)| {
            let io = |m: &std::collections::HashMap<String, teeserve_wire::tensorflow::TensorInfo>| {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                keys.into_iter()
                    .map(|k| (k.clone(), info(&m[k])))
                    .collect::<Map<String, Value>>()
            };
            (
                name.clone(),
                json!({"inputs": io(&d.inputs), "outputs": io(&d.outputs), "method_name": d.method_name, "defaults": {}}),
            )
        })
        .collect();
    let v = json!({
        "model_spec": {"name": t.name, "signature_name": "", "version": t.version.to_string()},
        "metadata": {"signature_def": {"signature_def": defs}}
    });
    Ok(serde_json::to_string_pretty(&v).unwrap_or_default())
}

fn parse_json(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
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

/// A Predict body. When the model has one float input and the body carries it as a regular
/// nested list of numbers (`"instances": [[...]]`, `"inputs": [[...]]` or
/// `"inputs": {"<input>": [[...]]}`, the usual image request), that list is read straight into
/// a tensor ([`tensor::from_json_numbers`]) and `null` stands in its place in the object; the
/// tensor is returned beside the object.
/// Whatever else the body holds goes the general way, and any body the direct reading does not
/// fit is read wholly the general way, so errors are the same either way.
///
/// The memory either reading takes is asked of `reserve` first (an upper bound found from the
/// body's bytes), and no tensor larger than `max_bytes` is read.
fn parse_predict_body(
    body: &[u8],
    sigs: &crate::engine::Signatures,
    max_bytes: usize,
    reserve: &mut dyn FnMut(usize) -> Result<(), ApiError>,
) -> Result<(Map<String, Value>, Option<Tensor>), ApiError> {
    let cost = JsonCost::of(body);
    reserve(cost.direct())?;
    let direct = || {
        // The object with its values left as text (a repeated key keeps the last, as in the
        // general path).
        let raw: std::collections::BTreeMap<String, &serde_json::value::RawValue> =
            serde_json::from_slice(body).ok()?;
        let sig_name: String = match raw.get("signature_name") {
            Some(v) => serde_json::from_str(v.get()).ok()?,
            None => String::new(),
        };
        let [spec] = sigs.get(&sig_name)?.inputs.as_slice() else {
            return None;
        };
        let keys = ["instances", "inputs"];
        let [(key, value)] = raw
            .iter()
            .filter(|(k, _)| keys.contains(&k.as_str()))
            .collect::<Vec<_>>()[..]
        else {
            return None;
        };
        let text = value.get();
        let t = if text.starts_with('{') {
            // "inputs": {"<the input>": [[...]]}, read without a second pass over the list.
            let (name, list) = single_entry(text).filter(|_| key == "inputs")?;
            if name != spec.name || name == "b64" {
                return None;
            }
            tensor::from_json_numbers_within(list, spec.dtype, max_bytes)?
        } else {
            tensor::from_json_numbers_within(text, spec.dtype, max_bytes)?
        };
        let mut m = Map::new();
        for (k, v) in &raw {
            let v = if k == key {
                Value::Null
            } else {
                serde_json::from_str(v.get()).ok()?
            };
            m.insert(k.clone(), v);
        }
        Some((m, t))
    };
    match direct() {
        Some((m, d)) => Ok((m, Some(d))),
        None => {
            reserve(cost.tree().saturating_sub(cost.direct()))?;
            Ok((parse_json(body)?, None))
        }
    }
}

/// What a Predict body asks for ([`predict_inputs`]).
#[derive(Debug)]
pub struct PredictBody {
    /// The body was in the row format (`instances`).
    pub row: bool,
    /// The signature name it asked for (empty: the default).
    pub signature_name: String,
    /// The input tensors by name.
    pub inputs: Vec<(String, Tensor)>,
}

/// The inputs a Predict body carries for a model of this signature, as the REST API reads
/// them, none larger than what is left of `max_bytes`. `reserve` is asked for the memory
/// reading the body takes before it is taken.
pub fn predict_inputs(
    body: &[u8],
    signatures: &crate::engine::Signatures,
    max_bytes: usize,
    reserve: &mut dyn FnMut(usize) -> Result<(), ApiError>,
) -> Result<PredictBody, ApiError> {
    let (m, direct) = parse_predict_body(body, signatures, max_bytes, reserve)?;
    let sig_name = match m.get("signature_name") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad("'signature_name' key must be a string value.")),
    };
    let sig = crate::api::service::lookup_signature(signatures, &sig_name, Entry::Rest)?;
    let (row, inputs) = match (m.get("instances"), m.get("inputs"), direct) {
        (Some(_), Some(_), _) => return Err(bad(
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist",
        )),
        (None, None, _) => return Err(bad("Missing 'inputs' or 'instances' key")),
        (inst, _, Some(t)) => (inst.is_some(), vec![(sig.inputs[0].name.clone(), t)]),
        (Some(inst), None, None) => (true, row_inputs(sig, inst, max_bytes)?),
        (None, Some(inp), None) => (false, columnar_inputs(sig, inp, max_bytes)?),
    };
    Ok(PredictBody {
        row,
        signature_name: sig_name,
        inputs,
    })
}

/// The key and the value's text of a JSON object's text that might hold one entry, when the key
/// has no escapes. The value's text runs to the closing brace, so that with more entries it
/// holds their text too and will not read as one value.
fn single_entry(object: &str) -> Option<(&str, &str)> {
    let inner = object.strip_prefix('{')?.strip_suffix('}')?.trim_start();
    let quoted = inner.strip_prefix('"')?;
    let end = quoted.find('"')?;
    let name = &quoted[..end];
    if name.contains('\\') {
        return None;
    }
    Some((
        name,
        quoted[end + 1..]
            .trim_start()
            .strip_prefix(':')?
            .trim_start(),
    ))
}

async fn predict(
    core: &ServingCore,
    name: &str,
    version: Option<i64>,
    label: Option<&str>,
    body: &[u8],
) -> Result<String, ApiError> {
    let target = core.resolve(name, version, label)?;
    let mut held = Reservation::default();
    let PredictBody {
        row,
        signature_name: sig_name,
        inputs,
    } = predict_inputs(
        body,
        target.model.signatures(),
        core.options.max_tensor_bytes,
        &mut |bytes| {
            held.merge(core.reserve(bytes, "reading the request's JSON")?);
            Ok(())
        },
    )?;
    let outputs = core
        .infer(&target, &sig_name, inputs, &[], Entry::Rest)
        .await?;
    let mut s = String::new();
    if row {
        let n = outputs
            .first()
            .and_then(|(_, t)| t.shape.first().copied())
            .unwrap_or(0);
        for (name, t) in &outputs {
            if t.shape.first() != Some(&n) {
                return Err(ApiError::new(
                    Code::InvalidArgument,
                    format!("Tensor name: {name} has inconsistent batch size"),
                ));
            }
        }
        s.push_str("{\n    \"predictions\": [");
        for i in 0..n {
            s.push_str(if i == 0 { "" } else { ", " });
            write_outputs(&outputs, Some(i), &mut s);
        }
        s.push_str("]\n}");
    } else {
        s.push_str("{\n    \"outputs\": ");
        write_outputs(&outputs, None, &mut s);
        s.push_str("\n}");
    }
    Ok(s)
}

/// Writes one output as its value, or several as an object keyed by alias (TF Serving's rule);
/// `row` selects one row of each. Aliases ending in `_bytes` are written as `{"b64": ...}`.
fn write_outputs(outputs: &[(String, Tensor)], row: Option<usize>, s: &mut String) {
    if let [(name, t)] = outputs {
        tensor::write_json(t, row, name.ends_with("_bytes"), s);
        return;
    }
    s.push('{');
    for (k, (name, t)) in outputs.iter().enumerate() {
        if k > 0 {
            s.push_str(", ");
        }
        s.push_str(&Value::String(name.clone()).to_string());
        s.push_str(": ");
        tensor::write_json(t, row, name.ends_with("_bytes"), s);
    }
    s.push('}');
}

/// Reads one input into a tensor of at most what is `left` of a request's tensor bytes.
fn json_input(
    v: &Value,
    spec: &crate::engine::TensorSpec,
    left: &mut usize,
) -> Result<Tensor, ApiError> {
    let t = tensor::from_json_within(v, spec.dtype, *left).map_err(|e| {
        if matches!(e, tensor::TensorError::TooLarge(_)) {
            bad(format!(
                "input {}: {e} (--max_request_tensor_bytes)",
                spec.name
            ))
        } else {
            bad(e.to_string())
        }
    })?;
    *left -= t.len() * spec.dtype.element_bytes()
        + match &t.data {
            teeserve_tensor::Data::Str(v) => v.iter().map(Vec::len).sum(),
            _ => 0,
        };
    Ok(t)
}

fn row_inputs(
    sig: &crate::engine::Signature,
    inst: &Value,
    max: usize,
) -> Result<Vec<(String, Tensor)>, ApiError> {
    let mut left = max;
    let list = match inst {
        Value::Array(a) if !a.is_empty() => a,
        _ => return Err(bad("Expecting 'instances' to be an list/array")),
    };
    let objects = list.iter().all(Value::is_object)
        && list
            .iter()
            .all(|o| o.get("b64").is_none() || o.as_object().is_some_and(|m| m.len() > 1));
    if sig.inputs.len() > 1 || objects {
        let mut out = Vec::new();
        for spec in &sig.inputs {
            let mut col = Vec::with_capacity(list.len());
            for (i, o) in list.iter().enumerate() {
                let o = o.as_object().ok_or_else(|| {
                    bad(format!(
                        "Expecting object at instances[{i}] since the signature has {} inputs",
                        sig.inputs.len()
                    ))
                })?;
                if o.len() != sig.inputs.len() {
                    return Err(bad(format!(
                        "instances[{i}] has {} keys; the signature has {} inputs",
                        o.len(),
                        sig.inputs.len()
                    )));
                }
                col.push(o.get(&spec.name).cloned().ok_or_else(|| {
                    bad(format!("instances[{i}] is missing input {}", spec.name))
                })?);
            }
            let t = json_input(&Value::Array(col), spec, &mut left)?;
            out.push((spec.name.clone(), t));
        }
        return Ok(out);
    }
    let spec = sig
        .inputs
        .first()
        .ok_or_else(|| bad("the model has no inputs"))?;
    Ok(vec![(
        spec.name.clone(),
        json_input(inst, spec, &mut left)?,
    )])
}

fn columnar_inputs(
    sig: &crate::engine::Signature,
    inp: &Value,
    max: usize,
) -> Result<Vec<(String, Tensor)>, ApiError> {
    let mut left = max;
    match inp {
        Value::Object(m) if m.get("b64").is_none() || m.len() > 1 => {
            let mut out = Vec::new();
            for spec in &sig.inputs {
                let v = m.get(&spec.name).ok_or_else(|| {
                    bad(format!(
                        "Missing named input: {} in 'inputs' object.",
                        spec.name
                    ))
                })?;
                out.push((spec.name.clone(), json_input(v, spec, &mut left)?));
            }
            for k in m.keys() {
                if !sig.inputs.iter().any(|s| &s.name == k) {
                    // Only the name matters: order_inputs reports it as "Sent extra".
                    out.push((
                        k.clone(),
                        Tensor {
                            shape: vec![0],
                            data: teeserve_tensor::Data::F32(vec![]),
                        },
                    ));
                }
            }
            Ok(out)
        }
        v => {
            if sig.inputs.len() != 1 {
                return Err(bad(format!(
                    "Expecting an object of {} named inputs in 'inputs'",
                    sig.inputs.len()
                )));
            }
            let spec = &sig.inputs[0];
            Ok(vec![(spec.name.clone(), json_input(v, spec, &mut left)?)])
        }
    }
}

/// A tf.Example from TF Serving's JSON form of one (util/json_tensor.cc): a float is a
/// float_list value, an integer or a bool an int64_list value, a string or `{"b64": ...}` a
/// bytes_list value; a list holds values of one kind.
pub fn json_example(v: &Value) -> Result<teeserve_wire::tensorflow::Example, ApiError> {
    use teeserve_wire::tensorflow::{feature, BytesList, Feature, Features, FloatList, Int64List};
    let m = v
        .as_object()
        .ok_or_else(|| bad("each example must be a JSON object"))?;
    let mut features = std::collections::HashMap::new();
    for (k, v) in m {
        let values: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            x => vec![x],
        };
        let wrong = |x: &Value| bad(format!("feature {k:?}: {x} does not fit its list"));
        let kind = match values.first() {
            None => feature::Kind::FloatList(FloatList { value: vec![] }),
            Some(Value::String(_)) | Some(Value::Object(_)) => {
                feature::Kind::BytesList(BytesList {
                    value: values
                        .iter()
                        .map(|x| match x {
                            Value::String(s) => Ok(s.clone().into_bytes()),
                            Value::Object(o) => match (o.len(), o.get("b64")) {
                                (1, Some(Value::String(b))) => {
                                    use base64::Engine as _;
                                    base64::engine::general_purpose::STANDARD
                                        .decode(b)
                                        .map_err(|e| bad(format!("feature {k:?}: {e}")))
                                }
                                _ => Err(wrong(x)),
                            },
                            _ => Err(wrong(x)),
                        })
                        .collect::<Result<_, _>>()?,
                })
            }
            Some(Value::Number(n)) if n.is_f64() => feature::Kind::FloatList(FloatList {
                value: values
                    .iter()
                    .map(|x| x.as_f64().map(|f| f as f32).ok_or_else(|| wrong(x)))
                    .collect::<Result<_, _>>()?,
            }),
            Some(Value::Number(_)) | Some(Value::Bool(_)) => feature::Kind::Int64List(Int64List {
                value: values
                    .iter()
                    .map(|x| match x {
                        Value::Bool(b) => Ok(i64::from(*b)),
                        x => x.as_i64().ok_or_else(|| wrong(x)),
                    })
                    .collect::<Result<_, _>>()?,
            }),
            Some(x) => return Err(wrong(x)),
        };
        features.insert(k.clone(), Feature { kind: Some(kind) });
    }
    Ok(teeserve_wire::tensorflow::Example {
        features: Some(Features { feature: features }),
    })
}

/// The values of one example in REST's row rule for models without a classification or
/// regression signature: its features in name order, each a number or a list of numbers.
pub fn example_row(v: &Value, out: &mut Vec<f32>) -> Result<(), ApiError> {
    let m = v
        .as_object()
        .ok_or_else(|| bad("each example must be a JSON object"))?;
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    for k in keys {
        let push = |x: &Value, out: &mut Vec<f32>| -> Result<(), ApiError> {
            out.push(
                x.as_f64()
                    .ok_or_else(|| bad(format!("feature {k:?}: {x} is not a number")))?
                    as f32,
            );
            Ok(())
        };
        match &m[k] {
            Value::Array(a) => a.iter().try_for_each(|x| push(x, out))?,
            x => push(x, out)?,
        }
    }
    Ok(())
}

async fn classify_regress(
    core: &ServingCore,
    name: &str,
    version: Option<i64>,
    label: Option<&str>,
    body: &[u8],
    classify: bool,
) -> Result<String, ApiError> {
    let target = core.resolve(name, version, label)?;
    let _tree = core.reserve(JsonCost::of(body).tree(), "reading the request's JSON")?;
    let m = parse_json(body)?;
    let examples = m
        .get("examples")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("Missing 'examples' key"))?;
    let sig_name = match m.get("signature_name") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad("'signature_name' key must be a string value.")),
    };
    let method = if classify {
        crate::api::classify::CLASSIFY_METHOD
    } else {
        crate::api::classify::REGRESS_METHOD
    };
    if target.model.signatures().method(&sig_name) == Some(method) {
        // A SavedModel's classification or regression signature: tf.Examples, as TF Serving.
        use teeserve_wire::tensorflow::serving::{input, ExampleListWithContext, Input};
        let input = Input {
            kind: Some(input::Kind::ExampleListWithContext(
                ExampleListWithContext {
                    examples: examples
                        .iter()
                        .map(json_example)
                        .collect::<Result<_, _>>()?,
                    context: m.get("context").map(json_example).transpose()?,
                },
            )),
        };
        let results: Vec<Value> = if classify {
            crate::api::classify::classify_input(
                core,
                &target,
                &sig_name,
                Some(&input),
                Entry::Rest,
            )
            .await?
            .into_iter()
            .map(|c| {
                Value::Array(
                    c.classes
                        .into_iter()
                        .map(|k| json!([k.label, k.score]))
                        .collect(),
                )
            })
            .collect()
        } else {
            crate::api::classify::regress_input(core, &target, &sig_name, Some(&input), Entry::Rest)
                .await?
                .into_iter()
                .map(|r| json!(r.value))
                .collect()
        };
        return Ok(json!({ "results": results }).to_string());
    }
    // The context's values are read once and copied into each row only after the rows'
    // total is known to fit.
    let mut shared = Vec::new();
    if let Some(c) = m.get("context") {
        example_row(c, &mut shared)?;
    }
    let mut rows = Vec::with_capacity(examples.len());
    for e in examples {
        let mut row = Vec::new();
        example_row(e, &mut row)?;
        rows.push(row);
    }
    let float = std::mem::size_of::<f32>();
    crate::api::classify::check_merged(
        shared.len() * float,
        rows.iter().map(|r| r.len() * float),
        core.options.max_tensor_bytes,
    )?;
    let rows: Vec<Vec<f32>> = rows
        .into_iter()
        .map(|r| shared.iter().copied().chain(r).collect())
        .collect();
    if rows.is_empty() {
        return Err(bad("'examples' is empty"));
    }
    let out = crate::api::classify::run_rows(core, &target, rows).await?;
    let (n, c, v) = crate::api::classify::scores(&out)?;
    if !classify && c != 1 {
        return Err(ApiError::new(
            Code::FailedPrecondition,
            format!("Regress needs one value per example; the model gives {c}"),
        ));
    }
    let results: Vec<Value> = (0..n)
        .map(|i| {
            if classify {
                Value::Array(
                    (0..c)
                        .map(|k| json!([k.to_string(), v[i * c + k]]))
                        .collect(),
                )
            } else {
                json!(v[i])
            }
        })
        .collect();
    Ok(json!({ "results": results }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let p = parse_model_path("/v1/models/digits/versions/2:predict")
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.name.as_deref(), p.version, p.verb.as_deref()),
            (Some("digits"), Some(2), Some("predict"))
        );
        let p = parse_model_path("/v1/models/digits/labels/stable/metadata")
            .unwrap()
            .unwrap();
        assert!(p.metadata && p.label.as_deref() == Some("stable"));
        assert!(parse_model_path("/v1/models/d/versions/x")
            .unwrap()
            .is_err());
        assert!(parse_model_path("/other").is_none());
    }

    #[test]
    fn single_entry_reads_one_plain_key() {
        assert_eq!(
            single_entry(r#"{"pixels": [[1, 2]]}"#),
            Some(("pixels", "[[1, 2]]"))
        );
        assert_eq!(single_entry(r#"{ "x" :[1] }"#), Some(("x", "[1] ")));
        // More entries stay in the value's text, which then is not one list.
        let (_, rest) = single_entry(r#"{"a": [1], "b": [2]}"#).unwrap();
        assert!(tensor::from_json_numbers(rest, teeserve_tensor::DType::F32).is_none());
        assert_eq!(single_entry(r#"{"a\"b": [1]}"#), None);
        assert_eq!(single_entry(r#"{"a\u0062": [1]}"#), None);
        assert_eq!(single_entry("[1]"), None);
        assert_eq!(single_entry("{}"), None);
    }
}
