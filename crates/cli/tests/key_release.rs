//! How a server got its keys, checked by requesters: a server provisioned by a broker that
//! signs its log publishes each grant's proof in its attestation document; a requester whose
//! policy names the log's key (`log_key`) and the broker's configuration (`policy_sha256`)
//! admits it, and refuses a server with no grant, a grant under a configuration from before a
//! change, or a grant replayed from another server by a broker the host runs. `predict
//! --attest` and `teeserve-load` both.
mod harness;
use harness::*;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use teeserve_client::{ca_verifier, client_config, RestClient};

fn kbs_toml(d: &Path, comment: &str) {
    let me = run(&["attest", "measure"]).ok().stdout.trim().to_owned();
    std::fs::write(
        d.join("kbs.toml"),
        format!(
            "# {comment}\nlisten = \"127.0.0.1:0\"\ntls_cert = \"tls/kbs.pem\"\ntls_key = \"tls/kbs.key\"\naudit_log = \"audit.jsonl\"\n\
             [log]\nsigning_key = \"log.key\"\n\
             [collateral]\nbundle = \"sim/collateral.json\"\nroot = \"sim/root.pem\"\n\
             [secrets.model-key]\nfile = \"model.key\"\n[secrets.tls-key]\nfile = \"tls/server.key\"\n\
             [[policies]]\nname = \"tfserving\"\nmrenclave = [\"{me}\"]\nallow_simulated = true\nsecrets = [\"model-key\", \"tls-key\"]\n"
        ),
    )
    .unwrap();
}

/// The owner's files, and the broker started; returns it and its address.
fn owner(d: &Path) -> (Kill, String) {
    run_in(d, &["sim", "init", "--dir", "sim"]).ok();
    run_in(
        d,
        &[
            "tls", "init", "--dir", "tls", "--name", "kbs", "--name", "server",
        ],
    )
    .ok();
    run_in(d, &["keygen", "--out", "model.key"]).ok();
    let models = repo().join("models/digits");
    run_in(
        d,
        &["seal", "--key", "model.key", s(&models), "sealed/digits"],
    )
    .ok();
    run_in(
        d,
        &[
            "kbs",
            "log",
            "keygen",
            "--out",
            "log.key",
            "--origin",
            "kbs.test/owner",
        ],
    )
    .ok();
    kbs_toml(d, "v1");
    let (child, addr) = start_kbs(d);
    (child, addr)
}

/// `teeserve serve` of the sealed digits model with its keys from the broker at `kbs`.
fn serve(d: &Path, kbs: &str) -> Serve {
    let args = [
        "--platform",
        "simulated",
        "--sim_dir",
        "sim",
        "--kbs",
        kbs,
        "--kbs_ca",
        "tls/ca.pem",
        "--kbs_tls_key_secret",
        "tls-key",
        "--model_name",
        "digits",
        "--model_base_path",
        "sealed/digits",
        "--tls_cert",
        "tls/server.pem",
        "--attestation_collateral",
        "sim/collateral.json",
    ];
    listen(|| serve_command(d, &args), None).unwrap()
}

fn sha256_file(p: &Path) -> String {
    teeserve_ratls::tlog::sha256_hex(&std::fs::read(p).unwrap())
}

/// A requester policy for this binary that names the log's key and the configurations given.
fn policy(d: &Path, name: &str, hashes: &[String]) {
    let me = run(&["attest", "measure"]).ok().stdout.trim().to_owned();
    let key = std::fs::read_to_string(d.join("log.key.pub")).unwrap();
    let list: Vec<String> = hashes.iter().map(|h| format!("\"{h}\"")).collect();
    std::fs::write(
        d.join(name),
        format!(
            "mrenclave = [\"{me}\"]\nallow_simulated = true\nlog_key = \"{}\"\npolicy_sha256 = [{}]\n",
            key.trim(),
            list.join(", ")
        ),
    )
    .unwrap();
}

fn predict(d: &Path, rest: &str, policy: &str) -> Run {
    let sample = repo().join("testdata/digits/sample.json");
    run_in(
        d,
        &[
            "predict",
            "--server",
            rest,
            "--rest",
            "--model",
            "digits",
            "--input",
            s(&sample),
            "--ca",
            "tls/ca.pem",
            "--attest",
            policy,
            "--root",
            "sim/root.pem",
        ],
    )
}

/// GET over TLS verified by the test CA: the body.
fn get(d: &Path, addr: &str, path: &str) -> String {
    let ca = std::fs::read(d.join("tls/ca.pem")).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let cfg = client_config(ca_verifier(&ca).unwrap(), None, &[b"http/1.1"]).unwrap();
        let mut c = RestClient::connect(addr, Some(Arc::new(cfg)), "127.0.0.1")
            .await
            .unwrap();
        let (status, body) = c
            .request(hyper::Method::GET, path, Vec::new())
            .await
            .unwrap();
        assert_eq!(status, 200);
        String::from_utf8(body).unwrap()
    })
}

/// A broker the host runs with the owner's CA-signed certificate stolen (tls/kbs.*) and the
/// model's keys: it hands them out with the log proof of a grant it copied from another
/// server's attestation document.
fn rogue_broker(d: &Path, proof: String) -> String {
    let certs =
        teeserve_tls::certs_from_pem(&std::fs::read(d.join("tls/kbs.pem")).unwrap()).unwrap();
    let key = teeserve_tls::key_from_pem(&std::fs::read(d.join("tls/kbs.key")).unwrap()).unwrap();
    let cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(teeserve_tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let secrets = Arc::new([
        ("model-key", std::fs::read(d.join("model.key")).unwrap()),
        ("tls-key", std::fs::read(d.join("tls/server.key")).unwrap()),
    ]);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let header = teeserve_ratls::key_release::encode_proof_header(&proof);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            loop {
                let Ok((tcp, _)) = l.accept().await else {
                    return;
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(cfg.clone());
                let (secrets, header) = (secrets.clone(), header.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let name = req
                                .uri()
                                .path()
                                .trim_start_matches("/v1/secrets/")
                                .to_owned();
                            let found = secrets
                                .iter()
                                .find(|(n, _)| *n == name)
                                .map(|(_, v)| v.clone());
                            let header = header.clone();
                            async move {
                                let mut r = hyper::Response::new(http_body_util::Full::new(
                                    bytes::Bytes::from(found.unwrap_or_default()),
                                ));
                                r.headers_mut()
                                    .insert("teeserve-log-proof", header.parse().unwrap());
                                Ok::<_, std::convert::Infallible>(r)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
    });
    addr
}

#[test]
fn requesters_check_how_the_server_got_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (kbs, kbs_addr) = owner(d);
    let v1 = sha256_file(&d.join("kbs.toml"));
    let a = serve(d, &kbs_addr);

    // The document carries the grants (model key, TLS key) and their proofs.
    let doc: serde_json::Value = serde_json::from_str(&get(d, &a.rest, "/v1/attestation")).unwrap();
    let grants = doc["key_release"]["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 2, "{doc}");
    assert_eq!(grants[0]["secret"], "model-key");
    // Anyone can check a grant's proof offline with the log's key.
    std::fs::write(
        d.join("grant.tlog-proof"),
        grants[0]["proof"].as_str().unwrap(),
    )
    .unwrap();
    let r = run_in(
        d,
        &[
            "kbs",
            "log",
            "check-proof",
            "--proof",
            "grant.tlog-proof",
            "--key",
            "log.key.pub",
        ],
    )
    .ok();
    assert!(
        r.stdout.contains("\"secret\":\"model-key\""),
        "{}",
        r.stdout
    );

    policy(d, "v1.toml", std::slice::from_ref(&v1));
    let r = predict(d, &a.rest, "v1.toml").ok();
    assert!(r.stderr.contains("admitted by policy"), "{}", r.stderr);
    // Another log's key: refused, naming the rule.
    run_in(
        d,
        &[
            "kbs",
            "log",
            "keygen",
            "--out",
            "other.key",
            "--origin",
            "kbs.test/owner",
        ],
    )
    .ok();
    let other = std::fs::read_to_string(d.join("other.key.pub")).unwrap();
    let text = std::fs::read_to_string(d.join("v1.toml")).unwrap();
    let key = std::fs::read_to_string(d.join("log.key.pub")).unwrap();
    std::fs::write(d.join("other.toml"), text.replace(key.trim(), other.trim())).unwrap();
    let r = predict(d, &a.rest, "other.toml").fails(1);
    assert!(
        r.stderr.contains("rule log_key") && r.stderr.contains("not signed by"),
        "{}",
        r.stderr
    );

    // The owner changes the broker's configuration: a requester who accepts only the new one
    // refuses the server whose key was granted before, and admits a server started after.
    kbs_toml(d, "v2");
    let v2 = sha256_file(&d.join("kbs.toml"));
    assert!(Command::new("kill")
        .args(["-HUP", &kbs.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(d.join("audit.jsonl"))
        .unwrap()
        .contains(&v2)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the reload was not logged"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    policy(d, "v2.toml", std::slice::from_ref(&v2));
    let r = predict(d, &a.rest, "v2.toml").fails(1);
    assert!(
        r.stderr.contains("rule policy_sha256") && r.stderr.contains(&v1),
        "{}",
        r.stderr
    );
    let b = serve(d, &kbs_addr);
    predict(d, &b.rest, "v2.toml").ok();

    // teeserve-load refuses the same way.
    let input = repo().join("testdata/digits/sample.npy");
    let load = |server: &str| {
        let attest = [
            "--ca",
            "tls/ca.pem",
            "--attest",
            "v2.toml",
            "--root",
            "sim/root.pem",
        ];
        Command::new(load_bin())
            .current_dir(d)
            .args(["--server", server])
            .args(attest)
            .args(["--model", "digits", "--input", s(&input), "--requests", "2"])
            .output()
            .unwrap()
    };
    let out = load(&a.grpc);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("policy_sha256"), "{stderr}");
    let out = load(&b.grpc);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The host runs its own broker, handing the keys out with server B's grant proof: the
    // server it provisions states its own RA-TLS key, which the replayed grant does not name.
    let b_doc: serde_json::Value =
        serde_json::from_str(&get(d, &b.rest, "/v1/attestation")).unwrap();
    let stolen = b_doc["key_release"]["grants"][0]["proof"]
        .as_str()
        .unwrap()
        .to_owned();
    let rogue = rogue_broker(d, stolen);
    let c = serve(d, &rogue);
    let r = predict(d, &c.rest, "v2.toml").fails(1);
    assert!(
        r.stderr.contains("rule log_key") && r.stderr.contains("replayed"),
        "{}",
        r.stderr
    );

    // A server that got its keys without a signed log (here: from a file) has no grant to show.
    let plain = listen(
        || {
            serve_command(
                d,
                &[
                    "--platform",
                    "simulated",
                    "--sim_dir",
                    "sim",
                    "--model_name",
                    "digits",
                    "--model_base_path",
                    "sealed/digits",
                    "--model_key",
                    "model.key",
                    "--tls_ra",
                    "--attestation_collateral",
                    "sim/collateral.json",
                ],
            )
        },
        None,
    )
    .unwrap();
    let r = run_in(
        d,
        &[
            "predict",
            "--server",
            &plain.rest,
            "--rest",
            "--model",
            "digits",
            "--input",
            s(&repo().join("testdata/digits/sample.json")),
            "--attest",
            "v2.toml",
            "--root",
            "sim/root.pem",
        ],
    )
    .fails(1);
    assert!(
        r.stderr.contains("rule log_key") && r.stderr.contains("no key-broker grant"),
        "{}",
        r.stderr
    );
}
