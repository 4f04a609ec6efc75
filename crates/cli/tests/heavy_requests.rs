//! `teeserve serve` with one peer's request that takes seconds to read: another peer's small
//! request is answered meanwhile, because a large request's decoding (and a large answer's
//! encoding) is moved aside from the I/O threads (`teeserve_wire::heavy`).
mod harness;
mod peers;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A REST request over plain HTTP/1.1 to `addr`; the whole answer.
fn post(addr: &str, path: &str, body: &[u8]) -> String {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(
        c,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    c.write_all(body).unwrap();
    let mut r = String::new();
    c.read_to_string(&mut r).unwrap();
    r
}

/// The server runs on one I/O thread (TOKIO_WORKER_THREADS=1), so that a request read on it
/// would hold up every other. One peer sends 52 MB of JSON, whose reading takes seconds in this
/// (unoptimised) build and ends in a refusal of its shape; once it has been sent, another
/// peer's one-row request must be answered before that refusal arrives.
#[test]
fn a_large_request_being_read_does_not_hold_up_a_strangers_small_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = peers::serve_digits_with(d, &["--insecure"], |c| {
        c.env("TOKIO_WORKER_THREADS", "1");
    });
    let row = |n: usize| format!("[{}]", vec!["0.5"; n].join(","));
    let wide = row(65);
    let heavy = format!(
        "{{\"instances\": [{}]}}",
        vec![wide.as_str(); 200_000].join(",")
    );
    let path = "/v1/models/digits:predict";
    let refused = Arc::new(AtomicBool::new(false));
    let heavy_peer = {
        let (addr, refused) = (server.rest.clone(), refused.clone());
        std::thread::spawn(move || {
            let r = post(&addr, path, heavy.as_bytes());
            refused.store(true, Ordering::SeqCst);
            r
        })
    };
    // Its body is sent (and read: a loopback socket's buffers hold far less than 52 MB) and
    // its reading under way.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !refused.load(Ordering::SeqCst),
        "the large request was read too soon to show anything"
    );
    let small = format!("{{\"instances\": [{}]}}", row(64));
    let answer = post(&server.rest, path, small.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        !refused.load(Ordering::SeqCst),
        "the small request was answered only after the large one had been read"
    );
    let refusal = heavy_peer.join().unwrap();
    assert!(
        refusal.starts_with("HTTP/1.1 400") && refusal.contains("[200000, 65]"),
        "{refusal}"
    );
}
