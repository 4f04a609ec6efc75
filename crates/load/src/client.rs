//! One requester connection: the attestation check before it carries data, the connection
//! itself (gRPC or REST over TLS, held to the attested key), and one Predict whose failure is
//! classified as worth retrying or not.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use serde_json::Value;
use teeserve_attest::{Collateral, Policy, TrustAnchor};
use teeserve_client::requester::{input_tensors, Connection, RequestTarget};
use teeserve_client::{
    attest_server, client_config, AttestOptions, ClientIdentity, NonceChoice, RequesterError,
};
use teeserve_tensor::{self as tensor, Tensor};
use teeserve_wire::tensorflow::serving::{model_spec::VersionChoice, ModelSpec, PredictRequest};

use crate::stats::Stats;

/// How requesters reach the service, and what they require of it.
pub struct Endpoint {
    /// HOST:PORT (the balancer).
    pub server: String,
    /// The name expected in the certificate, sent as SNI (the balancer routes on it).
    pub server_name: String,
    /// REST instead of gRPC.
    pub rest: bool,
    /// The CA that signs the server's certificate, if one is required.
    pub ca: Option<Arc<dyn ServerCertVerifier>>,
    /// Client identity for mutual TLS.
    pub identity: Option<ClientIdentity>,
    /// The attestation the server must show before a connection carries data.
    pub attest: Option<Attest>,
}

/// What `--attest` asks for.
pub struct Attest {
    /// The requester's policy.
    pub policy: Policy,
    /// The root the evidence must chain to.
    pub anchor: TrustAnchor,
    /// Collateral given on the command line; otherwise the server's published collateral.
    pub collateral: Option<Collateral>,
    /// Ask for the standing document instead of a quote over a fresh nonce.
    pub no_nonce: bool,
}

/// Why an attempt failed, and whether another attempt may succeed.
#[derive(Debug)]
pub struct Failure {
    /// A connection that broke or was refused, an unreachable server, or UNAVAILABLE.
    pub retryable: bool,
    /// What happened.
    pub message: String,
}

impl Failure {
    pub fn retry(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            message: message.into(),
        }
    }

    fn fatal(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            message: message.into(),
        }
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Endpoint {
    /// A copy of the client identity, for one TLS configuration.
    fn identity(&self) -> Option<ClientIdentity> {
        self.identity
            .as_ref()
            .map(|(c, k)| (c.clone(), k.clone_key()))
    }

    /// The TLS configuration for a new connection: after an attestation check over a fresh
    /// nonce when `--attest` is given (every handshake of the connection must then present
    /// the attested key), else the CA alone.
    async fn tls(&self, stats: &Stats) -> Result<Arc<rustls::ClientConfig>, Failure> {
        let alpn: &[&[u8]] = if self.rest { &[b"http/1.1"] } else { &[b"h2"] };
        let identity = self.identity();
        let Some(a) = &self.attest else {
            let ca = self
                .ca
                .clone()
                .ok_or_else(|| Failure::fatal("no CA and no attestation policy"))?;
            return client_config(ca, identity, alpn)
                .map(Arc::new)
                .map_err(|e| Failure::fatal(e.to_string()));
        };
        let options = AttestOptions {
            addr: self.server.clone(),
            server_name: self.server_name.clone(),
            ca: self.ca.clone(),
            identity: self.identity(),
            policy: a.policy.clone(),
            anchor: a.anchor.clone(),
            collateral: a.collateral.clone(),
            at: now(),
            nonce: if a.no_nonce {
                NonceChoice::Never
            } else {
                NonceChoice::ByKeyOrigin
            },
        };
        // Fetching can fail the way any connection can (a replica that went away, a reset):
        // worth another attempt. A document that does not satisfy the policy is not.
        let attested = attest_server(options).await.map_err(|r| match r.rule {
            "fetch" => Failure::retry(format!("attestation fetch: {}", r.message)),
            _ => Failure::fatal(format!("attestation not admitted: {}", r.message)),
        })?;
        stats.attestations.fetch_add(1, Ordering::SeqCst);
        attested
            .client_config(self.ca.clone(), identity, alpn)
            .map(Arc::new)
            .map_err(|r| Failure::fatal(r.message))
    }

    /// Opens a connection that may carry data.
    pub async fn open(&self, stats: &Stats) -> Result<Connection, Failure> {
        let tls = self.tls(stats).await?;
        let c = Connection::open(&self.server, Some(tls), &self.server_name, self.rest)
            .await
            .map_err(|e| match e {
                RequesterError::Connect(m) => Failure::retry(m),
                other => Failure::fatal(other.to_string()),
            })?;
        stats.connections.fetch_add(1, Ordering::SeqCst);
        Ok(c)
    }
}

/// A request ready to send again and again.
pub struct Prepared {
    /// The message.
    pub message: Message,
    /// The digests of the model files the requester accepts (its policy's pin for the model),
    /// sent with every request: an attested server answers from no other file.
    pub accept: Option<String>,
    /// Ask for a receipt of every answer (an answer without one fails).
    pub receipt: bool,
}

/// The request header (REST) and metadata key (gRPC) asking for a receipt.
const RECEIPT: &str = teeserve_client::requester::RECEIPT_HEADER;

/// The message of a [`Prepared`] request.
pub enum Message {
    /// gRPC Predict.
    Grpc(PredictRequest),
    /// REST: the path and the JSON body.
    Rest(String, Vec<u8>),
}

impl Prepared {
    /// The request for `model` with these input tensors, accepting an answer only from a
    /// model file of `policy`'s pin for `model`, when it has one.
    pub fn new(
        model: &str,
        inputs: &[(String, Tensor)],
        rest: bool,
        policy: Option<&Policy>,
    ) -> Self {
        let accept = policy
            .and_then(|p| p.models.get(model))
            .filter(|d| !d.is_empty())
            .map(|d| d.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(","));
        Prepared {
            message: Message::new(model, inputs, rest),
            accept,
            receipt: false,
        }
    }
}

impl Message {
    fn new(model: &str, inputs: &[(String, Tensor)], rest: bool) -> Self {
        if rest {
            let mut body = String::from("{");
            tensor::write_json_inputs(inputs, &mut body);
            body.push('}');
            Message::Rest(format!("/v1/models/{model}:predict"), body.into_bytes())
        } else {
            Message::Grpc(PredictRequest {
                model_spec: Some(ModelSpec {
                    name: model.to_owned(),
                    ..Default::default()
                }),
                inputs: inputs
                    .iter()
                    .map(|(n, x)| (n.clone(), x.to_proto(true)))
                    .collect(),
                output_filter: Vec::new(),
            })
        }
    }
}

/// An answer's outputs by name: the tensors gRPC sent, or the JSON values REST did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outputs {
    /// gRPC (decoded, not rendered: comparing them costs little next to the request).
    Tensors(BTreeMap<String, Tensor>),
    /// REST, or `--expected`.
    Json(serde_json::Map<String, Value>),
}

impl Outputs {
    /// As JSON values by name (the form `--expected` is written in).
    pub fn to_json(&self) -> serde_json::Map<String, Value> {
        match self {
            Outputs::Json(m) => m.clone(),
            Outputs::Tensors(t) => t
                .iter()
                .map(|(name, t)| {
                    let mut s = String::new();
                    tensor::write_json(t, None, name.ends_with("_bytes"), &mut s);
                    (
                        name.clone(),
                        serde_json::from_str(&s).unwrap_or(Value::Null),
                    )
                })
                .collect(),
        }
    }

    /// Whether two answers say the same, whichever API each came over.
    pub fn same_as(&self, other: &Outputs) -> bool {
        match (self, other) {
            (Outputs::Tensors(a), Outputs::Tensors(b)) => a == b,
            (Outputs::Json(a), Outputs::Json(b)) => a == b,
            (a, b) => a.to_json() == b.to_json(),
        }
    }
}

/// An answer: its outputs and the version that gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Outputs.
    pub outputs: Outputs,
    /// The version that answered (gRPC only).
    pub version: Option<i64>,
}

/// Whether a gRPC status is worth another attempt: UNAVAILABLE (what a server that is going
/// away, or a broken connection, gives), or any failure that the client's transport produced
/// rather than the server (a reset stream or connection).
fn grpc_retryable(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::Unavailable || std::error::Error::source(s).is_some()
}

/// Sends one request on `conn`.
pub async fn send(conn: &mut Connection, req: &Prepared) -> Result<Answer, Failure> {
    const ACCEPT: &str = teeserve_ratls::document::ACCEPT_HEADER;
    match (conn, &req.message) {
        (Connection::Grpc(c, _), Message::Grpc(r)) => {
            let mut call = tonic::Request::new(r.clone());
            if let Some(a) = &req.accept {
                let v = a
                    .parse()
                    .map_err(|_| Failure::fatal(format!("{ACCEPT} {a:?} is not a header")))?;
                call.metadata_mut().insert(ACCEPT, v);
            }
            if req.receipt {
                call.metadata_mut()
                    .insert(RECEIPT, tonic::metadata::MetadataValue::from_static("1"));
            }
            let resp = c.predict(call).await.map_err(|s| {
                let m = format!("{}: {}", teeserve_wire::code_name(s.code()), s.message());
                Failure {
                    retryable: grpc_retryable(&s),
                    message: m,
                }
            })?;
            if req.receipt
                && resp
                    .metadata()
                    .get_bin(teeserve_client::requester::RECEIPT_TRAILER)
                    .is_none()
            {
                return Err(Failure::fatal("the answer came without a receipt"));
            }
            let resp = resp.into_inner();
            let version = resp.model_spec.and_then(|s| match s.version_choice {
                Some(VersionChoice::Version(v)) => Some(v),
                _ => None,
            });
            let mut outputs = BTreeMap::new();
            for (name, p) in &resp.outputs {
                let t = Tensor::from_proto(p)
                    .map_err(|e| Failure::fatal(format!("output {name}: {e}")))?;
                outputs.insert(name.clone(), t);
            }
            Ok(Answer {
                outputs: Outputs::Tensors(outputs),
                version,
            })
        }
        (Connection::Rest(c), Message::Rest(path, body)) => {
            let mut headers: Vec<(&str, &str)> =
                req.accept.iter().map(|a| (ACCEPT, a.as_str())).collect();
            if req.receipt {
                headers.push((RECEIPT, "1"));
            }
            let (status, resp) = c
                .request_with(
                    hyper::Method::POST,
                    path,
                    body.clone(),
                    &headers,
                    teeserve_client::MAX_ANSWER,
                )
                .await
                .map_err(|e| Failure::retry(e.to_string()))?;
            let v: Value = serde_json::from_slice(&resp)
                .map_err(|e| Failure::fatal(format!("HTTP {status}: {e}")))?;
            if status != 200 {
                let m = format!("HTTP {status}: {}", v["error"].as_str().unwrap_or(""));
                return Err(Failure {
                    retryable: status == 503,
                    message: m,
                });
            }
            if req.receipt && c.last_headers().get(RECEIPT).is_none() {
                return Err(Failure::fatal("the answer came without a receipt"));
            }
            let outputs = match &v["outputs"] {
                Value::Object(m) => m.clone(),
                other => {
                    let mut m = serde_json::Map::new();
                    m.insert("output".into(), other.clone());
                    m
                }
            };
            Ok(Answer {
                outputs: Outputs::Json(outputs),
                version: None,
            })
        }
        _ => Err(Failure::fatal("request and connection differ in API")),
    }
}

/// The model's input tensors from `--input` (a .npy array or JSON as `teeserve predict` takes
/// it), with every input's rows repeated or cut to `batch` rows when given.
pub async fn inputs(
    conn: &mut Connection,
    model: &str,
    input: &Value,
    batch: Option<usize>,
) -> Result<Vec<(String, Tensor)>, String> {
    let sig = conn
        .signature(&RequestTarget {
            model: model.to_owned(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("metadata of {model}: {e}"))?;
    let mut out = input_tensors(&sig, input)?;
    if let Some(rows) = batch {
        for (name, t) in &mut out {
            *t = rebatch(t, rows).map_err(|e| format!("--batch for input {name}: {e}"))?;
        }
    }
    Ok(out)
}

/// `t`'s rows, repeated as often as needed and cut to `rows`.
fn rebatch(t: &Tensor, rows: usize) -> Result<Tensor, String> {
    let have = t.shape.first().copied().unwrap_or(0);
    if have == 0 || rows == 0 {
        return Err("needs an input with at least one row, and at least one row asked".into());
    }
    let whole = vec![t; rows.div_ceil(have)];
    let all = Tensor::concat_rows(&whole).map_err(|e| e.to_string())?;
    Ok(all.slice_rows(0, rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use teeserve_tensor::Data;

    #[test]
    fn rebatch_repeats_and_cuts_rows() {
        let t = Tensor::new(vec![2, 2], Data::F32(vec![1.0, 2.0, 3.0, 4.0])).unwrap();
        let r = rebatch(&t, 3).unwrap();
        assert_eq!(r.shape, vec![3, 2]);
        assert_eq!(r.data, Data::F32(vec![1.0, 2.0, 3.0, 4.0, 1.0, 2.0]));
        assert_eq!(rebatch(&t, 1).unwrap().shape, vec![1, 2]);
        assert!(rebatch(&t, 0).is_err());
    }

    #[test]
    fn answers_compare_whichever_api_they_came_over() {
        let t = Tensor::new(vec![1, 2], Data::F32(vec![0.5, 0.25])).unwrap();
        let grpc = Outputs::Tensors([("p".to_owned(), t)].into());
        let rest = Outputs::Json(serde_json::from_str(r#"{"p": [[0.5, 0.25]]}"#).unwrap());
        assert!(grpc.same_as(&rest) && rest.same_as(&grpc));
        let other = Outputs::Json(serde_json::from_str(r#"{"p": [[0.5, 0.5]]}"#).unwrap());
        assert!(!grpc.same_as(&other));
        let renamed = Outputs::Json(serde_json::from_str(r#"{"q": [[0.5, 0.25]]}"#).unwrap());
        assert!(!grpc.same_as(&renamed));
    }

    #[test]
    fn statuses_the_server_sends_are_retried_only_when_unavailable() {
        assert!(grpc_retryable(&tonic::Status::unavailable("draining")));
        assert!(!grpc_retryable(&tonic::Status::resource_exhausted("full")));
        assert!(!grpc_retryable(&tonic::Status::invalid_argument("bad")));
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(grpc_retryable(&tonic::Status::from_error(Box::new(io))));
    }
}
