//! `teeserve serve` under an address-space limit receives the hostile requests of the review
//! (a few dozen bytes declaring gigabytes, a ragged body, several large bodies at once): each
//! is refused with a clear error, the server keeps serving, and its peak memory stays small.
mod harness;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use teeserve_wire::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use teeserve_wire::tensorflow::DataType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The server's address space: half of what the DT_STRING request below would take if its
/// one value were expanded to the declared shape (6 GiB); the peak-memory check covers the
/// smaller ones.
const ADDRESS_SPACE: u64 = 3 << 30;

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(grpc: u16, rest: u16, extra: &[&str]) -> Serve {
    let bin = harness::bin();
    let model = harness::repo().join("models/digits");
    let args = [
        "serve",
        "--insecure",
        "--port",
        &grpc.to_string(),
        "--rest_api_port",
        &rest.to_string(),
        "--grpc_bind_address",
        "127.0.0.1",
        "--rest_api_bind_address",
        "127.0.0.1",
        "--model_name",
        "digits",
        "--model_base_path",
        model.to_str().unwrap(),
        "--file_system_poll_wait_seconds",
        "0",
    ]
    .map(String::from);
    // Through prlimit where it exists (util-linux), so that an allocation of gigabytes aborts
    // the server instead of swapping the machine; one malloc arena per thread is left out so
    // that the address space counts memory, not reservations.
    let mut cmd = if Command::new("prlimit").arg("--version").output().is_ok() {
        let mut c = Command::new("prlimit");
        c.arg(format!("--as={ADDRESS_SPACE}")).arg("--").arg(bin);
        c
    } else {
        Command::new(bin)
    };
    let mut child = cmd
        .args(&args)
        .args(extra)
        .env("MALLOC_ARENA_MAX", "2")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start teeserve serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        if line.contains("listening") {
            break;
        }
    }
    Serve(child)
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// A gRPC message as it goes on the wire: uncompressed, with its 5-byte length prefix.
fn grpc_frame(m: &impl prost::Message) -> Vec<u8> {
    let msg = m.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&msg);
    out
}

/// One gRPC call over HTTP/2 (prior knowledge, a fresh connection) with the given `:method`:
/// the HTTP status and the `grpc-status` and `grpc-message` of the headers (a refusal's come
/// there, trailers-only), or, for a call that was served, of the trailers.
async fn grpc_call(
    addr: &str,
    method: hyper::Method,
    path: &str,
    body: hyper::body::Bytes,
) -> (u16, String, String) {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(body))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let mut headers = resp.headers().clone();
    if !headers.contains_key("grpc-status") {
        if let Ok(body) = resp.into_body().collect().await {
            headers.extend(body.trailers().cloned().unwrap_or_default());
        }
    }
    let get = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    (status, get("grpc-status"), get("grpc-message"))
}

/// One HTTP/1.1 POST of a Predict body on a fresh connection; the status and the JSON answer.
async fn post(addr: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    post_to(
        addr,
        "/v1/models/digits:predict",
        "content-type: application/json\r\n",
        &body,
    )
    .await
}

/// One HTTP/1.1 POST to `path` with `headers` (each line ending in CRLF) on a fresh connection;
/// the status and the JSON answer.
async fn post_to(addr: &str, path: &str, headers: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (and close) before the whole body is sent.
    let _ = tcp.write_all(body).await;
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or_default();
    (status, json)
}

#[tokio::test]
async fn hostile_requests_are_refused_in_bounded_memory() {
    let (grpc_port, rest_port) = (harness::free_port(), harness::free_port());
    let mut server = serve(grpc_port, rest_port, &[]);
    let grpc_addr = format!("127.0.0.1:{grpc_port}");
    let rest_addr = format!("127.0.0.1:{rest_port}");
    let mut g = PredictionServiceClient::new(
        teeserve_client::requester::grpc_channel(&grpc_addr, None, "127.0.0.1")
            .await
            .unwrap(),
    );
    for (req, want) in [
        (
            harness::digits_request_of(DataType::DtString, &[1 << 28], |t| {
                t.string_val = vec![b"A".to_vec()]
            }),
            "to be float but string",
        ),
        (
            harness::digits_request_of(DataType::DtDouble, &[1 << 28], |t| {
                t.double_val = vec![1.0]
            }),
            "to be float but double",
        ),
        (
            harness::digits_request_of(DataType::DtFloat, &[1 << 20, 64], |t| {
                t.float_val = vec![0.5]
            }),
            "--max_request_tensor_bytes",
        ),
    ] {
        let e = g.predict(req).await.unwrap_err();
        assert_eq!(e.code() as i32, 3, "INVALID_ARGUMENT: {e:?}");
        assert!(e.message().contains(want), "{e:?}");
    }
    // A ragged body of 98 KB whose first row declares [16384, 16384].
    let n = 1 << 14;
    let body = format!(
        "{{\"instances\": [[{}], {}]}}",
        vec!["0"; n].join(", "),
        vec!["0"; n - 1].join(", ")
    );
    let (st, v) = post(&rest_addr, body.into_bytes()).await;
    assert_eq!(st, 400, "{v}");
    // Four bodies of 60 MB at once that do not read as a plain list of numbers (the last row
    // is short), so each would be a JSON tree of gigabytes.
    let row = format!("[{}]", vec!["0"; 64].join(","));
    let rows = 60_000_000 / (row.len() + 1);
    let big = format!("{{\"instances\": [{}, [0]]}}", vec![row; rows].join(","));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (addr, body) = (rest_addr.clone(), big.clone().into_bytes());
            tokio::spawn(async move { post(&addr, body).await })
        })
        .collect();
    for t in tasks {
        let (st, v) = t.await.unwrap();
        assert!(st == 429 || st == 400, "{st} {v}");
        assert!(
            v["error"].as_str().is_some(),
            "TF Serving's error JSON: {v}"
        );
    }
    // Still serving.
    let (st, v) = post(
        &rest_addr,
        serde_json::json!({"instances": [vec![0.0; 64]]})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert!(server.0.try_wait().unwrap().is_none(), "the server exited");
    let peak = peak_rss_kib(server.0.id());
    assert!(peak < 1024 * 1024, "peak resident memory {peak} KiB");
}

/// The in-flight budget of [`grpc_over_get_is_refused_before_its_body_is_read`].
const BUDGET: u64 = 64 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_get_is_refused_before_its_body_is_read() {
    let (grpc_port, rest_port) = (harness::free_port(), harness::free_port());
    let mut server = serve(
        grpc_port,
        rest_port,
        &["--max_in_flight_bytes", &BUDGET.to_string()],
    );
    let addr = format!("127.0.0.1:{grpc_port}");
    // What legitimately uses the port still works: a call over POST, a health check, the
    // attestation document over GET (this server has no platform, so it says it has none).
    let mut g = PredictionServiceClient::new(
        teeserve_client::requester::grpc_channel(&addr, None, "127.0.0.1")
            .await
            .unwrap(),
    );
    let small =
        harness::digits_request_of(DataType::DtFloat, &[1, 64], |t| t.float_val = vec![0.5; 64]);
    g.predict(small).await.unwrap();
    let health = teeserve_wire::health::HealthCheckRequest::default();
    let (st, code, msg) = grpc_call(
        &addr,
        hyper::Method::POST,
        "/grpc.health.v1.Health/Check",
        grpc_frame(&health).into(),
    )
    .await;
    assert_eq!((st, code.as_str()), (200, "0"), "{msg}");
    let (st, _, _) = grpc_call(
        &addr,
        hyper::Method::GET,
        "/v1/attestation",
        Default::default(),
    )
    .await;
    assert_eq!(st, 404, "/v1/attestation answers over GET on the gRPC port");

    // Twelve Predicts of 40 MB at once, sent as GET: each is refused as grpc-go refuses it,
    // before its body is read, so none takes memory outside the budget. (Served as a call,
    // as they were, they took several hundred MB whatever --max_in_flight_bytes said.)
    let before = peak_rss_kib(server.0.id());
    let rows = 40_000_000 / (64 * 8);
    let big = harness::digits_request_of(DataType::DtDouble, &[rows, 64], |t| {
        t.tensor_content = vec![0; rows as usize * 64 * 8].into()
    });
    let body = hyper::body::Bytes::from(grpc_frame(&big));
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let (addr, body) = (addr.clone(), body.clone());
            tokio::spawn(async move {
                grpc_call(
                    &addr,
                    hyper::Method::GET,
                    "/tensorflow.serving.PredictionService/Predict",
                    body,
                )
                .await
            })
        })
        .collect();
    for c in calls {
        let (st, code, msg) = c.await.unwrap();
        assert_eq!(st, 405, "grpc-status {code} {msg}");
        assert_eq!(code, "13", "INTERNAL: {msg}");
        assert!(msg.contains("GET") && msg.contains("POST"), "{msg}");
    }
    // Still serving.
    let small =
        harness::digits_request_of(DataType::DtFloat, &[1, 64], |t| t.float_val = vec![0.5; 64]);
    g.predict(small).await.unwrap();
    assert!(server.0.try_wait().unwrap().is_none(), "the server exited");
    let grown = peak_rss_kib(server.0.id()).saturating_sub(before);
    assert!(
        grown * 1024 < BUDGET + (32 << 20),
        "peak resident memory grew by {grown} KiB under a budget of {} KiB",
        BUDGET >> 10
    );
}

/// A ModelInferRequest (the Open Inference Protocol over gRPC) with one FP32 input `pixels`.
fn model_infer(shape: &[i64], raw: Option<Vec<u8>>) -> teeserve_wire::inference::ModelInferRequest {
    use teeserve_wire::inference::{model_infer_request::InferInputTensor, ModelInferRequest};
    ModelInferRequest {
        model_name: "digits".into(),
        inputs: vec![InferInputTensor {
            name: "pixels".into(),
            datatype: "FP32".into(),
            shape: shape.to_vec(),
            ..Default::default()
        }],
        raw_input_contents: raw.into_iter().map(Into::into).collect(),
        ..Default::default()
    }
}

/// One HTTP/1.1 POST of an Open Inference Protocol body with its binary data; the status and
/// the JSON answer.
async fn post_v2(addr: &str, head: &serde_json::Value, binary: &[u8]) -> (u16, serde_json::Value) {
    let head = head.to_string();
    let mut body = head.clone().into_bytes();
    body.extend_from_slice(binary);
    let headers = format!("inference-header-content-length: {}\r\n", head.len());
    post_to(addr, "/v2/models/digits/infer", &headers, &body).await
}

/// The Open Inference Protocol gets Predict's bounds: what an input declares is checked against
/// the signature and --max_request_tensor_bytes before anything is decoded, a binary length
/// against its shape, and large calls at once against --max_in_flight_bytes before tonic reads
/// them; the server keeps serving in little memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_requests_are_bounded_as_predict_is() {
    let (grpc_port, rest_port) = (harness::free_port(), harness::free_port());
    let mut server = serve(
        grpc_port,
        rest_port,
        &["--max_in_flight_bytes", &BUDGET.to_string()],
    );
    let addr = format!("127.0.0.1:{grpc_port}");
    let rest_addr = format!("127.0.0.1:{rest_port}");
    let path = "/inference.GRPCInferenceService/ModelInfer";
    let call = |m: teeserve_wire::inference::ModelInferRequest| {
        let addr = addr.clone();
        async move { grpc_call(&addr, hyper::Method::POST, path, grpc_frame(&m).into()).await }
    };
    let ok = call(model_infer(&[1, 64], Some(vec![0; 256]))).await;
    assert_eq!((ok.0, ok.1.as_str()), (200, "0"), "{}", ok.2);
    for (m, want) in [
        // Gigabytes declared by a few bytes: refused by the declared size, not decoded.
        (
            model_infer(&[1 << 21, 64], None),
            "--max_request_tensor_bytes",
        ),
        (
            model_infer(&[1 << 21, 64], Some(vec![0; 16])),
            "--max_request_tensor_bytes",
        ),
        (model_infer(&[1 << 30, 64], None), "larger than"),
        (model_infer(&[2, 64], Some(vec![0; 16])), "takes 512"),
        (model_infer(&[2, 63], None), "does not match"),
        (model_infer(&[-1, 64], None), "negative"),
    ] {
        let (st, code, msg) = call(m).await;
        let msg = teeserve_attest::collateral::pccs::percent_decode(&msg);
        assert_eq!((st, code.as_str()), (200, "3"), "INVALID_ARGUMENT: {msg}");
        assert!(msg.contains(want), "{msg}");
    }
    // Over REST: JSON data nested otherwise than its declared shape is refused, naming both
    // (the same values flat, or nested as the shape, are answered).
    let nested = |data: serde_json::Value| {
        serde_json::json!({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32",
            "data": data}]})
    };
    let (st, v) = post_v2(
        &rest_addr,
        &nested(serde_json::json!([vec![0.5; 32], vec![0.5; 32]])),
        &[],
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("nested as [2,32], but shape is [1,64]"),
        "{v}"
    );
    for data in [
        serde_json::json!(vec![0.5; 64]),
        serde_json::json!([vec![0.5; 64]]),
    ] {
        let (st, v) = post_v2(&rest_addr, &nested(data), &[]).await;
        assert_eq!(st, 200, "{v}");
    }
    // A binary length that is not its shape's, and one past the bytes sent.
    let head = |size: u64| {
        serde_json::json!({"inputs": [{"name": "pixels", "shape": [1 << 20, 64], "datatype": "FP32",
            "parameters": {"binary_data_size": size}}]})
    };
    let (st, v) = post_v2(&rest_addr, &head(1 << 40), &[0; 64]).await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("--max_request_tensor_bytes"),
        "{v}"
    );
    let head_small = serde_json::json!({"inputs": [{"name": "pixels", "shape": [4, 64], "datatype": "FP32",
        "parameters": {"binary_data_size": 1024}}]});
    let (st, v) = post_v2(&rest_addr, &head_small, &[0; 64]).await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("only 64 bytes"),
        "{v}"
    );
    // Messages that cost far more decoded than sent: a million empty inputs (two bytes each),
    // alone and as a second message after a small one (tonic decodes that too, draining the
    // call for its trailers). Refused by the estimate before tonic reads them.
    let before = peak_rss_kib(server.0.id());
    let mut msg = vec![0x0a, 6];
    msg.extend_from_slice(b"digits");
    for _ in 0..1_000_000 {
        msg.extend_from_slice(&[0x2a, 0]);
    }
    let mut alone = vec![0];
    alone.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
    alone.extend_from_slice(&msg);
    let mut second = grpc_frame(&model_infer(&[1, 64], Some(vec![0; 256])));
    second.extend_from_slice(&alone);
    for body in [alone, second] {
        let (st, code, msg) = grpc_call(&addr, hyper::Method::POST, path, body.into()).await;
        assert_eq!((st, code.as_str()), (200, "8"), "RESOURCE_EXHAUSTED: {msg}");
    }
    let grew = peak_rss_kib(server.0.id()).saturating_sub(before);
    assert!(grew < 100 * 1024, "peak resident memory grew by {grew} KiB");
    // Twelve ModelInfers of 40 MB of raw contents at once under a 64 MiB budget: those that do
    // not fit are refused with RESOURCE_EXHAUSTED before tonic decodes them.
    let before = peak_rss_kib(server.0.id());
    let rows = 40_000_000 / (64 * 4);
    let big = hyper::body::Bytes::from(grpc_frame(&model_infer(
        &[rows, 64],
        Some(vec![0; rows as usize * 64 * 4]),
    )));
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let (addr, body) = (addr.clone(), big.clone());
            tokio::spawn(async move { grpc_call(&addr, hyper::Method::POST, path, body).await })
        })
        .collect();
    let mut exhausted = 0;
    for c in calls {
        let (st, code, msg) = c.await.unwrap();
        assert_eq!(st, 200, "{msg}");
        assert!(
            code == "0" || code == "8",
            "OK or RESOURCE_EXHAUSTED: {code} {msg}"
        );
        exhausted += usize::from(code == "8");
    }
    assert!(
        exhausted > 0,
        "twelve 40 MB calls all fit in a 64 MiB budget"
    );
    let grew = peak_rss_kib(server.0.id()).saturating_sub(before);
    // The budget, the bodies being read when refused, and what a served one's answer takes.
    assert!(grew < 400 * 1024, "peak resident memory grew by {grew} KiB");
    assert!(server.0.try_wait().unwrap().is_none(), "the server exited");
}
