//! The forwarder carries a local client's bytes to the attested server, and answers the client
//! itself, saying why, when another server (a certificate from the same CA, another key)
//! answers in its place.

mod common;

use std::sync::Arc;

use common::tls_server;
use teeserve_client::forward::{Forwarder, Protocol, Upstream, REFUSED_HEADER};
use teeserve_client::{attested_client_config, ca_verifier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(path: &std::path::Path) -> String {
    let mut s = tokio::net::UnixStream::connect(path).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nattested";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_attested_key_is_reached() {
    let ca = teeserve_tls::make_ca("test CA").unwrap();
    let names = ["localhost".to_owned()];
    let attested = teeserve_tls::issue(&ca, "server", &names, false).unwrap();
    let swapped = teeserve_tls::issue(&ca, "server", &names, false).unwrap();

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    tls_server(listener, &attested, OK);

    let der = teeserve_tls::certs_from_pem(attested.cert_pem.as_bytes()).unwrap()[0].to_vec();
    let ca_v = ca_verifier(ca.cert_pem.as_bytes()).unwrap();
    let tls = attested_client_config(&der, Some(ca_v), None, None, &[b"http/1.1"]).unwrap();
    let mut fwd = Forwarder::start(
        &tokio::runtime::Handle::current(),
        Upstream {
            addr: addr.to_string(),
            server_name: "localhost".into(),
            tls: Arc::new(tls),
        },
        Protocol::Http1,
    )
    .unwrap();
    let dir = fwd.path().parent().unwrap().to_owned();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the socket's directory is private");
    }
    let r = get(fwd.path()).await;
    assert!(r.ends_with("attested"), "{r}");
    assert!(fwd.last_error().is_none());

    // Another server, same CA, same port: the forwarder refuses it and tells the client.
    // (On another port: what matters is which key answers; the Python tests swap on the
    // same port.)
    let swapped_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let swapped_addr = swapped_listener.local_addr().unwrap();
    tls_server(
        swapped_listener,
        &swapped,
        b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nswapped",
    );
    let tls = attested_client_config(
        &der,
        Some(ca_verifier(ca.cert_pem.as_bytes()).unwrap()),
        None,
        None,
        &[b"http/1.1"],
    )
    .unwrap();
    let to_swapped = Forwarder::start(
        &tokio::runtime::Handle::current(),
        Upstream {
            addr: swapped_addr.to_string(),
            server_name: "localhost".into(),
            tls: Arc::new(tls),
        },
        Protocol::Http1,
    )
    .unwrap();
    let r = get(to_swapped.path()).await;
    assert!(r.starts_with("HTTP/1.1 502"), "{r}");
    assert!(
        r.to_ascii_lowercase()
            .contains(&format!("{REFUSED_HEADER}: attestation")),
        "{r}"
    );
    assert!(r.contains("not the attested key"), "{r}");
    assert!(!r.contains("swapped"), "{r}");
    assert!(to_swapped
        .last_error()
        .unwrap()
        .contains("not the attested key"));

    // Nothing listening: the client is told the server could not be reached, not that it
    // was refused.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody_addr = nobody.local_addr().unwrap();
    drop(nobody);
    let tls = attested_client_config(&der, None, None, None, &[b"http/1.1"]).unwrap();
    let to_nobody = Forwarder::start(
        &tokio::runtime::Handle::current(),
        Upstream {
            addr: nobody_addr.to_string(),
            server_name: "localhost".into(),
            tls: Arc::new(tls),
        },
        Protocol::Http1,
    )
    .unwrap();
    let r = get(to_nobody.path()).await;
    assert!(r.starts_with("HTTP/1.1 502"), "{r}");
    assert!(
        r.to_ascii_lowercase()
            .contains(&format!("{REFUSED_HEADER}: unreachable")),
        "{r}"
    );
    assert!(r.contains("could not connect"), "{r}");

    // Closing removes the socket and its directory.
    fwd.close();
    assert!(fwd.is_closed());
    assert!(!dir.exists());
}
