//! The server end to end on loopback: outputs against onnxruntime's, TF Serving's error codes
//! and messages, version lifecycle, labels, TLS and mTLS on both APIs, limits, health, metrics.
mod api_common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use teeserve_client::requester::{Connection, RequestTarget};
use teeserve_client::{ca_verifier, client_config, RestClient};
use teeserve_serving::Server;
use teeserve_tensor::{self as tensor, Data, Tensor};
use teeserve_wire::tensorflow::serving::{GetModelStatusRequest, ModelSpec, PredictRequest};

use api_common::*;

#[tokio::test]
async fn outputs_match_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(options(&base(dir.path()))).await;
    let want = tensor::from_npy(
        &std::fs::read(repo().join("testdata/digits/heldout-probabilities-onnxruntime.npy"))
            .unwrap(),
    )
    .unwrap();
    let Data::F32(want) = want.data else { panic!() };
    for as_content in [true, false] {
        let mut c = grpc(&s).await;
        let req = PredictRequest {
            model_spec: spec("digits", None, None, ""),
            inputs: [("pixels".to_owned(), pixels().to_proto(as_content))]
                .into_iter()
                .collect(),
            output_filter: vec!["probabilities".into()],
        };
        let r = c.predict(req).await.unwrap().into_inner();
        assert_eq!(r.outputs.len(), 1);
        let got = Tensor::from_proto(&r.outputs["probabilities"]).unwrap();
        let Data::F32(got) = got.data else { panic!() };
        assert_eq!(got.len(), want.len());
        let max = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max < 1e-4, "max difference {max}");
    }
    // REST row and columnar formats give the same numbers.
    let mut c = rest(&s).await;
    let mut inst = String::new();
    tensor::write_json(&rows(2), None, false, &mut inst);
    let inst: Value = serde_json::from_str(&inst).unwrap();
    let (st, v) = post(
        &mut c,
        "/v1/models/digits:predict",
        json!({"instances": inst.clone()}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let p0 = v["predictions"][0]["probabilities"][3].as_f64().unwrap() as f32;
    assert!((p0 - want[3]).abs() < 1e-4);
    let (st, v) = post(
        &mut c,
        "/v1/models/digits/versions/1:predict",
        json!({"inputs": {"pixels": inst}}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["outputs"]["class"].as_array().unwrap().len(), 2);
    // The one input as a bare list under "inputs", and with a signature name beside it.
    let (st, v2) = post(
        &mut c,
        "/v1/models/digits:predict",
        json!({"signature_name": "serving_default", "inputs": inst}),
    )
    .await;
    assert_eq!(st, 200, "{v2}");
    assert_eq!(v2["outputs"], v["outputs"]);
}

#[tokio::test]
async fn errors_have_tf_serving_codes_and_messages() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(options(&base(dir.path()))).await;
    let mut g = grpc(&s).await;
    let req = |spec: Option<ModelSpec>, t: Tensor| PredictRequest {
        model_spec: spec,
        inputs: [("pixels".to_owned(), t.to_proto(true))]
            .into_iter()
            .collect(),
        output_filter: vec![],
    };
    let e = g
        .predict(req(spec("nope", None, None, ""), rows(1)))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            tonic::Code::NotFound,
            "Servable not found for request: Latest(nope)"
        )
    );
    let e = g
        .predict(req(spec("digits", Some(7), None, ""), rows(1)))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            tonic::Code::NotFound,
            "Servable not found for request: Specific(digits, 7)"
        )
    );
    let e = g
        .predict(req(spec("digits", None, Some("stable"), ""), rows(1)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e
        .message()
        .contains("Unrecognized servable version label: stable"));
    let e = g
        .predict(req(spec("digits", None, None, "other"), rows(1)))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            tonic::Code::FailedPrecondition,
            "Serving signature key \"other\" not found."
        )
    );
    let wrong_dtype = Tensor::new(vec![1, 64], Data::I64(vec![0; 64])).unwrap();
    let e = g
        .predict(req(spec("digits", None, None, ""), wrong_dtype))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            tonic::Code::InvalidArgument,
            "Expects arg[0] to be float but int64 is provided"
        )
    );
    let wrong_shape = Tensor::new(vec![1, 63], Data::F32(vec![0.0; 63])).unwrap();
    let e = g
        .predict(req(spec("digits", None, None, ""), wrong_shape))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let mut extra = req(spec("digits", None, None, ""), rows(1));
    extra.inputs.insert("extra".into(), rows(1).to_proto(true));
    let e = g.predict(extra).await.unwrap_err();
    assert!(
        e.message()
            .starts_with("input size does not match signature")
            && e.message().contains("Sent extra: {extra}"),
        "{}",
        e.message()
    );

    let mut c = rest(&s).await;
    let one = json!([vec![0.0; 64]]);
    let cases = [
        (
            "/v1/models/nope:predict",
            json!({"instances": one}),
            404,
            "Servable not found for request: Latest(nope)",
        ),
        (
            "/v1/models/digits:predict",
            json!({"instances": one, "signature_name": "x"}),
            400,
            "Serving signature name: \"x\" not found in signature def",
        ),
        (
            "/v1/models/digits:predict",
            json!({"instances": [[1, 2], [3]]}),
            400,
            "Encountered list at unexpected size",
        ),
        (
            "/v1/models/digits:predict",
            json!({"instances": one, "inputs": one}),
            400,
            "expecting only one of 'inputs' or 'instances'",
        ),
        (
            "/v1/models/digits:predict",
            json!({"foo": 1}),
            400,
            "Missing 'inputs' or 'instances' key",
        ),
        (
            "/v1/models/digits:predict",
            json!({"instances": [vec![0.5; 63]]}),
            400,
            "does not match the signature",
        ),
        (
            "/v1/models/digits:predict",
            json!({"inputs": [[0.5, 1], [2]]}),
            400,
            "Encountered list at unexpected size",
        ),
        (
            "/v1/models/digits:predict",
            json!({"instances": [vec!["a"; 64]]}),
            400,
            "is not of expected type: float",
        ),
        (
            "/v1/models/digits:predict",
            json!({"inputs": {"other": one}}),
            400,
            "Missing named input: pixels in 'inputs' object.",
        ),
        (
            "/v1/models/digits:predict",
            json!({"inputs": {"pixels": one, "extra": [[1.0]]}}),
            400,
            "Sent extra: {extra}",
        ),
        (
            "/v1/models/digits/versions/x:predict",
            json!({"instances": one}),
            400,
            "Failed to convert version",
        ),
    ];
    for (path, body, code, msg) in cases {
        let (st, v) = post(&mut c, path, body).await;
        assert_eq!(st, code, "{path}: {v}");
        assert!(
            v["error"].as_str().unwrap_or("").contains(msg),
            "{path}: {v}"
        );
    }
    let (st, v) = c
        .request(hyper::Method::POST, "/v1/models/digits:predict", Vec::new())
        .await
        .unwrap();
    assert_eq!(st, 400);
    assert!(String::from_utf8_lossy(&v).contains("The document is empty"));
    let (st, v) = get(&mut c, "/v1/models/digits:predict").await;
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("Malformed request"));
    let (st, v) = get(&mut c, "/v1/models/digits/versions/9").await;
    assert_eq!(
        (st, v["error"].as_str().unwrap()),
        (404, "Could not find version 9 of model digits")
    );
}

#[tokio::test]
async fn oversized_requests_and_overload_are_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let b = base(dir.path());
    let mut o = options(&b);
    o.max_request_bytes = 64 * 1024;
    o.enable_batching = true;
    let params = dir.path().join("batching.txt");
    std::fs::write(&params, "max_batch_size { value: 2 } batch_timeout_micros { value: 300000 } max_enqueued_batches { value: 1 } num_batch_threads { value: 1 }").unwrap();
    o.batching_parameters_file = Some(params);
    let s = start(o).await;
    let mut c = rest(&s).await;
    let big = json!({"instances": vec![vec![0.0; 64]; 2000]});
    let (st, v) = post(&mut c, "/v1/models/digits:predict", big).await;
    assert_eq!(st, 413, "{v}");
    let mut g = grpc(&s).await;
    let e = g
        .predict(PredictRequest {
            model_spec: spec("digits", None, None, ""),
            inputs: [("pixels".to_owned(), pixels().to_proto(false))]
                .into_iter()
                .collect(),
            output_filter: vec![],
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{e:?}"
    );

    // Ten concurrent requests against a queue of two: the rest get UNAVAILABLE (503).
    let addr = s.rest_addr.unwrap().to_string();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let addr = addr.clone();
        tasks.push(tokio::spawn(
            async move { predict_one_zero_row(&addr).await },
        ));
    }
    let mut codes = Vec::new();
    for t in tasks {
        let (st, v) = t.await.unwrap();
        if st == 503 {
            assert!(v["error"].as_str().unwrap().contains("queue"), "{v}");
        }
        codes.push(st);
    }
    assert!(codes.iter().all(|c| *c == 200 || *c == 503), "{codes:?}");
    assert!(codes.contains(&503) && codes.contains(&200), "{codes:?}");
}

#[tokio::test]
async fn in_flight_limit_answers_429() {
    let dir = tempfile::tempdir().unwrap();
    let b = base(dir.path());
    let mut o = options(&b);
    o.core.max_in_flight = 1;
    o.enable_batching = true;
    let params = dir.path().join("batching.txt");
    std::fs::write(
        &params,
        "max_batch_size { value: 64 } batch_timeout_micros { value: 1000000 }",
    )
    .unwrap();
    o.batching_parameters_file = Some(params);
    let s = start(o).await;
    let addr = s.rest_addr.unwrap().to_string();
    let slow = tokio::spawn({
        let addr = addr.clone();
        async move { predict_one_zero_row(&addr).await }
    });
    // The first request waits a second for its batch to fill, holding the one slot.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (st, v) = predict_one_zero_row(&addr).await;
    assert_eq!(st, 429, "{v}");
    assert_eq!(slow.await.unwrap().0, 200);
}

/// On shutdown (SIGTERM in `teeserve serve`) the ports close at once, so that a balancer in
/// front sends new connections elsewhere, while a request already in flight is still answered.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_refuses_new_connections_at_once_and_answers_the_requests_in_flight() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let b = base(dir.path());
    let s = start(options(&b)).await;
    let addr = s.rest_addr.unwrap();
    let core = s.core.clone();
    // A request whose body is only half sent: admitted, and in flight until the rest comes.
    let body = json!({"instances": [vec![0.0; 64]]}).to_string();
    let (head, tail) = body.split_at(body.len() / 2);
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(
        format!(
            "POST /v1/models/digits:predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{head}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    wait_for(|| core.in_flight() == 1).await;
    let stopping = tokio::spawn(s.shutdown());
    // New connections are refused while the request in flight is still being drained.
    let mut refused = false;
    for _ in 0..50 {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(
        refused,
        "a new connection was still accepted while draining"
    );
    assert!(
        !stopping.is_finished(),
        "the drain did not wait for the request"
    );
    assert_eq!(core.in_flight(), 1);
    c.write_all(tail.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut answer))
        .await
        .expect("the connection closes after its answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"predictions\""), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("the drain ends once the request is answered")
        .unwrap();
    assert_eq!(core.in_flight(), 0);
}

async fn wait_for(mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not reached");
}

#[tokio::test]
async fn version_lifecycle_add_remove_and_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let b = base(dir.path());
    let s = start(options(&b)).await;
    let core = s.core.clone();
    let latest = |core: &teeserve_serving::ServingCore| {
        core.resolve("digits", None, None).map(|t| t.version).ok()
    };
    assert_eq!(latest(&core), Some(1));
    std::fs::create_dir_all(b.join("2")).unwrap();
    std::fs::write(b.join("2/model.onnx"), model_bytes()).unwrap();
    wait_for(|| latest(&core) == Some(2)).await;
    std::fs::remove_dir_all(b.join("2")).unwrap();
    wait_for(|| latest(&core) == Some(1)).await;
    std::fs::create_dir_all(b.join("3")).unwrap();
    std::fs::write(b.join("3/model.onnx"), b"this is not an onnx model").unwrap();
    wait_for(|| core.status_of("digits", Some(3), None).is_ok()).await;
    let st = core.status_of("digits", Some(3), None).unwrap();
    let v3 = &st.model_version_status[0];
    assert_eq!(
        v3.state,
        teeserve_wire::tensorflow::serving::model_version_status::State::End as i32
    );
    assert!(v3
        .status
        .as_ref()
        .unwrap()
        .error_message
        .contains("not an ONNX model"));
    // Version 1 keeps serving.
    let mut c = rest(&s).await;
    let (stc, v) = post(
        &mut c,
        "/v1/models/digits:predict",
        json!({"instances": [vec![0.0; 64]]}),
    )
    .await;
    assert_eq!(stc, 200, "{v}");
    let (_, status) = get(&mut c, "/v1/models/digits").await;
    assert_eq!(status["model_version_status"][0]["version"], "3");
    assert_eq!(status["model_version_status"][0]["state"], "END");
    let mut g = teeserve_wire::tensorflow::serving::model_service_client::ModelServiceClient::new(
        teeserve_client::requester::grpc_channel(
            &s.grpc_addr.unwrap().to_string(),
            None,
            "127.0.0.1",
        )
        .await
        .unwrap(),
    );
    let r = g
        .get_model_status(GetModelStatusRequest {
            model_spec: spec("digits", Some(1), None, ""),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.model_version_status[0].state, 30);
}

#[tokio::test]
async fn config_file_labels_metadata_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let b = base(dir.path());
    std::fs::create_dir_all(b.join("2")).unwrap();
    std::fs::write(b.join("2/model.onnx"), model_bytes()).unwrap();
    let cfg = dir.path().join("models.config");
    std::fs::write(
        &cfg,
        format!(
            "model_config_list {{ config {{ name: 'digits' base_path: '{}' model_platform: 'onnx' model_version_policy {{ all {{}} }} version_labels {{ key: 'stable' value: 1 }} version_labels {{ key: 'canary' value: 2 }} }} }}",
            b.display()
        ),
    )
    .unwrap();
    let monitoring = dir.path().join("monitoring.config");
    std::fs::write(&monitoring, "prometheus_config { enable: true }\n").unwrap();
    let mut o = options(&b);
    o.model_base_path = None;
    o.model_config_file = Some(cfg);
    o.monitoring_config_file = Some(monitoring);
    let s = start(o).await;
    let mut c = rest(&s).await;
    let (st, v) = get(&mut c, "/v1/models/digits/labels/stable/metadata").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["model_spec"]["version"], "1");
    let sig = &v["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(sig["inputs"]["pixels"]["dtype"], "DT_FLOAT");
    assert_eq!(
        sig["inputs"]["pixels"]["tensor_shape"]["dim"][0]["size"],
        "-1"
    );
    assert_eq!(sig["method_name"], "tensorflow/serving/predict");
    let (st, v) = post(
        &mut c,
        "/v1/models/digits/labels/canary:predict",
        json!({"instances": [vec![0.0; 64]]}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (_, list) = get(&mut c, "/v1/models").await;
    assert_eq!(list["models"][0]["versions"].as_array().unwrap().len(), 2);
    assert_eq!(get(&mut c, "/healthz").await.0, 200);
    assert_eq!(get(&mut c, "/readyz").await.0, 200);
    let (_, m) = get(&mut c, "/monitoring/prometheus/metrics").await;
    let m = m.as_str().unwrap();
    assert!(
        m.contains(":tensorflow:serving:request_count{model_name=\"digits\",status=\"OK\"} 1"),
        "{m}"
    );
    assert!(
        m.contains(":tensorflow:serving:request_latency_bucket"),
        "{m}"
    );
    // gRPC health and GetModelMetadata (SignatureDefMap packed in Any).
    let ch = teeserve_client::requester::grpc_channel(
        &s.grpc_addr.unwrap().to_string(),
        None,
        "127.0.0.1",
    )
    .await
    .unwrap();
    let mut h = teeserve_wire::health::health_client::HealthClient::new(ch.clone());
    let r = h
        .check(teeserve_wire::health::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, 1);
    let mut conn = Connection::open(&s.grpc_addr.unwrap().to_string(), None, "127.0.0.1", false)
        .await
        .unwrap();
    let sig = conn
        .signature(&RequestTarget {
            model: "digits".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(sig.inputs[0].name, "pixels");
    // Classify fits the digits model (one float input [batch, 64]).
    let (st, v) = post(
        &mut c,
        "/v1/models/digits:classify",
        json!({"examples": [{"x": vec![0.0; 64]}]}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["results"][0].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn sealed_models_load_with_the_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("digits");
    std::fs::create_dir_all(b.join("1")).unwrap();
    std::fs::create_dir_all(b.join("2")).unwrap();
    let key = teeserve_seal::SealKey::generate(32).unwrap();
    std::fs::write(dir.path().join("model.key"), key.bytes()).unwrap();
    let m = model_bytes();
    let seal = |name: &str| {
        let mut out = Vec::new();
        teeserve_seal::stream::seal(
            &key,
            name,
            m.len() as u64,
            &m[..],
            &mut out,
            &Default::default(),
        )
        .unwrap();
        out
    };
    std::fs::write(b.join("1/model.onnx.sealed"), seal("digits/1/model.onnx")).unwrap();
    // A file sealed for version 1, moved to version 2: refused.
    std::fs::write(b.join("2/model.onnx.sealed"), seal("digits/1/model.onnx")).unwrap();
    let mut o = options(&b);
    o.model_key_file = Some(dir.path().join("model.key"));
    let s = start(o.clone()).await;
    let st = s.core.status_of("digits", Some(2), None).unwrap();
    assert!(st.model_version_status[0]
        .status
        .as_ref()
        .unwrap()
        .error_message
        .contains("cannot be moved to another model or version"));
    assert!(s.core.resolve("digits", Some(1), None).is_ok());
    s.shutdown().await;
    // Without the key nothing loads, so (as TF Serving) the server does not start, and says why.
    o.model_key_file = None;
    o.port = free_port();
    o.rest_api_port = free_port();
    let e = Server::start(o, None).await.err().unwrap();
    assert!(matches!(e, teeserve_serving::ServeError::Models(_)), "{e}");
    assert!(e.to_string().contains("model digits did not load"), "{e}");
}

#[tokio::test]
async fn metrics_are_off_by_default_and_can_be_restricted_to_clients_with_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let b = base(dir.path());
    const METRICS: &str = "/monitoring/prometheus/metrics";
    // No monitoring config: no metrics, as TF Serving.
    let s = start(options(&b)).await;
    let (st, m) = get(&mut rest(&s).await, METRICS).await;
    assert_ne!(st, 200, "{m}");
    assert!(!m.to_string().contains(":tensorflow:serving"), "{m}");

    // Enabled, and restricted to clients with a certificate of the monitoring CA: over TLS,
    // a requester without a certificate is served the model but not the metrics.
    let ca = teeserve_tls::make_ca("server CA").unwrap();
    let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
    let srv = teeserve_tls::issue(&ca, "server", &names, false).unwrap();
    let monitoring_ca = teeserve_tls::make_ca("monitoring CA").unwrap();
    let prometheus = teeserve_tls::issue(&monitoring_ca, "prometheus", &[], true).unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let mut o = options(&b);
    o.monitoring_config_file = Some(file(
        "monitoring.config",
        "prometheus_config { enable: true }\n",
    ));
    o.tls = teeserve_serving::TlsOptions {
        cert: Some(file("server.pem", &srv.cert_pem)),
        key: Some(file("server.key", srv.key_pem.as_str())),
        monitoring_client_ca: Some(file("monitoring-ca.pem", &monitoring_ca.cert_pem)),
        ..Default::default()
    };
    let s = start(o.clone()).await;
    let addr = s.rest_addr.unwrap().to_string();
    let verifier = ca_verifier(ca.cert_pem.as_bytes()).unwrap();
    let connect = |identity| {
        let tls = client_config(verifier.clone(), identity, &[b"http/1.1"]).unwrap();
        RestClient::connect(&addr, Some(Arc::new(tls)), "localhost")
    };
    let mut anonymous = connect(None).await.unwrap();
    let (st, v) = post(
        &mut anonymous,
        "/v1/models/digits:predict",
        json!({"instances": [vec![0.0; 64]]}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = get(&mut anonymous, METRICS).await;
    assert_eq!(st, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("certificate"), "{v}");
    let mut monitor = connect(Some((
        teeserve_tls::certs_from_pem(prometheus.cert_pem.as_bytes()).unwrap(),
        teeserve_tls::key_from_pem(prometheus.key_pem.as_bytes()).unwrap(),
    )))
    .await
    .unwrap();
    let (st, m) = get(&mut monitor, METRICS).await;
    assert_eq!(st, 200, "{m}");
    assert!(
        m.as_str()
            .unwrap()
            .contains(":tensorflow:serving:request_count"),
        "{m}"
    );

    // A monitoring CA with the metrics off, or without TLS, is a start-up error.
    let mut off = o.clone();
    off.monitoring_config_file = None;
    let e = Server::start(off, None).await.err().unwrap();
    assert!(e.to_string().contains("monitoring_config_file"), "{e}");
    let mut plain = o;
    plain.tls.cert = None;
    plain.tls.key = None;
    plain.tls.insecure = true;
    let e = Server::start(plain, None).await.err().unwrap();
    assert!(e.to_string().contains("TLS"), "{e}");
}

#[tokio::test]
async fn tls_and_mtls_on_grpc_and_rest() {
    let dir = tempfile::tempdir().unwrap();
    let b = base(dir.path());
    let ca = teeserve_tls::make_ca("test CA").unwrap();
    let srv = teeserve_tls::issue(
        &ca,
        "server",
        &["localhost".into(), "127.0.0.1".into()],
        false,
    )
    .unwrap();
    let cli = teeserve_tls::issue(&ca, "client", &[], true).unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
    // TF Serving's SSLConfig, with client_verify.
    let ssl = format!(
        "server_key: {:?}\nserver_cert: {:?}\ncustom_ca: {:?}\nclient_verify: true\n",
        srv.key_pem.as_str(),
        srv.cert_pem,
        ca.cert_pem
    );
    std::fs::write(dir.path().join("ssl.cfg"), ssl).unwrap();
    let mut o = options(&b);
    o.tls = teeserve_serving::TlsOptions {
        ssl_config_file: Some(dir.path().join("ssl.cfg")),
        ..Default::default()
    };
    let s = start(o).await;
    let verifier = ca_verifier(ca.cert_pem.as_bytes()).unwrap();
    let identity = || {
        Some((
            teeserve_tls::certs_from_pem(cli.cert_pem.as_bytes()).unwrap(),
            teeserve_tls::key_from_pem(cli.key_pem.as_bytes()).unwrap(),
        ))
    };
    for rest_api in [false, true] {
        let addr = if rest_api { s.rest_addr } else { s.grpc_addr }
            .unwrap()
            .to_string();
        let alpn: &[&[u8]] = if rest_api { &[b"http/1.1"] } else { &[b"h2"] };
        let with = Arc::new(client_config(verifier.clone(), identity(), alpn).unwrap());
        let mut conn = Connection::open(&addr, Some(with), "localhost", rest_api)
            .await
            .unwrap();
        let t = RequestTarget {
            model: "digits".into(),
            ..Default::default()
        };
        let p = conn
            .predict(&t, &[("pixels".into(), rows(1))])
            .await
            .unwrap();
        assert!(p.outputs.contains_key("class"));
        let without = Arc::new(client_config(verifier.clone(), None, alpn).unwrap());
        let r = async {
            let mut conn = Connection::open(&addr, Some(without), "localhost", rest_api).await?;
            conn.predict(&t, &[("pixels".into(), rows(1))]).await
        }
        .await;
        assert!(
            r.is_err(),
            "served without a client certificate (rest = {rest_api})"
        );
    }
}

#[tokio::test]
async fn model_config_file_is_reread() {
    let dir = tempfile::tempdir().unwrap();
    let b = base(dir.path());
    let cfg = dir.path().join("models.config");
    let write = |names: &[&str]| {
        let body: String = names
            .iter()
            .map(|n| format!("config {{ name: '{n}' base_path: '{}' }}\n", b.display()))
            .collect();
        std::fs::write(&cfg, format!("model_config_list {{\n{body}}}\n")).unwrap();
    };
    write(&["digits"]);
    let mut o = options(&b);
    o.model_base_path = None;
    o.model_config_file = Some(cfg.clone());
    o.model_config_file_poll_wait_seconds = 1;
    let s = start(o).await;
    let core = s.core.clone();
    assert!(core.resolve("other", None, None).is_err());
    write(&["digits", "other"]);
    wait_for(|| core.resolve("other", None, None).is_ok()).await;
    write(&["other"]);
    wait_for(|| core.resolve("digits", None, None).is_err()).await;
    assert!(core.resolve("other", None, None).is_ok());
}
