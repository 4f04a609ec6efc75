//! A server is not trusted before its attestation is checked: what it answers at
//! `/v1/attestation` is bounded as it arrives.

mod common;

use common::tls_server;
use teeserve_client::{ca_verifier, fetch_attestation, RequesterError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_attestation_answer_is_refused_before_it_is_held() {
    let ca = teeserve_tls::make_ca("test CA").unwrap();
    let cert = teeserve_tls::issue(&ca, "server", &["localhost".to_owned()], false).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Declares 2 GiB and sends 5 MiB of it: the requester must stop at its 4 MiB bound.
    let mut reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2147483648\r\n\r\n".to_vec();
    reply.resize(reply.len() + (5 << 20), b'x');
    tls_server(listener, &cert, reply.leak());

    let verifier = ca_verifier(ca.cert_pem.as_bytes()).unwrap();
    let err = fetch_attestation(&addr, verifier, "localhost", Some(&[7u8; 32]))
        .await
        .unwrap_err();
    let RequesterError::Attestation(message) = &err else {
        panic!("not an attestation error: {err:?}");
    };
    assert!(
        message.contains("more than 4194304 bytes"),
        "the refusal does not name the bound: {message}"
    );
}
