//! A requester's connection to a TF Serving-compatible endpoint over gRPC or REST: the model's
//! signature from its metadata, and Predict with tensors in and JSON or tensors out.

use crate::RequesterError;
use std::sync::Arc;

use serde_json::Value;

use super::transport::grpc_channel;
use crate::RestClient;
use teeserve_tensor::Signature;
use teeserve_tensor::{self as tensor, DType, Tensor};
use teeserve_wire::tensorflow::serving::{
    model_spec::VersionChoice, prediction_service_client::PredictionServiceClient,
    GetModelMetadataRequest, ModelSpec, PredictRequest, PredictResponse, SignatureDefMap,
};
use teeserve_wire::tensorflow::{DataType, TensorInfo};

/// Name, dtype number and dims of a signature entry.
type RawSpec = (String, i32, Vec<i64>);

/// What to call.
#[derive(Debug, Clone, Default)]
pub struct RequestTarget {
    /// Model name.
    pub model: String,
    /// Version.
    pub version: Option<i64>,
    /// Label.
    pub label: Option<String>,
    /// Signature name.
    pub signature: Option<String>,
    /// The SHA-256 digests (hex) of the model files the requester accepts an answer from (its
    /// policy's `models` pin for this model); sent with every request
    /// ([`teeserve_ratls::document::ACCEPT_HEADER`]), so that the attested server answers from
    /// no other file. Empty: any file the attestation admitted.
    pub accepted: Vec<String>,
    /// Ask for a receipt of each answer ([`teeserve_ratls::receipt`]).
    pub receipt: bool,
}

impl RequestTarget {
    /// The pin header's value, when there is a pin.
    fn accept_value(&self) -> Option<String> {
        (!self.accepted.is_empty()).then(|| self.accepted.join(","))
    }

    /// `msg` as a gRPC request carrying the pin (and the request for a receipt).
    fn grpc_request<T>(&self, msg: T) -> Result<tonic::Request<T>, RequesterError> {
        let mut req = tonic::Request::new(msg);
        if self.receipt {
            req.metadata_mut().insert(
                RECEIPT_HEADER,
                tonic::metadata::MetadataValue::from_static("1"),
            );
        }
        if let Some(v) = self.accept_value() {
            let v = v.parse().map_err(|_| {
                RequesterError::server(format!("model digests {v:?} are not a header value"))
            })?;
            req.metadata_mut()
                .insert(teeserve_ratls::document::ACCEPT_HEADER, v);
        }
        Ok(req)
    }

    fn spec(&self) -> ModelSpec {
        ModelSpec {
            name: self.model.clone(),
            version_choice: match (&self.version, &self.label) {
                (Some(v), _) => Some(VersionChoice::Version(*v)),
                (None, Some(l)) => Some(VersionChoice::VersionLabel(l.clone())),
                _ => None,
            },
            signature_name: self.signature.clone().unwrap_or_default(),
        }
    }

    fn rest_path(&self, suffix: &str) -> String {
        let mut p = format!("/v1/models/{}", self.model);
        if let Some(v) = self.version {
            p.push_str(&format!("/versions/{v}"));
        } else if let Some(l) = &self.label {
            p.push_str(&format!("/labels/{l}"));
        }
        p.push_str(suffix);
        p
    }
}

/// A connection to a server, over gRPC or REST.
pub enum Connection {
    /// gRPC: the client, and its channel for calls whose message bytes are kept (receipts).
    Grpc(
        PredictionServiceClient<tonic::transport::Channel>,
        tonic::transport::Channel,
    ),
    /// REST.
    Rest(RestClient),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Connection::Grpc(..) => "Connection(gRPC)",
            Connection::Rest(_) => "Connection(REST)",
        })
    }
}

/// A prediction's result.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// The version that answered (gRPC only).
    pub version: Option<i64>,
    /// Outputs by name, as nested JSON lists.
    pub outputs: serde_json::Map<String, Value>,
    /// The answer's receipt, with the exact bytes it is about, when one was asked for.
    pub receipt: Option<Receipt>,
}

/// A receipt as it came, and the request and response bytes whose SHA-256 it states (the gRPC
/// messages; the REST bodies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The COSE_Sign1.
    pub receipt: Vec<u8>,
    /// The request as sent.
    pub request: Vec<u8>,
    /// The response as received.
    pub response: Vec<u8>,
}

/// The request header (REST) and metadata key (gRPC) asking for a receipt.
pub const RECEIPT_HEADER: &str = "x-teeserve-receipt";
/// The gRPC trailer carrying a receipt.
pub const RECEIPT_TRAILER: &str = "x-teeserve-receipt-bin";

/// A gRPC codec that sends and receives message bytes as they are (no protobuf step), so that a
/// receipt's hashes can be checked, and a test can send bytes a generated client would not.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: bytes::Bytes,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut as _;
        buf.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf as _;
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

impl Connection {
    /// Connects over gRPC (`rest` false) or REST.
    pub async fn open(
        addr: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
        server_name: &str,
        rest: bool,
    ) -> Result<Self, RequesterError> {
        if rest {
            Ok(Connection::Rest(
                RestClient::connect(addr, tls, server_name).await?,
            ))
        } else {
            let channel = grpc_channel(addr, tls, server_name).await?;
            Ok(Connection::Grpc(
                PredictionServiceClient::new(channel.clone())
                    // An answer is bounded as over REST, from the length its frame declares.
                    .max_decoding_message_size(crate::MAX_ANSWER)
                    .max_encoding_message_size(usize::MAX),
                channel,
            ))
        }
    }

    /// The model's signature (GetModelMetadata).
    pub async fn signature(&mut self, t: &RequestTarget) -> Result<Signature, RequesterError> {
        let name = t
            .signature
            .as_deref()
            .unwrap_or(teeserve_tensor::DEFAULT_SIGNATURE);
        let (inputs, outputs): (Vec<RawSpec>, Vec<RawSpec>) = match self {
            Connection::Grpc(c, _) => {
                let r = c
                    .get_model_metadata(t.grpc_request(GetModelMetadataRequest {
                        model_spec: Some(t.spec()),
                        metadata_field: vec!["signature_def".into()],
                    })?)
                    .await
                    .map_err(|s| {
                        RequesterError::server(format!("{:?}: {}", s.code(), s.message()))
                    })?
                    .into_inner();
                let any = r
                    .metadata
                    .get("signature_def")
                    .ok_or_else(|| RequesterError::server("no signature_def in metadata"))?;
                let map: SignatureDefMap =
                    prost::Message::decode(&any.value[..]).map_err(RequesterError::server)?;
                let def = map
                    .signature_def
                    .get(name)
                    .ok_or_else(|| RequesterError::server(format!("no signature {name:?}")))?;
                (proto_specs(&def.inputs), proto_specs(&def.outputs))
            }
            Connection::Rest(c) => {
                let accept = t.accept_value();
                let headers: Vec<(&str, &str)> = accept
                    .iter()
                    .map(|v| (teeserve_ratls::document::ACCEPT_HEADER, v.as_str()))
                    .collect();
                let (status, body) = c
                    .request_with(
                        hyper::Method::GET,
                        &t.rest_path("/metadata"),
                        Vec::new(),
                        &headers,
                        crate::MAX_ANSWER,
                    )
                    .await?;
                let v: Value = serde_json::from_slice(&body).map_err(RequesterError::server)?;
                if status != 200 {
                    return Err(RequesterError::server(format!(
                        "HTTP {status}: {}",
                        v["error"].as_str().unwrap_or("")
                    )));
                }
                let def = &v["metadata"]["signature_def"]["signature_def"][name];
                (json_specs(&def["inputs"]), json_specs(&def["outputs"]))
            }
        };
        let spec =
            |(name, dt, shape): RawSpec| -> Result<teeserve_tensor::TensorSpec, RequesterError> {
                Ok(teeserve_tensor::TensorSpec {
                    name,
                    dtype: DType::from_tf(dt).map_err(RequesterError::server)?,
                    shape,
                })
            };
        Ok(Signature {
            inputs: inputs.into_iter().map(spec).collect::<Result<_, _>>()?,
            outputs: outputs.into_iter().map(spec).collect::<Result<_, _>>()?,
        })
    }

    /// Sends one Predict request over gRPC and returns TF Serving's answer as it came: the
    /// outputs stay tensors (`Tensor::from_proto`), as `tf.make_ndarray` leaves them for Python
    /// requesters. Inputs travel in `tensor_content`.
    pub async fn predict_proto(
        &mut self,
        t: &RequestTarget,
        inputs: &[(String, Tensor)],
    ) -> Result<PredictResponse, RequesterError> {
        self.predict_proto_with_receipt(t, inputs)
            .await
            .map(|(r, _)| r)
    }

    /// [`Connection::predict_proto`], with the answer's receipt when `t` asks for one.
    pub async fn predict_proto_with_receipt(
        &mut self,
        t: &RequestTarget,
        inputs: &[(String, Tensor)],
    ) -> Result<(PredictResponse, Option<Receipt>), RequesterError> {
        let Connection::Grpc(c, channel) = self else {
            return Err(RequesterError::server(
                "a PredictResponse comes only over gRPC; this connection is REST",
            ));
        };
        let req = PredictRequest {
            model_spec: Some(t.spec()),
            inputs: inputs
                .iter()
                .map(|(n, x)| (n.clone(), x.to_proto(true)))
                .collect(),
            output_filter: Vec::new(),
        };
        let status = |s: tonic::Status| {
            RequesterError::server(format!(
                "{}: {}",
                teeserve_wire::code_name(s.code()),
                s.message()
            ))
        };
        if !t.receipt {
            let r = c.predict(t.grpc_request(req)?).await.map_err(status)?;
            return Ok((r.into_inner(), None));
        }
        // The message bytes are sent and kept as they are: the receipt states their SHA-256.
        // (Shared with the call, not copied: an image is hundreds of kilobytes.)
        use prost::Message as _;
        let request = bytes::Bytes::from(req.encode_to_vec());
        let mut grpc =
            tonic::client::Grpc::new(channel.clone()).max_decoding_message_size(crate::MAX_ANSWER);
        grpc.ready()
            .await
            .map_err(|e| RequesterError::connect(format!("gRPC channel: {e}")))?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/tensorflow.serving.PredictionService/Predict",
        );
        let answer = grpc
            .unary(t.grpc_request(request.clone())?, path, RawCodec)
            .await
            .map_err(status)?;
        let receipt = answer
            .metadata()
            .get_bin(RECEIPT_TRAILER)
            .ok_or_else(|| {
                RequesterError::server("the server sent no receipt (x-teeserve-receipt-bin)")
            })?
            .to_bytes()
            .map_err(|e| RequesterError::server(format!("receipt trailer: {e}")))?
            .to_vec();
        let response = answer.into_inner();
        let decoded = PredictResponse::decode(response.as_slice())
            .map_err(|e| RequesterError::server(format!("PredictResponse: {e}")))?;
        Ok((
            decoded,
            Some(Receipt {
                receipt,
                // The call's share is gone by now, so this takes the buffer back without a copy.
                request: Vec::from(request),
                response,
            }),
        ))
    }

    /// Sends one Predict request; outputs come back as nested JSON lists.
    pub async fn predict(
        &mut self,
        t: &RequestTarget,
        inputs: &[(String, Tensor)],
    ) -> Result<Prediction, RequesterError> {
        match self {
            Connection::Grpc(..) => {
                let (r, receipt) = self.predict_proto_with_receipt(t, inputs).await?;
                let version = r.model_spec.and_then(|s| match s.version_choice {
                    Some(VersionChoice::Version(v)) => Some(v),
                    _ => None,
                });
                let mut outputs = serde_json::Map::new();
                let mut names: Vec<&String> = r.outputs.keys().collect();
                names.sort();
                for n in names {
                    let t = Tensor::from_proto(&r.outputs[n]).map_err(RequesterError::server)?;
                    let mut s = String::new();
                    tensor::write_json(&t, None, n.ends_with("_bytes"), &mut s);
                    outputs.insert(
                        n.clone(),
                        serde_json::from_str(&s).map_err(RequesterError::server)?,
                    );
                }
                Ok(Prediction {
                    version,
                    outputs,
                    receipt,
                })
            }
            Connection::Rest(c) => {
                // The body is written directly: large tensors are not parsed back into JSON
                // values only to be printed again.
                let mut body = String::from("{");
                tensor::write_json_inputs(inputs, &mut body);
                if let Some(s) = &t.signature {
                    body.push_str(", \"signature_name\": ");
                    tensor::write_json_string(s, &mut body);
                }
                body.push('}');
                let accept = t.accept_value();
                let mut headers: Vec<(&str, &str)> = accept
                    .iter()
                    .map(|v| (teeserve_ratls::document::ACCEPT_HEADER, v.as_str()))
                    .collect();
                if t.receipt {
                    headers.push((RECEIPT_HEADER, "1"));
                }
                let request = t.receipt.then(|| body.clone().into_bytes());
                let (status, resp) = c
                    .request_with(
                        hyper::Method::POST,
                        &t.rest_path(":predict"),
                        body.into_bytes(),
                        &headers,
                        crate::MAX_ANSWER,
                    )
                    .await?;
                let receipt = match request {
                    Some(request) if status == 200 => Some(rest_receipt(c, request, &resp)?),
                    _ => None,
                };
                let v: Value = serde_json::from_slice(&resp)
                    .map_err(|e| RequesterError::server(format!("HTTP {status}: {e}")))?;
                if status != 200 {
                    return Err(RequesterError::server(format!(
                        "HTTP {status}: {}",
                        v["error"].as_str().unwrap_or("")
                    )));
                }
                let outputs = match &v["outputs"] {
                    Value::Object(m) => m.clone(),
                    other => {
                        let mut m = serde_json::Map::new();
                        m.insert("output".into(), other.clone());
                        m
                    }
                };
                Ok(Prediction {
                    version: None,
                    outputs,
                    receipt,
                })
            }
        }
    }
}

/// The receipt of the REST answer `response` to `request` that `c` has just received.
fn rest_receipt(
    c: &RestClient,
    request: Vec<u8>,
    response: &[u8],
) -> Result<Receipt, RequesterError> {
    use base64::Engine as _;
    let v = c
        .last_headers()
        .get(RECEIPT_HEADER)
        .ok_or_else(|| RequesterError::server("the server sent no receipt (X-Teeserve-Receipt)"))?;
    let receipt = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(v.as_bytes())
        .map_err(|e| RequesterError::server(format!("receipt header: {e}")))?;
    Ok(Receipt {
        receipt,
        request,
        response: response.to_vec(),
    })
}

/// A signature's inputs or outputs as GetModelMetadata's SignatureDef gives them, by name.
fn proto_specs(m: &std::collections::HashMap<String, TensorInfo>) -> Vec<RawSpec> {
    let mut v: Vec<RawSpec> = m
        .iter()
        .map(|(name, info)| {
            let dims = info
                .tensor_shape
                .as_ref()
                .map(|s| &s.dim[..])
                .unwrap_or(&[]);
            (
                name.clone(),
                info.dtype,
                dims.iter().map(|d| d.size).collect(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The same from the REST metadata's JSON, where TF Serving names dtypes and writes sizes as
/// strings.
fn json_specs(m: &Value) -> Vec<RawSpec> {
    let Some(by_name) = m.as_object() else {
        return Vec::new();
    };
    let size = |d: &Value| {
        d["size"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1)
    };
    let mut v: Vec<RawSpec> = by_name
        .iter()
        .map(|(name, info)| {
            let dtype = DataType::from_str_name(info["dtype"].as_str().unwrap_or(""));
            let dims = info["tensor_shape"]["dim"]
                .as_array()
                .map(|d| &d[..])
                .unwrap_or(&[]);
            (
                name.clone(),
                dtype.map_or(0, |d| d as i32),
                dims.iter().map(size).collect(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Top-`k` classes of every row of a `[rows, classes]` float output.
pub fn top_classes(v: &Value, k: usize) -> Option<Vec<Vec<(usize, f64)>>> {
    let rows = v.as_array()?;
    let mut out = Vec::new();
    for r in rows {
        let scores: Vec<f64> = r
            .as_array()?
            .iter()
            .map(|x| x.as_f64())
            .collect::<Option<_>>()?;
        if scores.len() < 2 {
            return None;
        }
        let mut idx: Vec<usize> = (0..scores.len()).collect();
        idx.sort_by(|a, b| {
            scores[*b]
                .partial_cmp(&scores[*a])
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        out.push(idx.into_iter().take(k).map(|i| (i, scores[i])).collect());
    }
    Some(out)
}
