//! The requester's attestation check against the host's attacks: a saved attestation document
//! replayed by a plain HTTPS server holding a TLS key the host gave the server, a server that
//! keeps its attestation to itself when its key is a host file, and model digests in the
//! requester's policy.
mod harness;
use harness::*;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use teeserve_client::{ca_verifier, client_config, RestClient};

/// A simulated platform, a CA with a server certificate and key (the key is a host file), in
/// `d`.
fn setup(d: &Path) {
    run_in(d, &["sim", "init", "--dir", "sim"]).ok();
    run_in(d, &["tls", "init", "--dir", "tls"]).ok();
}

/// `teeserve serve` of the bundled digits model (plaintext, no key) on the simulated platform
/// with the host's TLS key; returns once it listens.
fn serve(d: &Path, extra: &[&str]) -> Serve {
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
            "--tls-cert",
            "tls/server.pem",
            "--tls-key",
            "tls/server.key",
            "--attestation-collateral",
            "sim/collateral.json",
        ][..],
        extra,
    ]
    .concat();
    listen(|| serve_command(d, &args), None).unwrap()
}

/// GET over TLS verified by the test CA: status and body.
fn get(d: &Path, addr: &str, path: &str) -> (u16, String) {
    let ca = std::fs::read(d.join("tls/ca.pem")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = client_config(ca_verifier(&ca).unwrap(), None, &[b"http/1.1"]).unwrap();
        let mut c = RestClient::connect(addr, Some(Arc::new(cfg)), "127.0.0.1")
            .await
            .unwrap();
        let (status, body) = c
            .request(hyper::Method::GET, path, Vec::new())
            .await
            .unwrap();
        (status, String::from_utf8(body).unwrap())
    })
}

fn predict(d: &Path, addr: &str, policy: &str) -> Run {
    std::fs::write(d.join("policy.toml"), policy).unwrap();
    let sample = repo().join("testdata/digits/sample.json");
    run_in(
        d,
        &[
            "predict",
            "--server",
            addr,
            "--rest",
            "--model",
            "digits",
            "--input",
            s(&sample),
            "--ca",
            "tls/ca.pem",
            "--attest",
            "policy.toml",
            "--root",
            "sim/root.pem",
        ],
    )
}

fn base_policy() -> String {
    let me = run(&["attest", "measure"]).ok().stdout.trim().to_owned();
    format!("mrenclave = [\"{me}\"]\nallow_simulated = true\n")
}

/// A plain HTTPS server holding the host's copy of the TLS key: it answers /v1/attestation
/// with a saved document and the metadata with the saved answer, and records every request.
struct Replayer {
    addr: String,
    requests: Arc<Mutex<Vec<String>>>,
}

fn replayer(d: &Path, doc: String, metadata: String) -> Replayer {
    let certs =
        teeserve_tls::certs_from_pem(&std::fs::read(d.join("tls/server.pem")).unwrap()).unwrap();
    let key =
        teeserve_tls::key_from_pem(&std::fs::read(d.join("tls/server.key")).unwrap()).unwrap();
    let cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(teeserve_tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for tcp in l.incoming().flatten() {
            let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            // One keep-alive connection at a time, as the requester makes them.
            while let Some((head, body)) = read_request(&mut tls) {
                let line = head.lines().next().unwrap_or_default().to_owned();
                seen.lock()
                    .unwrap()
                    .push(format!("{line}\n{}", String::from_utf8_lossy(&body)));
                let answer = if line.contains("/v1/attestation") {
                    doc.clone()
                } else if line.contains("/metadata") {
                    metadata.clone()
                } else {
                    "{\"outputs\": {\"class\": [7]}}".to_owned()
                };
                let r = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                if tls.write_all(r.as_bytes()).is_err() {
                    break;
                }
            }
        }
    });
    Replayer { addr, requests }
}

fn read_request(r: &mut impl Read) -> Option<(String, Vec<u8>)> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if r.read(&mut b).ok()? == 0 {
            return None;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some((head, body))
}

#[test]
fn a_saved_document_replayed_with_the_host_tls_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let policy = base_policy();
    let host_allowed = format!("{policy}tls_key_origin = [\"host\"]\n");
    // The owner chose to publish attestation for a host key; the document says so.
    let server = serve(d, &["--attest-host-tls-key"]);
    let (status, doc) = get(d, &server.rest, "/v1/attestation");
    assert_eq!(status, 200, "{doc}");
    let parsed: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(parsed["key_origin"], "host", "{doc}");
    let (_, with_nonce) = get(d, &server.rest, "/v1/attestation?nonce=0102");
    let (_, metadata) = get(d, &server.rest, "/v1/models/digits/metadata");
    // The genuine server passes a policy that accepts a host key, with a fresh nonce.
    let r = predict(d, &server.rest, &host_allowed).ok();
    assert!(r.stdout.contains("\"answered_by\""), "{}", r.stdout);
    // The host stops the server and answers in its place with the key and saved documents.
    drop(server);
    for saved in [doc, with_nonce] {
        let fake = replayer(d, saved, metadata.clone());
        // The default policy refuses a host key outright.
        let r = predict(d, &fake.addr, &policy).fails(1);
        assert!(
            r.stderr.contains("rule tls_key_origin") && r.stderr.contains("origin is host"),
            "{}",
            r.stderr
        );
        // A policy that accepts host keys still wants its own nonce quoted: the standing
        // document says the key is the host's, so the requester asks again with a nonce.
        let r = predict(d, &fake.addr, &host_allowed).fails(1);
        assert!(r.stderr.contains("nonce"), "{}", r.stderr);
        let requests = fake.requests.lock().unwrap().clone();
        assert!(
            requests
                .iter()
                .all(|q| q.starts_with("GET /v1/attestation")),
            "the replayer received more than attestation requests: {requests:?}"
        );
        assert_eq!(
            requests
                .iter()
                .filter(|q| q.starts_with("GET /v1/attestation?nonce="))
                .count(),
            1,
            "{requests:?}"
        );
        assert_eq!(requests.len(), 3, "{requests:?}");
    }
}

#[test]
fn a_host_tls_key_gets_no_attestation_unless_the_flag_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let server = serve(d, &[]);
    let (status, body) = get(d, &server.rest, "/v1/attestation");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("--attest_host_tls_key"), "{body}");
    let r = predict(d, &server.rest, &base_policy()).fails(1);
    assert!(
        r.stderr.contains("publishes no attestation"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_requester_policy_can_require_the_served_model_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let server = serve(d, &["--attest-host-tls-key"]);
    let model = std::fs::read(repo().join("models/digits/1/model.onnx")).unwrap();
    let digest = hex::encode(ring_sha256(&model));
    let policy = format!("{}tls_key_origin = [\"host\"]\n", base_policy());
    let r = predict(
        d,
        &server.rest,
        &format!("{policy}models = {{ digits = [\"{}\"] }}\n", "0".repeat(64)),
    )
    .fails(1);
    assert!(
        r.stderr.contains("rule models") && r.stderr.contains(&digest),
        "{}",
        r.stderr
    );
    let r = predict(
        d,
        &server.rest,
        &format!("{policy}models = {{ digits = [\"{digest}\"] }}\n"),
    )
    .ok();
    let out = r.json();
    assert_eq!(out["answered_by"]["model"], "digits", "{}", r.stdout);
    assert_eq!(out["answered_by"]["version"], 1, "{}", r.stdout);
    assert_eq!(out["answered_by"]["sha256"], digest, "{}", r.stdout);
    assert_eq!(out["attestation"]["tls_key_origin"], "host", "{}", r.stdout);
    // The document also states, bound in the quote, what the model's code may do: the
    // operator policy it was loaded under, and whether its requests share batches.
    let (status, body) = get(d, &server.rest, "/v1/attestation");
    assert_eq!(status, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["models"][0]["operators"], "onnx", "{body}");
    assert_eq!(doc["models"][0]["shared_batches"], false, "{body}");
    assert!(
        doc["binding"].as_str().unwrap().contains("operator policy"),
        "{body}"
    );
    // A requester that refuses shared batches still admits this server.
    predict(
        d,
        &server.rest,
        &format!("{policy}allow_shared_batches = false\n"),
    )
    .ok();
    // A nonce too long or not hex is refused with the reason.
    let (status, body) = get(
        d,
        &server.rest,
        &format!("/v1/attestation?nonce={}", "00".repeat(65)),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = get(d, &server.rest, "/v1/attestation?nonce=zz");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not hex"), "{body}");
}

fn ring_sha256(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .to_vec()
}

/// A policy file that does not parse is named by the flag that gave it (`--attest`), before
/// any connection is made.
#[test]
fn a_bad_attest_policy_is_named_by_its_flag() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), "mrenclave = [\n").unwrap();
    let sample = repo().join("testdata/digits/sample.json");
    let r = run_in(
        dir.path(),
        &[
            "predict",
            "--server",
            "127.0.0.1:1",
            "--model",
            "digits",
            "--input",
            s(&sample),
            "--attest",
            "bad.toml",
        ],
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("--attest bad.toml"), "{}", r.stderr);
    assert!(!r.stderr.contains("--policy"), "{}", r.stderr);
}
