//! Peers of `teeserve serve` for the connection tests: the server started with TLS or without,
//! and HTTP/2 clients that advertise the window they choose.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use teeserve_client::{ca_verifier, client_config};

use super::harness::*;

/// Time allowed beyond a configured bound for the server to act and the client to notice, on a
/// busy machine.
pub const MARGIN: Duration = Duration::from_secs(5);

/// A CA with a server certificate for 127.0.0.1, in `d`, and `teeserve serve` of the bundled
/// digits model with it and `extra` flags.
pub fn serve(d: &Path, extra: &[&str]) -> Serve {
    run_in(d, &["tls", "init", "--dir", "tls"]).ok();
    let tls = [
        "--tls-cert",
        "tls/server.pem",
        "--tls-key",
        "tls/server.key",
    ];
    serve_digits(d, &[&tls[..], extra].concat())
}

/// `teeserve serve` of the bundled digits model without TLS (`--insecure`), with `extra` flags:
/// for clients that speak plain HTTP from an address of their choice.
pub fn serve_plaintext(d: &Path, extra: &[&str]) -> Serve {
    serve_digits(d, &[&["--insecure"][..], extra].concat())
}

/// `teeserve serve` of the bundled digits model with `flags`.
pub fn serve_digits(d: &Path, flags: &[&str]) -> Serve {
    serve_digits_with(d, flags, |_| {})
}

/// [`serve_digits`], its command changed by `setup` first (an environment variable).
pub fn serve_digits_with(
    d: &Path,
    flags: &[&str],
    setup: impl Fn(&mut std::process::Command),
) -> Serve {
    let models = repo().join("models/digits");
    let args = [
        &["--model_name", "digits", "--model_base_path", s(&models)][..],
        flags,
    ]
    .concat();
    let command = || {
        let mut c = serve_command(d, &args);
        setup(&mut c);
        c
    };
    listen(command, None).unwrap()
}

/// `teeserve predict` over gRPC with the test CA.
pub fn predict(d: &Path, addr: &str) -> Run {
    let sample = repo().join("testdata/digits/sample.json");
    run_in(
        d,
        &[
            "predict",
            "--server",
            addr,
            "--model",
            "digits",
            "--input",
            s(&sample),
            "--ca",
            "tls/ca.pem",
        ],
    )
}

/// A gRPC message in its length-prefixed frame.
pub fn grpc_frame(m: &impl Message) -> Bytes {
    let body = m.encode_to_vec();
    let mut f = vec![0u8];
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&body);
    f.into()
}

pub fn grpc_request(addr: &str, path: &str) -> hyper::Request<()> {
    hyper::Request::builder()
        .method("POST")
        .uri(format!("https://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// An HTTP/2 connection over TLS verified by the test CA, with `window` as the initial window
/// this client advertises; the handle ends (with the time) when the connection is closed.
pub async fn h2_connect(
    d: &Path,
    addr: &str,
    window: Option<u32>,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Instant>,
) {
    let ca = std::fs::read(d.join("tls/ca.pem")).unwrap();
    let cfg = client_config(ca_verifier(&ca).unwrap(), None, &[b"h2"]).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    let mut b = h2::client::Builder::new();
    if let Some(w) = window {
        b.initial_window_size(w);
    }
    let (send, conn) = b.handshake(tls).await.unwrap();
    let closed = tokio::spawn(async move {
        let _ = conn.await;
        Instant::now()
    });
    (send, closed)
}

/// A health `Watch` that has received its first status and is never read again.
pub async fn watch_forever(
    d: &Path,
    addr: &str,
) -> (h2::RecvStream, tokio::task::JoinHandle<Instant>) {
    let (send, closed) = h2_connect(d, addr, None).await;
    let mut send = send.ready().await.unwrap();
    let (resp, mut body) = send
        .send_request(grpc_request(addr, "/grpc.health.v1.Health/Watch"), false)
        .unwrap();
    // An empty HealthCheckRequest: the whole server.
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.into_body();
    let first = stream.data().await.unwrap().unwrap();
    assert!(first.len() >= 5, "{first:?}");
    (stream, closed)
}

/// A Predict from a client whose window is 0: the answer's head arrives, its body never can.
pub async fn predict_never_read(
    d: &Path,
    addr: &str,
) -> (h2::RecvStream, tokio::task::JoinHandle<Instant>) {
    let (send, closed) = h2_connect(d, addr, Some(0)).await;
    let mut send = send.ready().await.unwrap();
    let (resp, mut body) = send
        .send_request(
            grpc_request(addr, "/tensorflow.serving.PredictionService/Predict"),
            false,
        )
        .unwrap();
    let req = digits_request(1.0);
    body.send_data(grpc_frame(&req), true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    (resp.into_body(), closed)
}

/// Waits for a connection to be closed by `deadline`; the time it closed.
pub async fn closed_by(
    what: &str,
    closed: tokio::task::JoinHandle<Instant>,
    deadline: Instant,
) -> Instant {
    let wait = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(wait, closed).await {
        Ok(t) => t.unwrap(),
        Err(_) => panic!("{what}: still open at the deadline"),
    }
}

/// The path of TF Serving's Predict over gRPC.
pub const PREDICT: &str = "/tensorflow.serving.PredictionService/Predict";

/// A Predict of `rows` digits at once (each pixel 1.0).
pub fn rows_request(rows: usize) -> teeserve_wire::tensorflow::serving::PredictRequest {
    digits_request_of(
        teeserve_wire::tensorflow::DataType::DtFloat,
        &[rows as i64, 64],
        |t| t.float_val = vec![1.0; rows * 64],
    )
}

/// The gRPC status a response's head carries (a refusal comes as trailers only; an answer's
/// head carries none) and its message, as sent (percent-encoded).
pub fn grpc_status<B>(resp: &hyper::Response<B>) -> (Option<String>, String) {
    let h = resp.headers();
    let status = h
        .get("grpc-status")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let message = h
        .get("grpc-message")
        .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
        .unwrap_or_default();
    (status, message)
}
