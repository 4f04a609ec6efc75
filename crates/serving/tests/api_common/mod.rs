//! What the API tests share: a served copy of the digits model, servers started on loopback
//! with TLS, and gRPC and REST clients of them.
#![allow(dead_code)] // each test binary uses part of it

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use teeserve_client::RestClient;
use teeserve_serving::{ServeOptions, Server};
use teeserve_tensor::{self as tensor, Tensor};
use teeserve_wire::tensorflow::serving::{
    model_spec::VersionChoice, prediction_service_client::PredictionServiceClient, ModelSpec,
};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn free_port() -> u16 {
    teeserve_serving::free_loopback_port().unwrap()
}

pub fn model_bytes() -> Vec<u8> {
    std::fs::read(repo().join("models/digits/1/model.onnx")).unwrap()
}

pub fn pixels() -> Tensor {
    tensor::from_npy(&std::fs::read(repo().join("testdata/digits/heldout-pixels.npy")).unwrap())
        .unwrap()
}

pub fn base(dir: &Path) -> PathBuf {
    let b = dir.join("digits");
    std::fs::create_dir_all(b.join("1")).unwrap();
    std::fs::write(b.join("1/model.onnx"), model_bytes()).unwrap();
    b
}

pub fn options(base: &Path) -> ServeOptions {
    ServeOptions {
        port: free_port(),
        rest_api_port: free_port(),
        grpc_bind: "127.0.0.1".into(),
        rest_bind: "127.0.0.1".into(),
        model_name: "digits".into(),
        model_base_path: Some(base.to_owned()),
        file_system_poll_wait_seconds: 1,
        tls: teeserve_serving::TlsOptions {
            insecure: true,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Starts a server. A port that something else took after `free_port` chose it (another test's
/// listener or client socket) is chosen again.
pub async fn start(mut o: ServeOptions) -> Server {
    for _ in 0..5 {
        match Server::start(o.clone(), None).await {
            Err(teeserve_serving::ServeError::Bind { .. }) => {
                o.port = if o.port == 0 { 0 } else { free_port() };
                o.rest_api_port = if o.rest_api_port == 0 { 0 } else { free_port() };
            }
            r => return r.unwrap(),
        }
    }
    panic!("no free ports in 5 tries");
}

pub async fn rest(s: &Server) -> RestClient {
    RestClient::connect(&s.rest_addr.unwrap().to_string(), None, "127.0.0.1")
        .await
        .unwrap()
}

pub async fn channel(s: &Server) -> tonic::transport::Channel {
    teeserve_client::requester::grpc_channel(&s.grpc_addr.unwrap().to_string(), None, "127.0.0.1")
        .await
        .unwrap()
}

pub async fn grpc(s: &Server) -> PredictionServiceClient<tonic::transport::Channel> {
    PredictionServiceClient::new(channel(s).await)
}

pub async fn post(c: &mut RestClient, path: &str, body: Value) -> (u16, Value) {
    let (s, b) = c
        .request(hyper::Method::POST, path, body.to_string().into_bytes())
        .await
        .unwrap();
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

pub async fn get(c: &mut RestClient, path: &str) -> (u16, Value) {
    let (s, b) = c
        .request(hyper::Method::GET, path, Vec::new())
        .await
        .unwrap();
    (
        s,
        serde_json::from_slice(&b)
            .unwrap_or(Value::String(String::from_utf8_lossy(&b).into_owned())),
    )
}

/// A fresh REST connection to `addr` and one single-row predict of the digits model.
pub async fn predict_one_zero_row(addr: &str) -> (u16, Value) {
    let mut c = RestClient::connect(addr, None, "127.0.0.1").await.unwrap();
    post(
        &mut c,
        "/v1/models/digits:predict",
        json!({"instances": [vec![0.0; 64]]}),
    )
    .await
}

pub fn spec(name: &str, version: Option<i64>, label: Option<&str>, sig: &str) -> Option<ModelSpec> {
    Some(ModelSpec {
        name: name.into(),
        version_choice: match (version, label) {
            (Some(v), _) => Some(VersionChoice::Version(v)),
            (None, Some(l)) => Some(VersionChoice::VersionLabel(l.into())),
            _ => None,
        },
        signature_name: sig.into(),
    })
}

pub fn rows(n: usize) -> Tensor {
    pixels().slice_rows(0, n)
}
