//! One server shared by strangers, on loopback: one peer's long inferences do not make another
//! peer's quick ones queue behind them.
mod onnx_graph;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use teeserve_serving::{ServeOptions, Server};
use teeserve_tensor::{Data, Tensor};
use teeserve_wire::tensorflow::serving::{
    prediction_service_client::PredictionServiceClient, ModelSpec, PredictRequest,
};
use tract_onnx::pb::{tensor_proto::DataType, GraphProto, TensorProto};

/// Width of the model's input and output rows.
const WIDTH: usize = 16;
/// Width inside it.
const INNER: usize = 128;

/// A square matrix product repeated: tens of microseconds for one row (its 64 KB of weights
/// stay in the cache), tens of milliseconds for thousands; the rows in and out are narrow, so
/// that the time of a large request is its inference, not its decoding.
fn products() -> Vec<u8> {
    let matrix = |name: &str, rows: usize, cols: usize| TensorProto {
        name: name.into(),
        dims: vec![rows as i64, cols as i64],
        data_type: DataType::Float as i32,
        float_data: vec![1.0 / rows as f32; rows * cols],
        ..Default::default()
    };
    let product = |a: &str, b: &str, out: &str| onnx_graph::node("MatMul", &[a, b], out, vec![]);
    let mut node = vec![product("x", "into", "h0")];
    for k in 0..2 {
        node.push(product(&format!("h{k}"), "w", &format!("h{}", k + 1)));
    }
    node.push(product("h2", "out", "y"));
    let value = |name: &str| onnx_graph::value(name, DataType::Float, &[None, Some(WIDTH as i64)]);
    onnx_graph::model(GraphProto {
        name: "products".into(),
        node,
        initializer: vec![
            matrix("into", WIDTH, INNER),
            matrix("w", INNER, INNER),
            matrix("out", INNER, WIDTH),
        ],
        input: vec![value("x")],
        output: vec![value("y")],
        ..Default::default()
    })
}

async fn start(dir: &Path) -> Server {
    let base = dir.join("products");
    std::fs::create_dir_all(base.join("1")).unwrap();
    std::fs::write(base.join("1/model.onnx"), products()).unwrap();
    let mut o = ServeOptions {
        grpc_bind: "127.0.0.1".into(),
        rest_bind: "127.0.0.1".into(),
        model_name: "products".into(),
        model_base_path: Some(base),
        file_system_poll_wait_seconds: 0,
        tls: teeserve_serving::TlsOptions {
            insecure: true,
            ..Default::default()
        },
        ..Default::default()
    };
    // One inference thread: two inferences in flight fill it (one running, one queued).
    o.core.workers = 1;
    for _ in 0..5 {
        o.port = teeserve_serving::free_loopback_port().unwrap();
        o.rest_api_port = teeserve_serving::free_loopback_port().unwrap();
        match Server::start(o.clone(), None).await {
            Err(teeserve_serving::ServeError::Bind { .. }) => continue,
            r => return r.unwrap(),
        }
    }
    panic!("no free ports in 5 tries");
}

fn rows(n: usize) -> PredictRequest {
    PredictRequest {
        model_spec: Some(ModelSpec {
            name: "products".into(),
            ..Default::default()
        }),
        inputs: [(
            "x".to_owned(),
            Tensor::new(vec![n, WIDTH], Data::F32(vec![1.0; n * WIDTH]))
                .unwrap()
                .to_proto(true),
        )]
        .into_iter()
        .collect(),
        output_filter: vec![],
    }
}

async fn client(s: &Server) -> PredictionServiceClient<tonic::transport::Channel> {
    let addr = s.grpc_addr.unwrap().to_string();
    let channel = teeserve_client::requester::grpc_channel(&addr, None, "127.0.0.1")
        .await
        .unwrap();
    PredictionServiceClient::new(channel).max_decoding_message_size(usize::MAX)
}

/// A stranger's Predicts of `rows` rows have shown the server how long they take; a peer's
/// Predict of 131,072 rows takes far longer, and then two more are in flight (the one
/// inference thread running one, one queued behind it). The stranger's next Predict must be
/// answered before either.
async fn a_strangers_predict_is_not_queued_behind_a_peers_long_ones(rows_of_stranger: usize) {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut stranger = client(&server).await;
    for _ in 0..60 {
        stranger.predict(rows(rows_of_stranger)).await.unwrap();
    }
    let peer = client(&server).await;
    let t = std::time::Instant::now();
    peer.clone().predict(rows(131_072)).await.unwrap();
    let long = t.elapsed();
    let done = Arc::new(AtomicUsize::new(0));
    let in_flight: Vec<_> = (0..2)
        .map(|_| {
            let (mut peer, done) = (peer.clone(), done.clone());
            tokio::spawn(async move {
                peer.predict(rows(131_072)).await.unwrap();
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    // Until the first is in its run: half of the whole time of one, whose run is the most of it.
    tokio::time::sleep(long / 2).await;
    stranger.predict(rows(rows_of_stranger)).await.unwrap();
    assert_eq!(
        done.load(Ordering::SeqCst),
        0,
        "the stranger's Predict of {rows_of_stranger} rows waited for the peer's long ones (one took {long:?})"
    );
    for h in in_flight {
        tokio::time::timeout(Duration::from_secs(60), h)
            .await
            .unwrap()
            .unwrap();
    }
}

/// One row takes microseconds: its run is still known to be quick and runs at once on an I/O
/// thread. With one average over all runs, the peer's long runs made it look slow, and it was
/// queued on the inference thread behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_long_inferences_do_not_queue_a_strangers_quick_one_behind_them() {
    a_strangers_predict_is_not_queued_behind_a_peers_long_ones(1).await;
}

/// 64 rows take a tenth of a millisecond or two: too long for an I/O thread, short enough for
/// the inference pool's short lane, which runs it while the peer's long ones hold the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_long_inferences_do_not_queue_a_strangers_short_one_behind_them() {
    a_strangers_predict_is_not_queued_behind_a_peers_long_ones(64).await;
}
