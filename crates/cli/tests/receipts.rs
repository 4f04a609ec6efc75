//! Receipts through the real binary: a requester asks for one over REST and gRPC (`predict
//! --receipt`), verifies it offline (`receipt verify`), and each attack on it is refused naming
//! what failed: the response changed, another request shown, a receipt of another server process, a
//! document whose receipt key its quote does not bind. A server without a TEE refuses to sign, and
//! neither a gRPC call of two messages nor a JSON body that repeats a key gets a receipt.
mod harness;
use harness::*;

use std::path::Path;
use std::sync::Arc;

use teeserve_client::{ca_verifier, client_config, RestClient};

fn setup(d: &Path) {
    run_in(d, &["sim", "init", "--dir", "sim"]).ok();
    run_in(d, &["tls", "init", "--dir", "tls"]).ok();
    let me = run(&["attest", "measure"]).ok().stdout.trim().to_owned();
    std::fs::write(
        d.join("policy.toml"),
        format!("mrenclave = [\"{me}\"]\nallow_simulated = true\ntls_key_origin = [\"host\"]\n"),
    )
    .unwrap();
}

/// The digits model on the simulated platform, its attestation published for the host's TLS
/// key (so that a saved document can be fetched without a nonce).
fn serve(d: &Path) -> Serve {
    serve_with(d, &[])
}

/// [`serve`] with `extra` flags.
fn serve_with(d: &Path, extra: &[&str]) -> Serve {
    serve_models(d, &repo().join("models/digits"), extra)
}

/// [`serve_with`] serving the digits model from `models`.
fn serve_models(d: &Path, models: &Path, extra: &[&str]) -> Serve {
    listen(
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
                    s(models),
                    "--tls_cert",
                    "tls/server.pem",
                    "--tls_key",
                    "tls/server.key",
                    "--attestation_collateral",
                    "sim/collateral.json",
                    "--attest_host_tls_key",
                ]
                .into_iter()
                .chain(extra.iter().copied())
                .collect::<Vec<_>>(),
            )
        },
        None,
    )
    .unwrap()
}

fn predict_with_receipt(d: &Path, addr: &str, rest: bool, out: &str) -> Run {
    predict_input_with_receipt(
        d,
        addr,
        rest,
        out,
        &repo().join("testdata/digits/sample.json"),
    )
}

fn predict_input_with_receipt(d: &Path, addr: &str, rest: bool, out: &str, sample: &Path) -> Run {
    let mut args = vec![
        "predict",
        "--server",
        addr,
        "--model",
        "digits",
        "--input",
        s(sample),
        "--ca",
        "tls/ca.pem",
        "--attest",
        "policy.toml",
        "--root",
        "sim/root.pem",
        // The server's TLS key is the host's (--attest_host_tls_key): attestation is quoted
        // over a fresh nonce, and the receipt names the standing document, which predict
        // fetches and admits too.
        "--receipt",
        out,
    ];
    if rest {
        args.push("--rest");
    }
    run_in(d, &args)
}

fn verify(d: &Path, dir: &str) -> Run {
    run_in(
        d,
        &[
            "receipt",
            "verify",
            dir,
            "--policy",
            "policy.toml",
            "--root",
            "sim/root.pem",
        ],
    )
}

/// `dir` copied to `to`, for an attack on the copy.
fn copy(d: &Path, dir: &str, to: &str) {
    std::fs::create_dir_all(d.join(to)).unwrap();
    for f in std::fs::read_dir(d.join(dir)).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), d.join(to).join(f.file_name())).unwrap();
    }
}

#[test]
fn receipts_over_rest_and_grpc_verify_and_every_attack_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let server = serve(d);
    predict_with_receipt(d, &server.rest, true, "rest").ok();
    predict_with_receipt(d, &server.grpc, false, "grpc").ok();
    // A request of many frames (3,000 rows: 768 KB of tensor content, HTTP/2 frames of at most
    // 256 KiB), which the server hashes frame by frame as it arrives.
    let rows: Vec<String> = (0..3000)
        .map(|i| {
            let row: Vec<String> = (0..64).map(|j| ((i * 7 + j) % 17).to_string()).collect();
            format!("[{}]", row.join(","))
        })
        .collect();
    let large = d.join("large.json");
    std::fs::write(&large, format!("{{\"instances\": [{}]}}", rows.join(","))).unwrap();
    predict_input_with_receipt(d, &server.grpc, false, "grpc-large", &large).ok();
    assert!(
        std::fs::metadata(d.join("grpc-large/request.bin"))
            .unwrap()
            .len()
            > 768_000
    );
    // The same as a REST body of 500 KB, which the server also hashes as it arrives.
    predict_input_with_receipt(d, &server.rest, true, "rest-large", &large).ok();
    assert!(
        std::fs::metadata(d.join("rest-large/request.bin"))
            .unwrap()
            .len()
            > 500_000
    );
    let model = std::fs::read(repo().join("models/digits/1/model.onnx")).unwrap();
    let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, &model));
    for (r, api) in [
        ("rest", "rest"),
        ("grpc", "grpc"),
        ("grpc-large", "grpc"),
        ("rest-large", "rest"),
    ] {
        let out = verify(d, r).ok().json();
        assert_eq!(out["model"], "digits", "{out}");
        assert_eq!(out["version"], 1, "{out}");
        assert_eq!(out["model_sha256"], digest, "{out}");
        // The same method over two APIs: the receipt says which, so how to read its bytes.
        assert_eq!(
            (&out["api"], &out["method"]),
            (&api.into(), &"Predict".into()),
            "{out}"
        );
        assert_eq!(out["signature"], "serving_default", "{out}");
    }

    // The response changed by one byte.
    copy(d, "rest", "changed");
    let mut resp = std::fs::read(d.join("changed/response.bin")).unwrap();
    let last = resp.len() - 2;
    resp[last] ^= 1;
    std::fs::write(d.join("changed/response.bin"), resp).unwrap();
    let e = verify(d, "changed").fails(1).stderr;
    assert!(e.contains("receipt response"), "{e}");

    // The document shown with a field added: it parses to the same fields, but is not the
    // document the receipt names, and another reader could be shown what the server never sent.
    copy(d, "rest", "other-document");
    let doc = std::fs::read_to_string(d.join("other-document/attestation.json")).unwrap();
    let added = doc.replacen('{', "{\"note\": \"not from the server\", ", 1);
    std::fs::write(d.join("other-document/attestation.json"), added).unwrap();
    let e = verify(d, "other-document").fails(1).stderr;
    assert!(e.contains("receipt document"), "{e}");

    // The receipt of one request shown with another request.
    copy(d, "rest", "other-request");
    std::fs::write(
        d.join("other-request/request.bin"),
        b"{\"instances\": [[0]]}",
    )
    .unwrap();
    let e = verify(d, "other-request").fails(1).stderr;
    assert!(e.contains("receipt request"), "{e}");

    // A long request (hashed frame by frame as it arrived) with one byte changed deep inside.
    for large in ["grpc-large", "rest-large"] {
        copy(d, large, "changed-large");
        let mut req = std::fs::read(d.join("changed-large/request.bin")).unwrap();
        let at = req.len() * 2 / 3;
        req[at] ^= 1;
        std::fs::write(d.join("changed-large/request.bin"), req).unwrap();
        let e = verify(d, "changed-large").fails(1).stderr;
        assert!(e.contains("receipt request"), "{large}: {e}");
    }

    // A receipt signed by another server process (another receipt key), shown with this
    // server's document.
    let second = serve(d);
    predict_with_receipt(d, &second.rest, true, "second").ok();
    copy(d, "rest", "foreign");
    std::fs::copy(
        d.join("second/receipt.cbor"),
        d.join("foreign/receipt.cbor"),
    )
    .unwrap();
    let e = verify(d, "foreign").fails(1).stderr;
    assert!(e.contains("signature does not verify"), "{e}");

    // A document whose receipt key its quote does not bind: the second server's key put into
    // the first server's document, with the second server's receipt.
    copy(d, "rest", "rebound");
    let second_doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("second/attestation.json")).unwrap()).unwrap();
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("rebound/attestation.json")).unwrap())
            .unwrap();
    doc["receipt_key"] = second_doc["receipt_key"].clone();
    std::fs::write(
        d.join("rebound/attestation.json"),
        serde_json::to_vec(&doc).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        d.join("second/receipt.cbor"),
        d.join("rebound/receipt.cbor"),
    )
    .unwrap();
    let e = verify(d, "rebound").fails(1).stderr;
    assert!(e.contains("binding"), "{e}");

    // A truncated receipt.
    copy(d, "grpc", "truncated");
    let r = std::fs::read(d.join("truncated/receipt.cbor")).unwrap();
    std::fs::write(d.join("truncated/receipt.cbor"), &r[..r.len() / 2]).unwrap();
    let e = verify(d, "truncated").fails(1).stderr;
    assert!(e.contains("receipt refused (receipt)"), "{e}");
}

#[test]
fn a_server_without_a_tee_refuses_to_sign_a_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_in(d, &["tls", "init", "--dir", "tls"]).ok();
    let models = repo().join("models/digits");
    let server = listen(
        || {
            serve_command(
                d,
                &[
                    "--model_name",
                    "digits",
                    "--model_base_path",
                    s(&models),
                    "--tls_cert",
                    "tls/server.pem",
                    "--tls_key",
                    "tls/server.key",
                ],
            )
        },
        None,
    )
    .unwrap();
    let body = std::fs::read_to_string(repo().join("testdata/digits/sample.json")).unwrap();
    let (status, answer) = post_predict(d, &server, &body, true);
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("cannot sign receipts"), "{answer}");
}

/// A Predict call whose body carries two messages A and B: the messages hash as one message A||B
/// would, and the handler answers A alone, so a receipt of it could be shown with A||B (A merged
/// with B). The server answers such a call, but gives no receipt for it.
#[test]
fn a_call_of_two_messages_gets_no_receipt() {
    use prost::Message as _;
    use teeserve_client::requester::RawCodec;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let server = serve(d);
    let request = digits_request(1.0).encode_to_vec();
    let ca = std::fs::read(d.join("tls/ca.pem")).unwrap();
    let cfg = Arc::new(client_config(ca_verifier(&ca).unwrap(), None, &[b"h2"]).unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let call = |messages: Vec<Vec<u8>>, receipt: bool| {
        let (cfg, addr) = (cfg.clone(), server.grpc.clone());
        rt.block_on(async move {
            let channel = teeserve_client::requester::grpc_channel(&addr, Some(cfg), "127.0.0.1")
                .await
                .unwrap();
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.unwrap();
            let messages = messages.into_iter().map(prost::bytes::Bytes::from);
            let mut req = tonic::Request::new(futures::stream::iter(messages));
            if receipt {
                req.metadata_mut()
                    .insert("x-teeserve-receipt", "1".parse().unwrap());
            }
            let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                "/tensorflow.serving.PredictionService/Predict",
            );
            grpc.client_streaming(req, path, RawCodec).await
        })
    };
    // One message, with a receipt: answered, with the receipt.
    let one = call(vec![request.clone()], true).unwrap();
    assert!(one.metadata().get_bin("x-teeserve-receipt-bin").is_some());
    // Two messages without asking for a receipt: answered as tonic answers a unary call.
    call(vec![request.clone(), request.clone()], false).unwrap();
    // Two messages asking for a receipt: refused, naming why.
    let e = call(vec![request.clone(), request.clone()], true).unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("exactly one whole request message")
            && e.message().contains("2 messages"),
        "{e:?}"
    );
    // One message whose flag byte says compressed: its hash would name the compressed bytes.
    let compressed = |receipt: bool| {
        let (cfg, addr, request) = (cfg.clone(), server.grpc.clone(), request.clone());
        rt.block_on(async move {
            let mut body = vec![1u8];
            body.extend_from_slice(&(request.len() as u32).to_be_bytes());
            body.extend_from_slice(&request);
            let mut c = teeserve_client::requester::grpc_channel(&addr, Some(cfg), "127.0.0.1")
                .await
                .unwrap();
            let mut req = hyper::Request::post(format!(
                "https://{addr}/tensorflow.serving.PredictionService/Predict"
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-encoding", "gzip");
            if receipt {
                req = req.header("x-teeserve-receipt", "1");
            }
            let req = req
                .body(tonic::body::Body::new(http_body_util::Full::new(
                    prost::bytes::Bytes::from(body),
                )))
                .unwrap();
            use tonic::codegen::Service as _;
            futures::future::poll_fn(|cx| c.poll_ready(cx))
                .await
                .unwrap();
            let resp = c.call(req).await.unwrap();
            let (parts, body) = resp.into_parts();
            // The status comes in the trailers, or in the head of a trailers-only answer.
            let mut all = parts.headers;
            let trailers = http_body_util::BodyExt::collect(body)
                .await
                .unwrap()
                .trailers()
                .cloned()
                .unwrap_or_default();
            all.extend(trailers);
            let get = |k: &str| all.get(k).map(|v| v.to_str().unwrap().to_owned());
            (
                get("grpc-status"),
                get("grpc-message"),
                all.contains_key("x-teeserve-receipt-bin"),
            )
        })
    };
    let (status, message, receipt) = compressed(true);
    assert_eq!(status.as_deref(), Some("3"), "{message:?}");
    assert!(
        message.as_deref().unwrap_or("").contains("uncompressed"),
        "{message:?}"
    );
    assert!(!receipt);
}

/// A receipt is asked for with `x-teeserve-receipt: 1`, once. Any other value (`0`, `yes`, `2`,
/// the header twice) is refused naming the header, over REST and gRPC, instead of answering
/// without a receipt a requester that may believe it asked for one.
#[test]
fn a_receipt_header_with_another_value_is_refused_naming_it() {
    use prost::Message as _;
    use teeserve_client::requester::RawCodec;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let server = serve(d);
    let body = format!("{{\"instances\": [[{}]]}}", vec!["0.5"; 64].join(","));
    for value in ["0", "yes", "2", "11", "true"] {
        let (status, answer) = post(
            d,
            &server,
            "/v1/models/digits:predict",
            body.clone().into_bytes(),
            &[("x-teeserve-receipt", value)],
        );
        assert_eq!(status, 400, "{value}: {answer}");
        assert!(
            answer.contains("x-teeserve-receipt") && answer.contains("is not 1"),
            "{value}: {answer}"
        );
    }
    let (status, answer) = post(
        d,
        &server,
        "/v1/models/digits:predict",
        body.clone().into_bytes(),
        &[("x-teeserve-receipt", "1"), ("x-teeserve-receipt", "1")],
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("sent 2 times"), "{answer}");
    // The same over gRPC.
    let request = digits_request(1.0).encode_to_vec();
    let ca = std::fs::read(d.join("tls/ca.pem")).unwrap();
    let cfg = Arc::new(client_config(ca_verifier(&ca).unwrap(), None, &[b"h2"]).unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let call = |values: &[&'static str]| {
        let (cfg, addr, request) = (cfg.clone(), server.grpc.clone(), request.clone());
        let values = values.to_vec();
        rt.block_on(async move {
            let channel = teeserve_client::requester::grpc_channel(&addr, Some(cfg), "127.0.0.1")
                .await
                .unwrap();
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.unwrap();
            let mut req = tonic::Request::new(prost::bytes::Bytes::from(request));
            for v in values {
                req.metadata_mut()
                    .append("x-teeserve-receipt", v.parse().unwrap());
            }
            let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                "/tensorflow.serving.PredictionService/Predict",
            );
            grpc.unary(req, path, RawCodec).await
        })
    };
    let answered = call(&["1"]).unwrap();
    assert!(answered
        .metadata()
        .get_bin("x-teeserve-receipt-bin")
        .is_some());
    for values in [&["0"][..], &["yes"], &["0", "1"], &["1", "0"]] {
        let e = call(values).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{values:?}: {e:?}");
        assert!(
            e.message().contains("x-teeserve-receipt"),
            "{values:?}: {e:?}"
        );
    }
}

/// The Open Inference Protocol's model readiness counts a requester's pin as inference does:
/// a model none of whose served files the request accepts is not ready for it.
#[test]
fn model_readiness_counts_the_requesters_pin() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let server = serve(d);
    let pinned = |digest: &str| {
        let (status, answer) = request(
            d,
            &server,
            hyper::Method::GET,
            "/v2/models/digits/ready",
            Vec::new(),
            &[("x-teeserve-accept-sha256", digest)],
        );
        (status, String::from_utf8_lossy(&answer).into_owned())
    };
    let (status, answer) = get(d, &server, "/v2/models/digits/ready");
    assert_eq!(status, 200, "{answer:?}");
    let served = sha256_hex(&std::fs::read(repo().join("models/digits/1/model.onnx")).unwrap());
    let (status, answer) = pinned(&served);
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = pinned(&"ab".repeat(32));
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("\"ready\":false"), "{answer}");
    // A pin that is not a digest is refused, naming the header.
    let (status, answer) = pinned("xyz");
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("not a SHA-256"), "{answer}");
}

/// A REST body that repeats a key: this server's reader keeps the last `instances`, others keep
/// the first, so a receipt of it could be shown as the answer to the other reading. Refused when
/// a receipt is asked for, answered otherwise.
#[test]
fn a_json_body_that_repeats_a_key_gets_no_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let server = serve(d);
    let row = |v: f32| format!("[{}]", vec![v.to_string(); 64].join(","));
    let body = format!(
        "{{\"instances\": [{}], \"instances\": [{}]}}",
        row(0.0),
        row(16.0)
    );
    let (status, answer) = post_predict(d, &server, &body, false);
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = post_predict(d, &server, &body, true);
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.contains("the key \\\"instances\\\" appears twice"),
        "{answer}"
    );
    // A first value no strict reader takes (a number out of range) must not hide the repeat:
    // this server reads the last "instances" and answers; a receipt is refused.
    let hidden = format!(
        "{{\"instances\": [[1e400]], \"instances\": [{}]}}",
        row(16.0)
    );
    let (status, answer) = post_predict(d, &server, &hidden, false);
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = post_predict(d, &server, &hidden, true);
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("must be strict JSON"), "{answer}");
}

/// The repeated-key check keeps each object's keys, so it reserves from the memory budget what
/// reading the body into a tree would: under a budget that a digits request read straight into
/// its tensor fits and that tree does not, the request without a receipt is answered and the
/// one that asks for a receipt is refused, naming the check and the flag.
#[test]
fn the_repeated_key_check_is_held_to_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let server = serve_with(
        d,
        &[
            "--max_in_flight_bytes",
            "4096",
            "--max_in_flight_bytes_per_peer",
            "4096",
        ],
    );
    let body = format!("{{\"instances\": [[{}]]}}", vec!["0.5"; 64].join(","));
    let (status, answer) = post_predict(d, &server, &body, false);
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = post_predict(d, &server, &body, true);
    assert_eq!(status, 429, "{answer}");
    assert!(
        answer.contains("checking the request's JSON for repeated keys needs")
            && answer.contains("--max_in_flight_bytes"),
        "{answer}"
    );
}

/// POSTs `body` to the digits model's REST predict, asking for a receipt or not: the status and
/// the answer.
fn post_predict(d: &Path, server: &Serve, body: &str, receipt: bool) -> (u16, String) {
    let receipt: &[(&str, &str)] = if receipt {
        &[("x-teeserve-receipt", "1")]
    } else {
        &[]
    };
    post(
        d,
        server,
        "/v1/models/digits:predict",
        body.as_bytes().to_vec(),
        receipt,
    )
}

/// POSTs `body` to `path` on the REST port with `headers`: the status and the answer.
fn post(
    d: &Path,
    server: &Serve,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let (status, answer) = request(d, server, hyper::Method::POST, path, body, headers);
    (status, String::from_utf8_lossy(&answer).into_owned())
}

/// GETs `path` on the REST port: the status and the answer's bytes.
fn get(d: &Path, server: &Serve, path: &str) -> (u16, Vec<u8>) {
    request(d, server, hyper::Method::GET, path, Vec::new(), &[])
}

fn request(
    d: &Path,
    server: &Serve,
    method: hyper::Method,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (u16, Vec<u8>) {
    let ca = std::fs::read(d.join("tls/ca.pem")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let cfg = client_config(ca_verifier(&ca).unwrap(), None, &[b"http/1.1"]).unwrap();
        let mut c = RestClient::connect(&server.rest, Some(Arc::new(cfg)), "127.0.0.1")
            .await
            .unwrap();
        c.request_with(method, path, body, headers, 4 << 20)
            .await
            .unwrap()
    })
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b))
}

/// A receipt names the server's standing document of when its answer was made, and a requester
/// may hold an earlier one (the served models changed since it was fetched): the server keeps
/// its last standing documents, each served by its SHA-256, byte for byte. A receipt made after
/// the change verifies with the later document.
#[test]
fn earlier_standing_documents_are_served_by_their_sha256_after_the_models_change() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let models = d.join("models");
    std::fs::create_dir_all(models.join("1")).unwrap();
    std::fs::copy(
        repo().join("models/digits/1/model.onnx"),
        models.join("1/model.onnx"),
    )
    .unwrap();
    let server = serve_models(d, &models, &["--file_system_poll_wait_seconds", "1"]);
    let (status, first) = get(d, &server, "/v1/attestation");
    assert_eq!(status, 200);
    std::fs::create_dir_all(models.join("2")).unwrap();
    std::fs::copy(models.join("1/model.onnx"), models.join("2/model.onnx")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let second = loop {
        let (status, doc) = get(d, &server, "/v1/attestation");
        assert_eq!(status, 200);
        if doc != first {
            break doc;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "version 2 never loaded"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    for doc in [&first, &second] {
        let (status, got) = get(
            d,
            &server,
            &format!("/v1/attestation?sha256={}", sha256_hex(doc)),
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&got));
        assert_eq!(&got, doc);
    }
    let unknown = "00".repeat(32);
    let (status, answer) = get(d, &server, &format!("/v1/attestation?sha256={unknown}"));
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer.contains(&format!(
            "no standing attestation document with SHA-256 {unknown} is kept"
        )),
        "{answer}"
    );
    for bad in [
        "sha256=zz",
        &format!("sha256={unknown}&nonce=00"),
        &format!("nonce=00&sha256={unknown}"),
    ] {
        let (status, answer) = get(d, &server, &format!("/v1/attestation?{bad}"));
        assert_eq!(status, 400, "{bad}: {}", String::from_utf8_lossy(&answer));
    }
    // A receipt now names the later document, which predict saves and verify admits.
    predict_with_receipt(d, &server.rest, true, "r").ok();
    let saved = std::fs::read(d.join("r/attestation.json")).unwrap();
    assert_eq!(saved, second);
    let v = verify(d, "r").ok().json();
    assert_eq!(v["version"], 2, "{v}");
    // A requester that held the first document (as one that fetched it before the change and
    // got its answer after does) gets the one its receipt names, fetched and admitted.
    let receipt = std::fs::read(d.join("r/receipt.cbor")).unwrap();
    let cert = std::fs::read(d.join("r/certificate.der")).unwrap();
    let options = || teeserve_client::AttestOptions {
        addr: server.rest.clone(),
        server_name: "127.0.0.1".into(),
        ca: Some(ca_verifier(&std::fs::read(d.join("tls/ca.pem")).unwrap()).unwrap()),
        identity: None,
        policy: teeserve_attest::Policy::from_toml(
            &std::fs::read_to_string(d.join("policy.toml")).unwrap(),
        )
        .unwrap(),
        anchor: teeserve_attest::TrustAnchor::from_pem(
            &std::fs::read(d.join("sim/root.pem")).unwrap(),
        )
        .unwrap(),
        collateral: None,
        at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
        nonce: teeserve_client::NonceChoice::Never,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let named = |receipt: &[u8], held: &[u8], cert: &[u8], o| {
        rt.block_on(teeserve_client::document_of_receipt(receipt, held, cert, o))
    };
    assert_eq!(named(&receipt, &first, &cert, options()).unwrap(), second);
    assert_eq!(named(&receipt, &second, &cert, options()).unwrap(), second);
    // Only with the certificate the data connections were pinned to.
    let e = named(&receipt, &first, b"another certificate", options()).unwrap_err();
    assert_eq!(e.rule, "certificate", "{}", e.message);
    // Only a document the policy admits.
    let mut strict = options();
    strict.policy = teeserve_attest::Policy::from_toml(&format!(
        "mrenclave = [\"{}\"]\nallow_simulated = true\ntls_key_origin = [\"host\"]\n",
        "ab".repeat(32)
    ))
    .unwrap();
    let e = named(&receipt, &first, &cert, strict).unwrap_err();
    assert_eq!(e.rule, "mrenclave", "{}", e.message);
    // Nothing is fetched for a receipt the held key did not sign: its signature changed.
    let mut forged = receipt.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let e = named(&forged, &first, &cert, options()).unwrap_err();
    assert_eq!(e.rule, "receipt", "{}", e.message);
    assert!(e.message.contains("signature"), "{}", e.message);
}

/// An Open Inference Protocol request with binary data names its JSON part's length in a
/// header the receipt does not cover. Whitespace after the JSON object inside that part would be
/// binary data to a reader that splits the body where the object ends, so a request that asks
/// for a receipt must end its JSON part with its object, and no input of it has both data and
/// binary data; without a receipt such requests are answered.
#[test]
fn a_binary_request_whose_json_part_runs_past_its_object_gets_no_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let server = serve(d);
    let raw: Vec<u8> = (0..64)
        .flat_map(|i| (i as f32 % 16.0).to_le_bytes())
        .collect();
    let head = r#"{"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": 256}}]}"#;
    let send = |head: &str, receipt: bool| {
        let len = head.len().to_string();
        let mut headers = vec![("inference-header-content-length", len.as_str())];
        if receipt {
            headers.push(("x-teeserve-receipt", "1"));
        }
        let body = [head.as_bytes(), &raw].concat();
        post(d, &server, "/v2/models/digits/infer", body, &headers)
    };
    let padded = format!("{head}    ");
    let (status, answer) = send(&padded, false);
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = send(&padded, true);
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("where its JSON object ends"), "{answer}");
    let (status, answer) = send(head, true);
    assert_eq!(status, 200, "{answer}");
    // An input with both data and binary data (this server runs the binary data): a body whose
    // binary data is whitespace could be read as plain JSON, with data. Refused with a receipt.
    let both = head.replace(
        r#""parameters""#,
        &format!(r#""data": [{}], "parameters""#, vec!["1"; 64].join(",")),
    );
    let (status, answer) = send(&both, false);
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = send(&both, true);
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.contains("has both data and binary_data_size"),
        "{answer}"
    );
}
