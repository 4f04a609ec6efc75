//! The forwarder carries a local client's bytes to the attested server, and answers the client
//! itself, saying why, when another server (a certificate from the same CA, another key)
//! answers in its place. It carries only its own process's connections.

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

/// Set in a child of [`another_process_is_closed_unanswered`]: the socket that child connects to.
const PEER_SOCKET: &str = "TEESERVE_FORWARD_TEST_PEER_SOCKET";

/// Not a test of its own: the other process of [`another_process_is_closed_unanswered`] (this
/// test binary run again with [`PEER_SOCKET`] set), which prints what the forwarder answered.
#[test]
fn peer_process() {
    let Some(path) = std::env::var_os(PEER_SOCKET) else {
        return;
    };
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            match tokio::net::UnixStream::connect(&path).await {
                Ok(mut s) => {
                    let _ = s
                        .write_all(
                            b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    let mut out = String::new();
                    let _ = s.read_to_string(&mut out).await;
                    format!("answer: {out}")
                }
                Err(e) => format!("connect: {e}"),
            }
        });
    println!("PEER {answer:?}");
}

/// Runs [`peer_process`] in another process (as `uid` when given) against `path`; what it got,
/// or None when that process could not run (another user may not be able to read this binary).
fn from_another_process(path: &std::path::Path, uid: Option<u32>) -> Option<String> {
    let mut c = std::process::Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "peer_process", "--nocapture", "--test-threads=1"])
        .env(PEER_SOCKET, path);
    if let Some(uid) = uid {
        use std::os::unix::process::CommandExt;
        c.uid(uid).gid(uid);
    }
    let out = c.output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.contains("PEER ").then_some(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_is_closed_unanswered() {
    let ca = teeserve_tls::make_ca("test CA").unwrap();
    let names = ["localhost".to_owned()];
    let attested = teeserve_tls::issue(&ca, "server", &names, false).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    tls_server(listener, &attested, OK);
    let der = teeserve_tls::certs_from_pem(attested.cert_pem.as_bytes()).unwrap()[0].to_vec();
    let ca_v = ca_verifier(ca.cert_pem.as_bytes()).unwrap();
    let tls = attested_client_config(&der, Some(ca_v), None, None, &[b"http/1.1"]).unwrap();
    let fwd = Forwarder::start(
        &tokio::runtime::Handle::current(),
        Upstream {
            addr: addr.to_string(),
            server_name: "localhost".into(),
            tls: Arc::new(tls),
        },
        Protocol::Http1,
    )
    .unwrap();
    // This process is carried.
    assert!(get(fwd.path()).await.ends_with("attested"));
    // Another process of the same user reaches the socket but is closed with no answer.
    let path = fwd.path().to_owned();
    let other = tokio::task::spawn_blocking(move || from_another_process(&path, None))
        .await
        .unwrap()
        .expect("the peer process runs");
    assert!(other.contains("PEER \"answer: \""), "{other}");
    // Another user, where the directory's mode would let it through (as root, widen it): the
    // same. Without root this is the file system's part, which the first test checks.
    let dir = fwd.path().parent().unwrap().to_owned();
    let root = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&dir).unwrap().uid() == 0
    };
    if root {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(fwd.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let path = fwd.path().to_owned();
        match tokio::task::spawn_blocking(move || from_another_process(&path, Some(65534)))
            .await
            .unwrap()
        {
            Some(nobody) => assert!(nobody.contains("PEER \"answer: \""), "{nobody}"),
            None => eprintln!("user 65534 cannot run this test binary: that case is not run"),
        }
    }
    // And this process still is.
    assert!(get(fwd.path()).await.ends_with("attested"));
}
