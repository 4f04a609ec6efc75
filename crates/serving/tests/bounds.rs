//! The server's resource bounds on loopback: requests whose declared shapes would take more
//! memory than the signature and the per-request bound allow, admission before bodies are
//! read, connection limits and timeouts, and batching of models whose outputs have no batch
//! dimension.
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use teeserve_client::RestClient;
use teeserve_serving::{ServeOptions, Server};
use teeserve_tensor::{Data, Tensor};
use teeserve_wire::tensorflow::serving::{
    prediction_service_client::PredictionServiceClient, ModelSpec, PredictRequest,
};
use teeserve_wire::tensorflow::{tensor_shape_proto, DataType, TensorProto, TensorShapeProto};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> u16 {
    teeserve_serving::free_loopback_port().unwrap()
}

fn model_dir(dir: &Path, name: &str, onnx: &[u8]) -> PathBuf {
    let b = dir.join(name);
    std::fs::create_dir_all(b.join("1")).unwrap();
    std::fs::write(b.join("1/model.onnx"), onnx).unwrap();
    b
}

fn digits(dir: &Path) -> PathBuf {
    model_dir(
        dir,
        "digits",
        &std::fs::read(repo().join("models/digits/1/model.onnx")).unwrap(),
    )
}

fn options(base: &Path, name: &str) -> ServeOptions {
    ServeOptions {
        port: free_port(),
        rest_api_port: free_port(),
        grpc_bind: "127.0.0.1".into(),
        rest_bind: "127.0.0.1".into(),
        model_name: name.into(),
        model_base_path: Some(base.to_owned()),
        file_system_poll_wait_seconds: 0,
        tls: teeserve_serving::TlsOptions {
            insecure: true,
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn start(mut o: ServeOptions) -> Server {
    for _ in 0..5 {
        match Server::start(o.clone(), None).await {
            Err(teeserve_serving::ServeError::Bind { .. }) => {
                o.port = free_port();
                o.rest_api_port = free_port();
            }
            r => return r.unwrap(),
        }
    }
    panic!("no free ports in 5 tries");
}

async fn grpc(s: &Server) -> PredictionServiceClient<tonic::transport::Channel> {
    PredictionServiceClient::new(
        teeserve_client::requester::grpc_channel(
            &s.grpc_addr.unwrap().to_string(),
            None,
            "127.0.0.1",
        )
        .await
        .unwrap(),
    )
}

fn predict_request(input: &str, t: TensorProto) -> PredictRequest {
    PredictRequest {
        model_spec: Some(ModelSpec {
            name: "digits".into(),
            ..Default::default()
        }),
        inputs: [(input.to_owned(), t)].into_iter().collect(),
        output_filter: vec![],
    }
}

/// A TensorProto that declares `dims` and carries one value (`set` fills it in).
fn one_value(dtype: DataType, dims: &[i64], set: impl FnOnce(&mut TensorProto)) -> TensorProto {
    let mut t = TensorProto {
        dtype: dtype as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: dims
                .iter()
                .map(|&size| tensor_shape_proto::Dim {
                    size,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }),
        ..Default::default()
    };
    set(&mut t);
    t
}

fn zero_row() -> TensorProto {
    Tensor::new(vec![1, 64], Data::F32(vec![0.0; 64]))
        .unwrap()
        .to_proto(true)
}

/// The requests of the review, each a few dozen bytes: a DT_STRING and a DT_DOUBLE tensor of
/// 2^28 elements and a DT_FLOAT one of [1048576, 64], each filled from one value. They are
/// refused by the signature and bound checks before anything is expanded, and the server keeps
/// serving.
#[tokio::test]
async fn one_value_fills_are_checked_against_the_signature_and_bound_before_expanding() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(options(&digits(dir.path()), "digits")).await;
    let mut g = grpc(&s).await;
    let cases = [
        (
            one_value(DataType::DtString, &[1 << 28], |t| t.string_val = vec![b"A".to_vec()]),
            "Expects arg[0] to be float but string is provided",
        ),
        (
            one_value(DataType::DtDouble, &[1 << 28], |t| t.double_val = vec![1.0]),
            "Expects arg[0] to be float but double is provided",
        ),
        (
            one_value(DataType::DtFloat, &[1 << 20, 64], |t| t.float_val = vec![0.5]),
            "takes 268435456 bytes decoded; a request's inputs may take at most 134217728 bytes (--max_request_tensor_bytes)",
        ),
    ];
    for (t, want) in cases {
        let req = predict_request("pixels", t);
        let len = prost::Message::encoded_len(&req);
        assert!(len < 64, "a request of {len} bytes");
        let e = g.predict(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(want), "{e:?}");
    }
    // A fill within the bound still fills (TensorProto's rule).
    let r = g
        .predict(predict_request(
            "pixels",
            one_value(DataType::DtFloat, &[3, 64], |t| t.float_val = vec![0.0]),
        ))
        .await
        .unwrap()
        .into_inner();
    let class = Tensor::from_proto(&r.outputs["class"]).unwrap();
    assert_eq!(class.shape, vec![3]);
    // A fill of an input the model does not have is not decoded: the name is reported.
    let mut extra = predict_request("pixels", zero_row());
    extra.inputs.insert(
        "other".into(),
        one_value(DataType::DtString, &[1 << 28], |t| {
            t.string_val = vec![b"A".to_vec()]
        }),
    );
    let e = g.predict(extra).await.unwrap_err();
    assert!(e.message().contains("Sent extra: {other}"), "{e:?}");
}

async fn post_raw(addr: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
    let mut c = RestClient::connect(addr, None, "127.0.0.1").await.unwrap();
    let (st, b) = c.request(hyper::Method::POST, path, body).await.unwrap();
    (st, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// A 98 KB body whose first row declares [16384, 16384] and whose other rows are scalars: the
/// shape read off the first element is checked against every row before any reservation.
#[tokio::test]
async fn a_ragged_json_body_is_refused_without_reserving_its_first_rows_shape() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(options(&digits(dir.path()), "digits")).await;
    let addr = s.rest_addr.unwrap().to_string();
    let n = 1 << 14;
    let first = vec!["0"; n].join(", ");
    let rest = vec!["0"; n - 1].join(", ");
    let body = format!("{{\"instances\": [[{first}], {rest}]}}");
    assert!(
        body.len() > 90_000 && body.len() < 100_000,
        "{}",
        body.len()
    );
    let (st, v) = post_raw(&addr, "/v1/models/digits:predict", body.into_bytes()).await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("Expecting a list at dimension 1"),
        "{v}"
    );
    let (st, v) = predict_zero_row(&addr).await;
    assert_eq!(st, 200, "{v}");
}

/// A REST predict body of one row of zeros for the digits model.
fn zero_row_body() -> Vec<u8> {
    serde_json::json!({"instances": [vec![0.0; 64]]})
        .to_string()
        .into_bytes()
}

/// A REST predict of one row of zeros to the digits model at `addr`: its status and answer.
async fn predict_zero_row(addr: &str) -> (u16, Value) {
    post_raw(addr, "/v1/models/digits:predict", zero_row_body()).await
}

/// Opens a REST request that declares a body of `len` bytes and sends only its first bytes:
/// it holds whatever the server gives a request before its body is read.
async fn half_sent(addr: &str, len: usize) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!(
            "POST /v1/models/digits:predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n{{\"instances\": ["
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tcp.flush().await.unwrap();
    tcp
}

/// Reads what the server sends until it closes the connection.
async fn read_to_close(tcp: &mut TcpStream) -> String {
    let mut out = Vec::new();
    // A hang here is the failure this guards against; the bound only ends the test.
    tokio::time::timeout(Duration::from_secs(60), tcp.read_to_end(&mut out))
        .await
        .expect("the server kept the connection open")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// The in-flight place is taken before the body is read, on both APIs (one limit): while a
/// request's body is still arriving, another REST request and a gRPC Predict are refused.
#[tokio::test]
async fn the_in_flight_limit_is_taken_before_bodies_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&digits(dir.path()), "digits");
    o.core.max_in_flight = 1;
    let s = start(o).await;
    let addr = s.rest_addr.unwrap().to_string();
    let mut holder = half_sent(&addr, 1000).await;
    // The holder's request is admitted once its header is read: wait until it is.
    let mut refused = None;
    for _ in 0..200 {
        let (st, v) = predict_zero_row(&addr).await;
        if st == 429 {
            refused = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = refused.expect("a second request was served while the first body was arriving");
    assert!(
        v["error"].as_str().unwrap().contains("requests in flight"),
        "{v}"
    );
    let e = grpc(&s)
        .await
        .predict(predict_request("pixels", zero_row()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    // The held request ends; the next one is served.
    holder.shutdown().await.unwrap();
    drop(holder);
    let mut ok = false;
    for _ in 0..200 {
        let (st, _) = predict_zero_row(&addr).await;
        if st == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "never served again");
}

/// Memory for bodies comes from one budget across requests, reserved as the bytes arrive: a
/// 40 MB body of which 30 MB has come holds 40 MB (as much again as arrived, up to its length),
/// so a second that sends 30 MB of its own does not fit in 64 MiB beside it and is refused,
/// naming the budget.
#[tokio::test]
async fn large_bodies_at_once_share_one_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&digits(dir.path()), "digits");
    o.core.max_in_flight_bytes = 64 << 20;
    let s = start(o).await;
    let addr = s.rest_addr.unwrap().to_string();
    let mut first = half_sent(&addr, 40 << 20).await;
    first.write_all(&vec![b' '; 30 << 20]).await.unwrap();
    // Until the server has read what was sent: it reads as fast as it can.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut second = half_sent(&addr, 40 << 20).await;
    // Refused part-way: the writes then fail, as the server stops reading and closes.
    let _ = tokio::time::timeout(
        Duration::from_secs(20),
        second.write_all(&vec![b' '; 30 << 20]),
    )
    .await;
    let text = read_to_close(&mut second).await;
    assert!(text.starts_with("HTTP/1.1 429"), "{text}");
    assert!(text.contains("--max_in_flight_bytes"), "{text}");
    // A body that alone is larger than the budget is refused outright.
    let (st, v) = post_raw(&addr, "/v1/models/digits:predict", vec![b' '; 60 << 20]).await;
    assert_eq!(st, 429, "{v}");
}

/// A request holds the budget for bytes that have arrived, not for bytes it declares: sixteen
/// requests that each declare a 40 MB body and send none of it hold a step (1 MiB) each, and a
/// request that sends its body is answered beside them in a 64 MiB budget. (When the whole
/// declared length was reserved up front, a few headers took every byte of the budget, and
/// every other requester was refused for as long as they waited.)
#[tokio::test]
async fn declared_bodies_that_do_not_arrive_hold_no_more_than_a_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&digits(dir.path()), "digits");
    o.core.max_in_flight_bytes = 64 << 20;
    let s = start(o).await;
    let addr = s.rest_addr.unwrap().to_string();
    let mut holders = Vec::new();
    for _ in 0..16 {
        holders.push(half_sent(&addr, 40 << 20).await);
    }
    // Until their headers are read and their steps reserved.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (st, v) = predict_zero_row(&addr).await;
    assert_eq!(st, 200, "{v}");
    drop(holders);
}

/// One peer holds at most its share of the requests in flight (`max_in_flight_per_peer`) and
/// of their memory (`max_in_flight_bytes_per_peer`): a peer (127.0.0.1) whose requests are all
/// waiting for their bodies is refused one more, naming its share, while another peer
/// (127.0.0.2, also this machine) is answered.
#[tokio::test]
async fn one_peer_holds_at_most_its_share_of_places_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&digits(dir.path()), "digits");
    o.core.max_in_flight = 4;
    o.core.max_in_flight_per_peer = 2;
    let s = start(o).await;
    let addr = s.rest_addr.unwrap().to_string();
    let _held = (half_sent(&addr, 1000).await, half_sent(&addr, 1000).await);
    let body = zero_row_body();
    let mut refused = None;
    for _ in 0..100 {
        let (st, v) = post_raw(&addr, "/v1/models/digits:predict", body.clone()).await;
        if st == 429 {
            refused = Some(v.to_string());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let v = refused.expect("a third request of one peer was admitted");
    assert!(
        v.contains("127.0.0.1 has 2 requests in flight") && v.contains("--max_in_flight_per_peer"),
        "{v}"
    );
    let (st, v) = post_from("127.0.0.2", &addr, body.clone()).await;
    assert_eq!(st, 200, "another peer is answered: {v}");

    // Memory: a peer may hold half of a 64 MiB budget; 30 MB sent of a 40 MB body holds
    // 40 MB, past its share, while another peer's body is taken in.
    let mut o = options(&digits(dir.path()), "digits");
    o.core.max_in_flight_bytes = 64 << 20;
    o.core.max_in_flight_bytes_per_peer = 32 << 20;
    let s = start(o).await;
    let addr = s.rest_addr.unwrap().to_string();
    let mut big = half_sent(&addr, 40 << 20).await;
    let _ = tokio::time::timeout(
        Duration::from_secs(20),
        big.write_all(&vec![b' '; 30 << 20]),
    )
    .await;
    let text = read_to_close(&mut big).await;
    assert!(
        text.starts_with("HTTP/1.1 429") && text.contains("--max_in_flight_bytes_per_peer"),
        "{text}"
    );
    let (st, v) = post_from("127.0.0.2", &addr, body).await;
    assert_eq!(st, 200, "{v}");
}

/// POSTs `body` to the digits model's REST predict from the local address `from`: the status
/// and the answer.
async fn post_from(from: &str, addr: &str, body: Vec<u8>) -> (u16, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut tcp = socket.connect(addr.parse().unwrap()).await.unwrap();
    tcp.write_all(
        format!(
            "POST /v1/models/digits:predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tcp.write_all(&body).await.unwrap();
    let text = read_to_close(&mut tcp).await;
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

fn tls_options(dir: &Path, o: &mut ServeOptions) -> Vec<u8> {
    let ca = teeserve_tls::make_ca("test CA").unwrap();
    let srv = teeserve_tls::issue(&ca, "server", &["127.0.0.1".into()], false).unwrap();
    std::fs::write(dir.join("s.pem"), &srv.cert_pem).unwrap();
    std::fs::write(dir.join("s.key"), srv.key_pem.as_bytes()).unwrap();
    o.tls = teeserve_serving::TlsOptions {
        cert: Some(dir.join("s.pem")),
        key: Some(dir.join("s.key")),
        ..Default::default()
    };
    ca.cert_pem.into_bytes()
}

/// 100 idle TLS connections are closed once the idle timeout has passed.
#[tokio::test]
async fn idle_tls_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&digits(dir.path()), "digits");
    let ca = tls_options(dir.path(), &mut o);
    o.connections.idle_timeout = Duration::from_secs(1);
    let s = start(o).await;
    let verifier = teeserve_client::ca_verifier(&ca).unwrap();
    let config = std::sync::Arc::new(
        teeserve_client::client_config(verifier, None, &[b"h2", b"http/1.1"]).unwrap(),
    );
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut conns = Vec::new();
    for i in 0..100 {
        let addr = if i % 2 == 0 { s.rest_addr } else { s.grpc_addr }.unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        conns.push(connector.connect(name, tcp).await.unwrap());
    }
    for mut c in conns {
        let mut buf = Vec::new();
        // Ends when the server closes; a hang is the failure.
        tokio::time::timeout(Duration::from_secs(60), c.read_to_end(&mut buf))
            .await
            .expect("an idle connection was kept open")
            .ok();
    }
}

/// With the connection cap reached, a new connection is closed at once (a refusal, not a
/// wait); once a connection closes, requests are answered again.
#[tokio::test]
async fn connections_over_the_cap_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&digits(dir.path()), "digits");
    o.connections.max_connections = 3;
    let s = start(o).await;
    let addr = s.rest_addr.unwrap().to_string();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        // A request on each shows it was accepted and counted.
        c.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut b = [0u8; 512];
        let n = c.read(&mut b).await.unwrap();
        assert!(
            b[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&b[..n])
        );
        held.push(c);
    }
    let mut over = TcpStream::connect(&addr).await.unwrap();
    let _ = over
        .write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let answer = read_to_close(&mut over).await;
    assert_eq!(answer, "", "the connection over the cap was served");
    held.pop();
    let mut ok = false;
    for _ in 0..200 {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        let _ = c
            .write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await;
        if read_to_close(&mut c).await.starts_with("HTTP/1.1 200") {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "not served after a connection closed");
}

/// A client that sends its HTTP/1 header a byte at a time is cut off after the header timeout.
#[tokio::test]
async fn a_slow_http1_header_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&digits(dir.path()), "digits");
    o.connections.header_timeout = Duration::from_secs(1);
    let s = start(o).await;
    let mut c = TcpStream::connect(s.rest_addr.unwrap()).await.unwrap();
    let header = b"GET /readyz HTTP/1.1\r\nhost: x\r\nx-slow: ";
    c.write_all(header).await.unwrap();
    // Keeps sending, slower than any header should take; the server must close first.
    let mut closed = false;
    for _ in 0..600 {
        if c.write_all(b"a").await.is_err() {
            closed = true;
            break;
        }
        let mut b = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(100), c.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {
                // An error answer (408) before closing is fine too.
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(
        closed,
        "a header sent a byte at a time was read for a minute"
    );
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field(n: u64, payload: &[u8], out: &mut Vec<u8>) {
    varint(n << 3 | 2, out);
    varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

fn int(n: u64, v: u64, out: &mut Vec<u8>) {
    varint(n << 3, out);
    varint(v, out);
}

/// ValueInfoProto { name = 1, type = 2 { tensor_type = 1 { elem_type = 1, shape = 2 } } } of a
/// float tensor.
fn value_info(name: &str, dims: &[Result<u64, &str>]) -> Vec<u8> {
    let mut shape = Vec::new();
    for d in dims {
        let mut dim = Vec::new();
        match d {
            Ok(v) => int(1, *v, &mut dim),
            Err(p) => field(2, p.as_bytes(), &mut dim),
        }
        field(1, &dim, &mut shape);
    }
    let mut tensor = Vec::new();
    int(1, 1, &mut tensor); // FLOAT
    field(2, &shape, &mut tensor);
    let mut ty = Vec::new();
    field(1, &tensor, &mut ty);
    let mut vi = Vec::new();
    field(1, name.as_bytes(), &mut vi);
    field(2, &ty, &mut vi);
    vi
}

/// A tiny ONNX model (protobuf written here, onnx.proto field numbers) over `x` [N, 4]:
/// `ReduceSum(x)` over every axis with keepdims 0 (a scalar output without a batch dimension)
/// when `batch_statistic` is false; `y = x + ReduceSum(x, axes [0], keepdims 1)` (an output
/// with a batch dimension whose rows depend on every row) when true.
fn reduce_sum_model(batch_statistic: bool) -> Vec<u8> {
    // NodeProto { input = 1, output = 2, op_type = 4, attribute = 5 { name = 1, i = 3,
    // ints = 8, type = 20 } }
    let mut graph = Vec::new();
    let mut keepdims = Vec::new();
    field(1, b"keepdims", &mut keepdims);
    int(3, u64::from(batch_statistic), &mut keepdims);
    int(20, 2, &mut keepdims); // INT
    let mut sum = Vec::new();
    field(1, b"x", &mut sum);
    field(2, if batch_statistic { b"s" } else { b"y" }, &mut sum);
    field(4, b"ReduceSum", &mut sum);
    field(5, &keepdims, &mut sum);
    if batch_statistic {
        let mut axes = Vec::new();
        field(1, b"axes", &mut axes);
        int(8, 0, &mut axes);
        int(20, 7, &mut axes); // INTS
        field(5, &axes, &mut sum);
    }
    // GraphProto { node = 1, name = 2, input = 11, output = 12 }
    field(1, &sum, &mut graph);
    if batch_statistic {
        let mut add = Vec::new();
        field(1, b"x", &mut add);
        field(1, b"s", &mut add);
        field(2, b"y", &mut add);
        field(4, b"Add", &mut add);
        field(1, &add, &mut graph);
    }
    field(2, b"sum", &mut graph);
    field(11, &value_info("x", &[Err("N"), Ok(4)]), &mut graph);
    let y: &[Result<u64, &str>] = if batch_statistic {
        &[Err("N"), Ok(4)]
    } else {
        &[]
    };
    field(12, &value_info("y", y), &mut graph);
    // ModelProto { ir_version = 1, graph = 7, opset_import = 8 { version = 2 } }
    let mut opset = Vec::new();
    int(2, 11, &mut opset);
    let mut model = Vec::new();
    int(1, 7, &mut model);
    field(7, &graph, &mut model);
    field(8, &opset, &mut model);
    model
}

/// A server of `onnx` as model `name`, batching two rows at most, a batch waiting up to
/// `timeout_micros` to fill, on one batch thread; ready.
async fn batched(dir: &Path, name: &str, onnx: &[u8], timeout_micros: u64) -> Server {
    let base = model_dir(dir, name, onnx);
    let mut o = options(&base, name);
    o.enable_batching = true;
    let params = dir.join("batching.txt");
    std::fs::write(
        &params,
        format!("max_batch_size {{ value: 2 }} batch_timeout_micros {{ value: {timeout_micros} }} num_batch_threads {{ value: 1 }}"),
    )
    .unwrap();
    o.batching_parameters_file = Some(params);
    let s = start(o).await;
    assert!(
        s.core.repo.ready(),
        "{:?}",
        s.core.status_of(name, None, None)
    );
    s
}

/// Two requests batched together to a model whose output has no batch dimension: each gets
/// the output of its own input, not one computed over both.
#[tokio::test]
async fn outputs_without_a_batch_dimension_are_not_shared_across_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = batched(dir.path(), "sum", &reduce_sum_model(false), 2000000).await;
    let addr = s.rest_addr.unwrap().to_string();
    let ask = |v: f32| {
        let addr = addr.clone();
        tokio::spawn(async move {
            post_raw(
                &addr,
                "/v1/models/sum:predict",
                serde_json::json!({"inputs": [vec![v; 4]]})
                    .to_string()
                    .into_bytes(),
            )
            .await
        })
    };
    let (a, b) = (ask(1.0), ask(2.0));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(a.0, 200, "{a:?}");
    assert_eq!(b.0, 200, "{b:?}");
    assert_eq!(a.1["outputs"], serde_json::json!(4.0), "{a:?}");
    assert_eq!(b.1["outputs"], serde_json::json!(8.0), "{b:?}");
}

/// A model whose rows depend on each other (`y = x + sum of x over the batch`), with batching
/// on and a batch that waits long enough for both: two requesters on two connections never
/// share a batch, so each gets `x + x` of its own row, never a sum over the other's input (the
/// owner has not declared the model row-independent).
#[tokio::test]
async fn requests_of_different_connections_never_share_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = batched(dir.path(), "stat", &reduce_sum_model(true), 300000).await;
    let addr = s.rest_addr.unwrap().to_string();
    for _ in 0..10 {
        let ask = |v: f32| {
            let addr = addr.clone();
            tokio::spawn(async move {
                post_raw(
                    &addr,
                    "/v1/models/stat:predict",
                    serde_json::json!({"inputs": [vec![v; 4]]})
                        .to_string()
                        .into_bytes(),
                )
                .await
            })
        };
        let (a, b) = (ask(1.0), ask(2.0));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert_eq!(a.0, 200, "{a:?}");
        assert_eq!(b.0, 200, "{b:?}");
        assert_eq!(a.1["outputs"], serde_json::json!([vec![2.0; 4]]), "{a:?}");
        assert_eq!(b.1["outputs"], serde_json::json!([vec![4.0; 4]]), "{b:?}");
    }
}

/// One requester's many connections do not make another's requests wait for their batches in
/// turn: batches of different connections form side by side, each closing at its own timeout.
/// With a 200 ms timeout and 20 other connections each with a request waiting, a requester is
/// answered within a few timeouts, not after 21 of them one after another (4.2 s).
#[tokio::test]
async fn batches_of_many_connections_form_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let s = batched(dir.path(), "stat", &reduce_sum_model(true), 200000).await;
    let addr = s.rest_addr.unwrap().to_string();
    let ask = |v: f32| {
        let addr = addr.clone();
        tokio::spawn(async move {
            let t = std::time::Instant::now();
            let r = post_raw(
                &addr,
                "/v1/models/stat:predict",
                serde_json::json!({"inputs": [vec![v; 4]]})
                    .to_string()
                    .into_bytes(),
            )
            .await;
            (r, t.elapsed())
        })
    };
    let others: Vec<_> = (0..20).map(|i| ask(i as f32)).collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ((status, out), took) = ask(100.0).await.unwrap();
    assert_eq!(status, 200, "{out:?}");
    assert_eq!(out["outputs"], serde_json::json!([vec![200.0; 4]]));
    assert!(
        took < Duration::from_millis(2000),
        "answered after {took:?}: batches of other connections were formed first, in turn"
    );
    for o in others {
        let ((status, _), _) = o.await.unwrap();
        assert_eq!(status, 200);
    }
}

/// A chunked body whose chunk size line is not hexadecimal (or overflows) is the requester's
/// malformed input: 400 naming it, not the 499 of a requester that went away.
#[tokio::test]
async fn a_malformed_chunked_body_is_a_bad_request() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(options(&digits(dir.path()), "digits")).await;
    let addr = s.rest_addr.unwrap().to_string();
    for size_line in ["zz", "ffffffffffffffffff", "1;\u{7f}"] {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        let request = format!(
            "POST /v1/models/digits:predict HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-type: application/json\r\n\r\n{size_line}\r\n{{}}\r\n0\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let answer = read_to_close(&mut tcp).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{size_line:?}: {answer}"
        );
        assert!(answer.contains("malformed"), "{size_line:?}: {answer}");
    }
}
