//! The REST API of TF Serving (`model_servers/http_rest_api_handler.cc`, `util/json_tensor.cc`)
//! plus teeserve's additions: `/v1/models` (list), `/v1/attestation`, `/healthz`, `/readyz`.
//!
//! - `mod.rs`: the router: paths, methods, CORS, the service endpoints;
//! - `response.rs`: responses and errors in TF Serving's JSON;
//! - `body.rs`: reading a body within its bounds, and what its JSON takes;
//! - `predict.rs`: `:predict`, its row and columnar formats, straight to tensors;
//! - `classify.rs`: `:classify` and `:regress` on tf.Examples;
//! - `metadata.rs`: model status, metadata and the model list;
//! - `v2.rs`: the Open Inference Protocol (KServe v2) under `/v2`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use hyper::{Method, Request, Response};
use serde_json::json;
use tonic::Code;

use crate::api::error::ApiError;
use crate::api::service::ServingCore;
use crate::network::access_log::access_log;

mod body;
mod classify;
mod metadata;
mod predict;
mod response;
mod v2;

use body::read_body;
use classify::classify_regress;
pub use classify::{example_row, json_example};
use metadata::{list_models, metadata_json, status_json};
pub use predict::predict_inputs;
pub(crate) use response::RestContext;
use response::{bad, error, ok_json, resp_with, respond};
pub use v2::infer_inputs as v2_infer_inputs;

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
    if !path
        .get(.."/v1/models".len())
        .is_some_and(|p| p.eq_ignore_ascii_case("/v1/models"))
    {
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
    let path = req.uri().path();
    if path == "/v2" || path.starts_with("/v2/") {
        return v2::route(core, ctx, req).await;
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
    let mut receipt = None;
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
                    Ok(Ok((s, r))) => {
                        receipt = r;
                        Ok(s)
                    }
                    Ok(Err(e)) => Err(e),
                    Err(resp) => return (model, resp),
                }
            }
        }
        _ => Err(malformed()),
    };
    let mut resp = match r {
        Ok(s) => ok_json(s, ctx),
        Err(e) => error(&e, ctx),
    };
    if let Some(v) = receipt.and_then(|r| hyper::header::HeaderValue::from_str(&r).ok()) {
        resp.headers_mut()
            .insert(crate::network::receipts::RECEIPT_HEADER, v);
    }
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
) -> Result<Result<(String, Option<String>), ApiError>, Response<Body>> {
    let wants_receipt = crate::api::scope::wants_receipt(req.headers());
    if wants_receipt && ctx.receipts.is_none() {
        return Err(error(&crate::network::receipts::no_receipts(), ctx));
    }
    let admitted = core.admit().map_err(|e| error(&e, ctx))?;
    let receipts = ctx.receipts.as_ref().filter(|_| wants_receipt);
    let (body, _held, request_hash) = read_body(core, req, ctx.max_body, receipts.is_some())
        .await
        .map_err(|e| resp_with(e, ctx))?;
    if wants_receipt {
        receipt_json_checks(core, body.clone())
            .await
            .map_err(|e| error(&e, ctx))?;
    }
    let (out, method) = match verb {
        "predict" => (
            predict::predict(core, name, version, label, &body).await,
            "Predict",
        ),
        "classify" => (
            classify_regress(core, name, version, label, &body, true).await,
            "Classify",
        ),
        _ => (
            classify_regress(core, name, version, label, &body, false).await,
            "Regress",
        ),
    };
    // The answer is made: the place in flight is given back before any wait for a receipt.
    drop(admitted);
    Ok(match (out, receipts.zip(request_hash)) {
        (Ok(s), Some((r, request_hash))) => {
            match r.rest(method, request_hash, s.as_bytes()).await {
                Ok(receipt) => Ok((s, receipt)),
                Err(e) => Err(e),
            }
        }
        (out, _) => out.map(|s| (s, None)),
    })
}

/// What a JSON body (or the JSON part of one) that asks for a receipt must be: strict JSON with
/// no key repeated in an object ([`unique_json_keys_of`]). The check holds each object's keys,
/// so it reserves from the memory budget what reading the body into a tree would.
///
/// [`unique_json_keys_of`]: crate::network::receipt_request::unique_json_keys_of
async fn receipt_json_checks(core: &ServingCore, json: bytes::Bytes) -> Result<(), ApiError> {
    let _checking = core.reserve(
        body::JsonCost::of(&json).tree(),
        "checking the request's JSON for repeated keys",
    )?;
    crate::network::receipt_request::unique_json_keys_of(json).await
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
}
