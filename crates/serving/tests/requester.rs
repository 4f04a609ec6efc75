//! The requester against a network attacker between it and an attested server: a loopback
//! proxy passes the attestation fetch and the first data connection to the real server, closes
//! that connection once the model's metadata has been answered, and answers the gRPC channel's
//! automatic reconnect itself with a self-signed certificate, recording what arrives.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use teeserve_attest::collateral::pccs::AnyServerCert;
use teeserve_attest::platform::{Platform, SimulatedPlatform};
use teeserve_attest::{Collateral, CollateralSource, Policy, TrustAnchor, Verifier};
use teeserve_client::requester::{Connection, RequestTarget};
use teeserve_client::{attested_client_config, check_attestation, fetch_attestation, fresh_nonce};
use teeserve_ratls::Appraiser;
use teeserve_serving::{ServeOptions, Server, TlsOptions};
use teeserve_tensor::{self as tensor, Tensor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A server of the bundled digits model on gRPC only, with an RA-TLS certificate made on a
/// simulated platform in `sim` (its key never leaves the process).
async fn start(sim: &Path) -> Server {
    let platform: Arc<dyn Platform> = Arc::new(SimulatedPlatform::open(sim).unwrap());
    for _ in 0..5 {
        let o = ServeOptions {
            port: teeserve_serving::free_loopback_port().unwrap(),
            rest_api_port: 0,
            grpc_bind: "127.0.0.1".into(),
            model_name: "digits".into(),
            model_base_path: Some(repo().join("models/digits")),
            tls: TlsOptions {
                ra_tls: true,
                ..Default::default()
            },
            attestation_collateral: Some(sim.join("collateral.json")),
            ..Default::default()
        };
        match Server::start(o, Some(platform.clone())).await {
            Err(teeserve_serving::ServeError::Bind { .. }) => continue,
            r => return r.unwrap(),
        }
    }
    panic!("no free port in 5 tries");
}

/// What the impostor saw on the connections it answered.
#[derive(Debug, Default)]
struct Seen {
    /// TLS handshakes the client completed with the impostor.
    handshakes: usize,
    /// Application bytes received.
    bytes: Vec<u8>,
}

struct Proxy {
    addr: String,
    /// Closes the first data connection; answered once the client has closed its end too.
    close_data: mpsc::Sender<oneshot::Sender<()>>,
    seen: Arc<Mutex<Seen>>,
}

async fn relay(mut client: TcpStream, upstream: String) {
    if let Ok(mut server) = TcpStream::connect(&upstream).await {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
}

/// Relays until told to close, then closes towards both sides and waits until the client has
/// noticed (its end closes), so that its next request needs a new connection.
async fn relay_until_closed(
    mut client: TcpStream,
    upstream: String,
    mut close: mpsc::Receiver<oneshot::Sender<()>>,
) {
    let mut server = TcpStream::connect(&upstream).await.unwrap();
    let done = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => None,
        d = close.recv() => d,
    };
    drop(server);
    let _ = client.shutdown().await;
    let mut buf = [0u8; 4096];
    while let Ok(n) = client.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
    if let Some(d) = done {
        let _ = d.send(());
    }
}

/// Answers with a self-signed certificate and records whatever the client sends, until the
/// client stops or `needle` (the input) has arrived.
async fn impostor(tcp: TcpStream, seen: Arc<Mutex<Seen>>, needle: Vec<u8>) {
    let ca = teeserve_tls::make_ca("127.0.0.1").unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(teeserve_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            teeserve_tls::certs_from_pem(ca.cert_pem.as_bytes()).unwrap(),
            teeserve_tls::key_from_pem(ca.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let mut cfg = cfg;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let Ok(mut tls) = tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
        .accept(tcp)
        .await
    else {
        return;
    };
    seen.lock().unwrap().handshakes += 1;
    // An empty HTTP/2 SETTINGS frame, so the client's HTTP/2 layer goes ahead.
    let _ = tls.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
    let _ = tls.flush().await;
    let mut buf = [0u8; 16384];
    while let Ok(n) = tls.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let mut s = seen.lock().unwrap();
        s.bytes.extend_from_slice(&buf[..n]);
        if s.bytes.windows(needle.len()).any(|w| w == needle) {
            // Dropping the connection fails the request instead of leaving it waiting.
            break;
        }
    }
}

async fn proxy(upstream: String, needle: Vec<u8>) -> Proxy {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (close_data, close_rx) = mpsc::channel(1);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    tokio::spawn(async move {
        let mut close_rx = Some(close_rx);
        for n in 0.. {
            let Ok((tcp, _)) = l.accept().await else {
                return;
            };
            match n {
                0 => drop(tokio::spawn(relay(tcp, upstream.clone()))),
                1 => drop(tokio::spawn(relay_until_closed(
                    tcp,
                    upstream.clone(),
                    close_rx.take().unwrap(),
                ))),
                _ => drop(tokio::spawn(impostor(tcp, s.clone(), needle.clone()))),
            }
        }
    });
    Proxy {
        addr,
        close_data,
        seen,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_to_an_impostor_receives_none_of_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    teeserve_attest::sim::init(&sim, &Default::default()).unwrap();
    let server = start(&sim).await;
    let pixels = tensor::from_npy(
        &std::fs::read(repo().join("testdata/digits/heldout-pixels.npy")).unwrap(),
    )
    .unwrap();
    let input: Tensor = pixels.slice_rows(0, 1);
    let proxy = proxy(server.grpc_addr.unwrap().to_string(), input.to_le_bytes()).await;

    // The requester attests the server through the proxy (connection 1)...
    let nonce = fresh_nonce().unwrap();
    let fetched = fetch_attestation(
        &proxy.addr,
        Arc::new(AnyServerCert::default()),
        "127.0.0.1",
        Some(&nonce),
    )
    .await
    .unwrap();
    let verifier = Verifier::new(
        TrustAnchor::from_pem(&std::fs::read(sim.join("root.pem")).unwrap()).unwrap(),
    );
    let coll = Collateral::from_json(&std::fs::read(sim.join("collateral.json")).unwrap()).unwrap();
    let appraiser = Arc::new(Appraiser::new(
        verifier.clone(),
        CollateralSource::bundle(&verifier, &coll).unwrap(),
    ));
    let me = hex::encode(teeserve_attest::sim::measure_self().unwrap());
    let policy =
        Policy::from_toml(&format!("mrenclave = [\"{me}\"]\nallow_simulated = true\n")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    check_attestation(&appraiser, &policy, &fetched, Some(&nonce), now).unwrap();

    // ...opens its data connection (connection 2, still the real server) and reads the
    // signature, as `predict` does before it sends the input.
    let cfg = attested_client_config(
        &fetched.cert,
        None,
        Some((appraiser, policy)),
        None,
        &[b"h2"],
    )
    .unwrap();
    let mut conn = Connection::open(&proxy.addr, Some(Arc::new(cfg)), "127.0.0.1", false)
        .await
        .unwrap();
    let target = RequestTarget {
        model: "digits".into(),
        ..Default::default()
    };
    let sig = conn.signature(&target).await.unwrap();
    assert_eq!(sig.inputs.len(), 1);

    // The attacker closes that connection; the channel reconnects by itself for the Predict.
    let (tx, rx) = oneshot::channel();
    proxy.close_data.send(tx).await.unwrap();
    rx.await.unwrap();
    let answer = tokio::time::timeout(
        Duration::from_secs(120),
        conn.predict(&target, &[(sig.inputs[0].name.clone(), input)]),
    )
    .await
    .expect("the requester waited for an answer that never comes");
    let (handshakes, received) = {
        let seen = proxy.seen.lock().unwrap();
        (seen.handshakes, seen.bytes.len())
    };
    assert!(
        answer.is_err() && handshakes == 0 && received == 0,
        "the impostor completed {handshakes} handshakes and received {received} bytes (answer: {answer:?})"
    );
    server.shutdown().await;
}

/// A server that answers a Predict with one gRPC frame declaring 2 GiB: the requester refuses it
/// from the frame's header, naming the bound, instead of waiting to hold it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_answer_declaring_gigabytes_is_refused_from_its_header() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        let answer = hyper::service::service_fn(|_| async {
            // Compressed flag 0, length 0x80000000, then three bytes of the "message".
            let frame = bytes::Bytes::from_static(&[0, 0x80, 0, 0, 0, 1, 2, 3]);
            hyper::Response::builder()
                .header("content-type", "application/grpc")
                .body(http_body_util::Full::new(frame))
        });
        let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(hyper_util::rt::TokioIo::new(tcp), answer)
            .await;
    });
    let mut c = Connection::open(&addr, None, "127.0.0.1", false)
        .await
        .unwrap();
    let target = RequestTarget {
        model: "digits".into(),
        ..Default::default()
    };
    let x = Tensor::new(vec![1], tensor::Data::F32(vec![0.5])).unwrap();
    let e = c
        .predict_proto(&target, &[("x".into(), x)])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("2147483648") && e.contains("1073741824"),
        "the refusal does not name the declared length and the bound: {e}"
    );
}
