//! `teeserve serve` against peers that ask for answers they do not read, or whose answers
//! outgrow their requests: what an answer holds is bounded (`--max_response_tensor_bytes`) and
//! counted in the in-flight memory budget until it is sent; each response, and each write, is
//! timed on its own for the send timeout; and a gRPC requester's own deadline bounds its call.
mod harness;
mod peers;
use harness::*;
use peers::*;

use std::time::{Duration, Instant};

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
            match grpc_status(&resp) {
                (None, _) => answered.push(resp.into_body()),
                (Some(code), message) => {
                    refusal = Some((code, message));
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
            let (status, message) = grpc_status(&resp);
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
            let (status, message) = grpc_status(&resp);
            assert_eq!(status.as_deref(), want, "{timeout}: {message}");
            if want.is_some() {
                assert!(message.contains("grpc-timeout"), "{timeout}: {message}");
            }
        }
    });
}

/// A peer that pipelines small HTTP/1.1 requests and never reads their answers fills the
/// connection's buffers; once a write has waited that long for it to read, the connection is cut
/// at the send timeout, not kept until the idle timeout.
#[test]
fn pipelined_answers_never_read_cut_the_connection_at_the_send_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let send_timeout = 2;
    let server = serve_plaintext(
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
        let mut tcp = tokio::net::TcpStream::connect(&server.rest).await.unwrap();
        let one = b"GET /v1/models/digits HTTP/1.1\r\nhost: x\r\n\r\n".repeat(256);
        // Write until the writes wait: the server has stopped reading, its answers unread.
        let mut sent = 0usize;
        while tokio::time::timeout(Duration::from_secs(1), tcp.write_all(&one))
            .await
            .is_ok_and(|r| r.is_ok())
        {
            sent += 256;
            assert!(sent < 2_000_000, "the server never stopped reading");
        }
        let blocked = Instant::now();
        tokio::time::sleep(Duration::from_secs(send_timeout) + MARGIN).await;
        // Cut: what was buffered reads out and then the connection ends. Kept: reading lets the
        // server go on answering, and the connection then stays open.
        let mut buf = vec![0u8; 1 << 16];
        let ended = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "still open {:?} after its writes began to wait ({sent} requests sent)",
            blocked.elapsed()
        );
    });
}
