//! `teeserve predict --attest` while other peers flood `/v1/attestation?nonce=` with requests
//! for fresh quotes. Every flooder binds its own loopback address (127.0.0.2, .3, ...), so the
//! server sees six peers besides the requester (127.0.0.1).
mod harness;
use harness::*;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Flooding peers, and connections each.
const PEERS: u8 = 6;
const CONNECTIONS_PER_PEER: usize = 2;

fn setup(d: &Path) {
    run_in(d, &["sim", "init", "--dir", "sim"]).ok();
    run_in(d, &["tls", "init", "--dir", "tls"]).ok();
    let me = run(&["attest", "measure"]).ok().stdout.trim().to_owned();
    std::fs::write(
        d.join("policy.toml"),
        format!("mrenclave = [\"{me}\"]\nallow_simulated = true\ntls_key_origin = [\"host\"]\n"),
    )
    .unwrap();
    std::fs::write(
        d.join("tee-policy.toml"),
        format!("mrenclave = [\"{me}\"]\nallow_simulated = true\n"),
    )
    .unwrap();
}

fn serve(d: &Path, tls: &[&str]) -> Serve {
    let models = repo().join("models/digits");
    let args = [
        &[
            "--platform",
            "simulated",
            "--sim-dir",
            "sim",
            "--model_name",
            "digits",
            "--model_base_path",
            s(&models),
            "--attestation-collateral",
            "sim/collateral.json",
        ][..],
        tls,
    ]
    .concat();
    listen(|| serve_command(d, &args), None).unwrap()
}

/// Requests for fresh quotes from [`PEERS`] addresses until dropped; counts the answers.
struct Flood {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    busy: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn flood(addr: &str) -> Flood {
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let busy = Arc::new(AtomicUsize::new(0));
    let (s, a, b) = (stop.clone(), answered.clone(), busy.clone());
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let mut tasks = Vec::new();
            for peer in 0..PEERS {
                for _ in 0..CONNECTIONS_PER_PEER {
                    let from = std::net::Ipv4Addr::new(127, 0, 0, 2 + peer);
                    tasks.push(tokio::spawn(flooder(
                        from,
                        addr,
                        s.clone(),
                        a.clone(),
                        b.clone(),
                    )));
                }
            }
            for t in tasks {
                let _ = t.await;
            }
        });
    });
    Flood {
        stop,
        answered,
        busy,
        thread: Some(thread),
    }
}

/// One flooding connection from `from`: GET /v1/attestation?nonce=... again and again, over
/// TLS that accepts any certificate, reconnecting whenever the connection ends.
async fn flooder(
    from: std::net::Ipv4Addr,
    to: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    busy: Arc<AtomicUsize>,
) {
    let cfg = teeserve_client::client_config(
        Arc::new(teeserve_attest::collateral::pccs::AnyServerCert::default()),
        None,
        &[b"http/1.1"],
    )
    .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((from, 0).into()).unwrap();
        let Ok(tcp) = socket.connect(to).await else {
            continue;
        };
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let Ok(mut tls) = connector.connect(name, tcp).await else {
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let req = format!(
                "GET /v1/attestation?nonce={:016x}{:08x} HTTP/1.1\r\nhost: x\r\n\r\n",
                n,
                u32::from(from)
            );
            if tls.write_all(req.as_bytes()).await.is_err() {
                break;
            }
            let Some(status) = read_answer(&mut tls).await else {
                break;
            };
            match status {
                200 => answered.fetch_add(1, Ordering::Relaxed),
                429 => busy.fetch_add(1, Ordering::Relaxed),
                other => panic!("the flood got HTTP {other}"),
            };
        }
    }
}

/// Reads one HTTP/1.1 answer with a content-length; its status.
async fn read_answer(r: &mut (impl AsyncReadExt + Unpin)) -> Option<u16> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if r.read(&mut b).await.ok()? == 0 {
            return None;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.ok()?;
    Some(status)
}

fn predict(d: &Path, addr: &str, policy: &str, extra: &[&str]) -> Run {
    let sample = repo().join("testdata/digits/sample.json");
    let args = [
        &[
            "predict",
            "--server",
            addr,
            "--rest",
            "--model",
            "digits",
            "--input",
            s(&sample),
            "--attest",
            policy,
            "--root",
            "sim/root.pem",
        ][..],
        extra,
    ]
    .concat();
    run_in(d, &args)
}

/// Ten `predict --attest` runs in a row during the flood; how many succeeded, and the last
/// failure.
fn ten_predicts(d: &Path, addr: &str, policy: &str, extra: &[&str]) -> (usize, String) {
    let mut ok = 0;
    let mut last_failure = String::new();
    for _ in 0..10 {
        let r = predict(d, addr, policy, extra);
        if r.code == 0 {
            ok += 1;
        } else {
            last_failure = r.stderr;
        }
    }
    (ok, last_failure)
}

#[test]
fn a_requester_that_needs_a_fresh_quote_gets_one_during_a_flood_from_other_peers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    // A host-given key: the requester must have a quote over its own nonce.
    let server = serve(
        d,
        &[
            "--tls-cert",
            "tls/server.pem",
            "--tls-key",
            "tls/server.key",
            "--attest-host-tls-key",
        ],
    );
    let f = flood(&server.rest);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let (ok, failure) = ten_predicts(d, &server.rest, "policy.toml", &["--ca", "tls/ca.pem"]);
    let (answered, busy) = (
        f.answered.load(Ordering::Relaxed),
        f.busy.load(Ordering::Relaxed),
    );
    drop(f);
    assert_eq!(ok, 10, "{ok} of 10 succeeded; the last failure: {failure}");
    assert!(
        answered >= 20,
        "the flood was not one: {answered} quotes made, {busy} answered 429"
    );
}

#[test]
fn a_key_made_in_the_tee_needs_no_fresh_quote_and_is_admitted_during_a_flood() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let server = serve(d, &["--tls-ra"]);
    let f = flood(&server.rest);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let (ok, failure) = ten_predicts(d, &server.rest, "tee-policy.toml", &[]);
    drop(f);
    assert_eq!(ok, 10, "{ok} of 10 succeeded; the last failure: {failure}");
}
