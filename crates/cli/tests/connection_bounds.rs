//! `teeserve serve` against peers that would hold their HTTP/2 connections open for ever: a
//! health `Watch` stream that never ends, and a client that advertises a window of 0 so that no
//! response reaches it. With `--max_connections` small, a few such peers take every slot; each
//! connection must be closed within the configured bound (the grace after its GOAWAY, the send
//! timeout, or its maximum age), and a new client then served.
mod harness;
use harness::*;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use teeserve_client::{ca_verifier, client_config};

/// Time allowed beyond a configured bound for the server to act and the client to notice, on a
/// busy machine.
const MARGIN: Duration = Duration::from_secs(5);

/// A CA with a server certificate for 127.0.0.1, in `d`, and `teeserve serve` of the bundled
/// digits model with it and `extra` flags.
fn serve(d: &Path, extra: &[&str]) -> Serve {
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
fn serve_plaintext(d: &Path, extra: &[&str]) -> Serve {
    serve_digits(d, &[&["--insecure"][..], extra].concat())
}

/// `teeserve serve` of the bundled digits model with `flags`.
fn serve_digits(d: &Path, flags: &[&str]) -> Serve {
    let models = repo().join("models/digits");
    let args = [
        &["--model_name", "digits", "--model_base_path", s(&models)][..],
        flags,
    ]
    .concat();
    listen(|| serve_command(d, &args), None).unwrap()
}

/// `teeserve predict` over gRPC with the test CA.
fn predict(d: &Path, addr: &str) -> Run {
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
fn grpc_frame(m: &impl Message) -> Bytes {
    let body = m.encode_to_vec();
    let mut f = vec![0u8];
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&body);
    f.into()
}

fn grpc_request(addr: &str, path: &str) -> hyper::Request<()> {
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
async fn h2_connect(
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
async fn watch_forever(d: &Path, addr: &str) -> (h2::RecvStream, tokio::task::JoinHandle<Instant>) {
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
async fn predict_never_read(
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
async fn closed_by(
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

#[test]
fn connections_that_never_finish_are_closed_after_the_grace_and_a_new_client_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (idle, grace) = (2, 2);
    let server = serve(
        d,
        &[
            "--max_connections",
            "4",
            "--idle_timeout_seconds",
            &idle.to_string(),
            "--connection_grace_seconds",
            &grace.to_string(),
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let addr = &server.grpc;
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(("a health Watch", watch_forever(d, addr).await));
            held.push((
                "a Predict with a window of 0",
                predict_never_read(d, addr).await,
            ));
        }
        let opened = Instant::now();
        // Every slot is taken: a new client is turned away.
        let r = tokio::task::block_in_place(|| predict(d, addr));
        assert_ne!(
            r.code, 0,
            "served while 4 of 4 connections were held: {}",
            r.stdout
        );
        // Each is closed within the idle timeout and the grace after its GOAWAY.
        let deadline = opened + Duration::from_secs(idle + grace) + MARGIN;
        for (what, (stream, closed)) in held {
            closed_by(what, closed, deadline).await;
            drop(stream);
        }
    });
    // And a new client is served.
    let r = predict(d, &server.grpc).ok();
    assert!(r.stdout.contains("\"outputs\""), "{}", r.stdout);
}

#[test]
fn a_response_the_peer_does_not_read_closes_its_connection_at_the_send_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let send_timeout = 2;
    // No idle timeout to rescue it: only the send timeout can close it.
    let server = serve(
        d,
        &[
            "--idle_timeout_seconds",
            "600",
            "--send_timeout_seconds",
            &send_timeout.to_string(),
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let addr = &server.grpc;
        let (_watch, watch_closed) = watch_forever(d, addr).await;
        let (_stream, closed) = predict_never_read(d, addr).await;
        let opened = Instant::now();
        let at = closed_by(
            "a Predict with a window of 0",
            closed,
            opened + Duration::from_secs(send_timeout) + MARGIN,
        )
        .await;
        // A Watch waiting for news is not a response the peer fails to read.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !watch_closed.is_finished(),
            "the Watch's connection was closed too, {:?} after the other",
            at.elapsed()
        );
    });
}

#[test]
fn busy_connections_are_closed_at_their_maximum_age() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (age, grace) = (2, 1);
    let server = serve(
        d,
        &[
            "--idle_timeout_seconds",
            "600",
            "--send_timeout_seconds",
            "0",
            "--max_connection_age_seconds",
            &age.to_string(),
            "--connection_grace_seconds",
            &grace.to_string(),
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let addr = &server.grpc;
        let start = Instant::now();
        let (_watch, watch_closed) = watch_forever(d, addr).await;
        let (_stream, closed) = predict_never_read(d, addr).await;
        let deadline = start + Duration::from_secs(age + grace) + MARGIN;
        closed_by("a health Watch", watch_closed, deadline).await;
        closed_by("a Predict with a window of 0", closed, deadline).await;
    });
}

/// A peer that opens every place of a port (`--max_connections`) and sends nothing keeps out
/// nobody else: a newcomer of another peer (127.0.0.2, also this machine) takes the place of
/// one of its idle connections (idle for a second) and is answered, while the hog's own next connection is closed
/// at once and its other connections stay. (Before, every other peer, health probes included,
/// was closed on arrival for as long as the hog held the places.)
#[test]
fn a_peer_that_holds_every_connection_gives_one_up_to_another_peer() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = serve_plaintext(
        d,
        &["--max_connections", "8", "--header_timeout_seconds", "60"],
    );
    let addr: std::net::SocketAddr = server.rest.parse().unwrap();
    let hog: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Until the server has accepted them all, and they have had no request for the second
    // after which a connection may give its place (one that sends requests one after another
    // never gives it between two of them).
    std::thread::sleep(Duration::from_millis(1500));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let get = |from: &str| -> String {
        let from: std::net::SocketAddr = format!("{from}:0").parse().unwrap();
        let mut tcp = rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(from).unwrap();
            let tcp = socket.connect(addr).await.unwrap().into_std().unwrap();
            tcp.set_nonblocking(false).unwrap();
            tcp
        });
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = tcp
            .write_all(b"GET /v1/models/digits HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        let mut out = Vec::new();
        let _ = tcp.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    // The hog's ninth connection is closed without an answer.
    assert_eq!(
        get("127.0.0.1"),
        "",
        "the hog's ninth connection was served"
    );
    // Another peer is answered.
    let answer = get("127.0.0.2");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    // One of the hog's connections gave its place; the others are still open.
    let closed = hog
        .into_iter()
        .filter(|mut c| {
            c.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            matches!(c.read(&mut [0u8; 1]), Ok(0))
        })
        .count();
    assert_eq!(closed, 1, "connections of the hog closed");
}

/// Health checks are not held to the server's in-flight limit (an overloaded server answers
/// them) but are held to the rest: a check whose message never ends takes a place of its
/// peer's share, is answered DEADLINE_EXCEEDED at the request deadline, and its connection can
/// then give its place to another peer. Four such checks on the four places of a port, one
/// place per peer: three are refused at once naming the peer's share, and a newcomer of another
/// peer (127.0.0.2) is answered while the fourth still waits. (Passed straight through, such
/// checks held every place until the connections' maximum age, an hour by default.)
#[test]
fn health_checks_that_never_end_hold_no_place_beyond_their_peers_share() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = serve(
        d,
        &[
            "--max_connections",
            "4",
            "--max_in_flight_per_peer",
            "1",
            "--request_timeout_ms",
            "3000",
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let addr = &server.grpc;
        let mut hog = Vec::new();
        for _ in 0..4 {
            let (send, closed) = h2_connect(d, addr, None).await;
            let mut send = send.ready().await.unwrap();
            let (resp, body) = send
                .send_request(grpc_request(addr, "/grpc.health.v1.Health/Check"), false)
                .unwrap();
            hog.push((send, body, resp, closed));
        }
        // Three are answered at once: RESOURCE_EXHAUSTED naming the peer's share.
        let mut refused = 0;
        let mut waiting = Vec::new();
        for (send, body, resp, closed) in hog {
            match tokio::time::timeout(Duration::from_millis(1500), resp).await {
                Ok(r) => {
                    let r = r.unwrap();
                    let status = r
                        .headers()
                        .get("grpc-status")
                        .map(|v| v.to_str().unwrap().to_owned());
                    let message = r
                        .headers()
                        .get("grpc-message")
                        .map(|v| v.to_str().unwrap().to_owned());
                    assert_eq!(status.as_deref(), Some("8"), "{message:?}");
                    assert!(
                        message
                            .unwrap_or_default()
                            .contains("max_in_flight_per_peer"),
                        "the refusal names the share"
                    );
                    refused += 1;
                    drop((send, body, closed));
                }
                Err(_) => waiting.push((send, body, closed)),
            }
        }
        assert_eq!((refused, waiting.len()), (3, 1));
        // Another peer, on the same port, is answered meanwhile (this server has no platform:
        // its attestation document is 404, an answer).
        let answer = get_from("127.0.0.2", &server.grpc, d).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer:?}");
    });
}

/// A GET of `/v1/attestation` over TLS and HTTP/1.1 from the local address `from`: the
/// answer's text (empty when the connection is closed without one).
async fn get_from(from: &str, addr: &str, d: &Path) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = std::fs::read(d.join("tls/ca.pem")).unwrap();
    let cfg = client_config(ca_verifier(&ca).unwrap(), None, &[b"http/1.1"]).unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let tcp = socket.connect(addr.parse().unwrap()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /v1/attestation HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A client that keeps every place of a port busy, sending its requests one after another on
/// kept-alive connections, loses none of them to another peer's newcomers: a connection gives
/// its place only after a second with no request, so none is closed between two requests (a
/// request it had just sent would be lost). The newcomers are closed at once instead.
#[test]
fn newcomers_cut_no_request_of_a_busy_client() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = serve_plaintext(d, &["--max_connections", "4"]);
    let addr: std::net::SocketAddr = server.rest.parse().unwrap();
    let body = format!("{{\"instances\": [[{}]]}}", vec!["0.5"; 64].join(","));
    let request = format!(
        "POST /v1/models/digits:predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, lost) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let busy: Vec<_> = (0..4)
        .map(|_| {
            let (stop, answered, lost, request) = (
                stop.clone(),
                answered.clone(),
                lost.clone(),
                request.clone(),
            );
            std::thread::spawn(move || {
                let mut c = TcpStream::connect(addr).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut buf = vec![0u8; 64 << 10];
                while !stop.load(Ordering::Relaxed) {
                    let ok = c.write_all(request.as_bytes()).is_ok()
                        && matches!(c.read(&mut buf), Ok(n) if n > 0);
                    if !ok {
                        lost.fetch_add(1, Ordering::Relaxed);
                        c = TcpStream::connect(addr).unwrap();
                        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    } else {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let rt = tokio::runtime::Runtime::new().unwrap();
    for _ in 0..30 {
        rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            if let Ok(mut c) = socket.connect(addr).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let _ = c
                    .write_all(
                        b"GET /v1/models/digits HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
                    )
                    .await;
                let mut out = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut out)).await;
            }
        });
    }
    stop.store(true, Ordering::Relaxed);
    for t in busy {
        t.join().unwrap();
    }
    assert!(
        answered.load(Ordering::Relaxed) > 100,
        "the busy client was answered"
    );
    assert_eq!(
        lost.load(Ordering::Relaxed),
        0,
        "requests of the busy client lost"
    );
}

/// The path of TF Serving's Predict over gRPC.
const PREDICT: &str = "/tensorflow.serving.PredictionService/Predict";

/// A Predict of `rows` digits at once (each pixel 1.0).
fn rows_request(rows: usize) -> teeserve_wire::tensorflow::serving::PredictRequest {
    digits_request_of(
        teeserve_wire::tensorflow::DataType::DtFloat,
        &[rows as i64, 64],
        |t| t.float_val = vec![1.0; rows * 64],
    )
}

/// Answers that a peer does not read keep their memory counted against the budget until they
/// have been sent: a client that advertises a window of 0 and keeps asking gets
/// RESOURCE_EXHAUSTED once the answers it holds (2,000 rows each) fill its peer's share of a
/// 8 MiB budget, instead of piling them up outside it; once its connection is gone, the memory
/// is given back and a new request is answered.
#[test]
fn answers_a_peer_does_not_read_hold_their_memory_of_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = serve(
        d,
        &[
            "--max_in_flight_bytes",
            "8388608",
            "--idle_timeout_seconds",
            "600",
            "--send_timeout_seconds",
            "600",
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let addr = &server.grpc;
        let (send, closed) = h2_connect(d, addr, Some(0)).await;
        let frame = grpc_frame(&rows_request(2000));
        let (mut answered, mut refusal) = (Vec::new(), None);
        for _ in 0..60 {
            let mut ready = send.clone().ready().await.unwrap();
            let (resp, mut body) = ready
                .send_request(grpc_request(addr, PREDICT), false)
                .unwrap();
            body.send_data(frame.clone(), true).unwrap();
            let resp = resp.await.unwrap();
            assert_eq!(resp.status(), 200);
            // An answer's head comes alone (its message waits for a window); a refusal comes
            // as trailers only.
            match resp.headers().get("grpc-status") {
                None => answered.push(resp.into_body()),
                Some(code) => {
                    let message = resp
                        .headers()
                        .get("grpc-message")
                        .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
                        .unwrap_or_default();
                    refusal = Some((code.to_str().unwrap().to_owned(), message));
                    break;
                }
            }
        }
        let (code, message) = refusal.unwrap_or_else(|| {
            panic!(
                "{} answers held unread, none refused: they are not counted",
                answered.len()
            )
        });
        assert_eq!(code, "8", "RESOURCE_EXHAUSTED expected: {message}");
        assert!(message.contains("--max_in_flight_bytes"), "{message}");
        assert!(
            (4..=40).contains(&answered.len()),
            "{} answers held before the refusal: {message}",
            answered.len()
        );
        drop(answered);
        drop(send);
        closed.abort();
    });
    // The connection is gone, and with it what its answers held: a new request is answered.
    let deadline = Instant::now() + MARGIN;
    loop {
        let r = predict(d, &server.grpc);
        if r.code == 0 {
            assert!(r.stdout.contains("\"outputs\""), "{}", r.stdout);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused after the connection closed: {}",
            r.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A model's outputs are bounded like its inputs: past `--max_response_tensor_bytes` (here
/// 1,000 bytes: the digits model's answer to 21 rows or more, 48 bytes a row), an answer is refused with
/// RESOURCE_EXHAUSTED / 429 naming the flag before its outputs are copied or encoded, and a
/// smaller one is answered.
#[test]
fn outputs_past_the_response_bound_are_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = serve(d, &["--max_response_tensor_bytes", "1000"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let addr = &server.grpc;
        for (rows, fits) in [(20, true), (21, false), (4000, false), (1, true)] {
            let (send, _closed) = h2_connect(d, addr, None).await;
            let mut ready = send.ready().await.unwrap();
            let (resp, mut body) = ready
                .send_request(grpc_request(addr, PREDICT), false)
                .unwrap();
            body.send_data(grpc_frame(&rows_request(rows)), true)
                .unwrap();
            let resp = resp.await.unwrap();
            let status = resp
                .headers()
                .get("grpc-status")
                .map(|v| v.to_str().unwrap().to_owned());
            let message = resp
                .headers()
                .get("grpc-message")
                .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
                .unwrap_or_default();
            if fits {
                assert_eq!(status, None, "{rows} rows: {message}");
            } else {
                assert_eq!(status.as_deref(), Some("8"), "{rows} rows: {message}");
                assert!(
                    message.contains("--max_response_tensor_bytes"),
                    "{rows} rows: {message}"
                );
            }
        }
    });
    // Over REST too.
    let rows: Vec<Vec<f32>> = vec![vec![1.0; 64]; 30];
    let body = serde_json::json!({ "instances": rows }).to_string();
    std::fs::write(d.join("rows.json"), body).unwrap();
    let r = run_in(
        d,
        &[
            "predict",
            "--server",
            &server.rest,
            "--rest",
            "--model",
            "digits",
            "--input",
            "rows.json",
            "--ca",
            "tls/ca.pem",
        ],
    );
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stderr.contains("--max_response_tensor_bytes") && r.stderr.contains("429"),
        "{}",
        r.stderr
    );
    // The server still answers.
    predict(d, &server.grpc).ok();
}

/// Each response is timed on its own: a peer that never reads an answer (a window of 0) but
/// keeps sending new requests on the same connection, each of whose answers is new, still has
/// the connection cut at the send timeout of the first, instead of keeping it (and everything
/// its answers hold) for as long as it keeps asking.
#[test]
fn new_requests_do_not_hide_an_answer_the_peer_never_reads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let send_timeout = 2;
    let server = serve(
        d,
        &[
            "--idle_timeout_seconds",
            "600",
            "--send_timeout_seconds",
            &send_timeout.to_string(),
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let addr = &server.grpc;
        let (send, closed) = h2_connect(d, addr, Some(0)).await;
        let frame = grpc_frame(&digits_request(1.0));
        let opened = Instant::now();
        let deadline = opened + Duration::from_secs(send_timeout) + MARGIN;
        let mut held = Vec::new();
        while !closed.is_finished() {
            assert!(
                Instant::now() < deadline,
                "still open {:?} after its first answer was left unread, with {} requests sent",
                opened.elapsed(),
                held.len()
            );
            let Ok(mut ready) = send.clone().ready().await else {
                break;
            };
            let Ok((resp, mut body)) = ready.send_request(grpc_request(addr, PREDICT), false)
            else {
                break;
            };
            if body.send_data(frame.clone(), true).is_err() {
                break;
            }
            held.push(resp);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        closed_by(
            "a connection whose first answer is never read",
            closed,
            deadline,
        )
        .await;
        assert!(held.len() >= 3, "only {} requests were sent", held.len());
    });
}

/// A gRPC requester's `grpc-timeout` bounds its call as the server's own deadline does: a
/// deadline already past is DEADLINE_EXCEEDED naming it before any inference, a malformed one
/// is refused naming the header, and a generous one is answered (sent over raw HTTP/2: a gRPC
/// client library would enforce the deadline itself).
#[test]
fn a_grpc_timeout_bounds_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = serve(d, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let addr = &server.grpc;
        let (send, _closed) = h2_connect(d, addr, None).await;
        let frame = grpc_frame(&digits_request(1.0));
        for (timeout, want) in [
            ("1n", Some("4")),
            ("abc", Some("3")),
            ("123456789S", Some("3")),
            ("5s", Some("3")),
            ("-5S", Some("3")),
            ("10S", None),
            ("99999999H", None),
        ] {
            let mut ready = send.clone().ready().await.unwrap();
            let mut req = grpc_request(addr, PREDICT);
            req.headers_mut()
                .insert("grpc-timeout", timeout.parse().unwrap());
            let (resp, mut body) = ready.send_request(req, false).unwrap();
            body.send_data(frame.clone(), true).unwrap();
            let resp = resp.await.unwrap();
            let status = resp
                .headers()
                .get("grpc-status")
                .map(|v| v.to_str().unwrap().to_owned());
            let message = resp
                .headers()
                .get("grpc-message")
                .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
                .unwrap_or_default();
            assert_eq!(status.as_deref(), want, "{timeout}: {message}");
            if want.is_some() {
                assert!(message.contains("grpc-timeout"), "{timeout}: {message}");
            }
        }
    });
}
