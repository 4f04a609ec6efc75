//! Latency and throughput of one model, for bench/serving.sh and bench/tf_engine.sh.
//!
//! Engine only, in process (one inference at a time, one thread, called from a thread of its
//! own as `serve` calls it from a worker):
//!     model_bench engine MODEL.onnx tract|onnxruntime=LIB BATCH REPS
//!     model_bench engine SAVEDMODEL_DIR tensorflow=LIB BATCH REPS
//! With `paced` for REPS, one inference per line read on standard input, its milliseconds
//! written as a line, so that a caller can interleave it with its own reference call by call;
//! a line holding a number runs that batch size instead of BATCH.
//! A requester against a running server (gRPC, or REST with `--rest`), over TLS with CA.pem:
//!     model_bench client HOST:PORT CA.pem MODEL INPUT BATCH CONCURRENCY SECONDS [--rest]
//! Both print one JSON line: p50/p90/p99 in milliseconds, count, and rate per second.
//! With `paced` for SECONDS, the client sends one request per line read on standard input on
//! one connection (of the batch size the line holds, if it holds one), and writes its
//! milliseconds as a line.
//! Inputs are pseudo-random values in [0, 1) shaped like an image batch (BATCH x 224 x 224 x 3
//! unless the model says otherwise). TEESERVE_BENCH_RECEIPT=1 asks for a receipt of every answer,
//! =alternate of one of each pair, the first or the second in turn (and reports each half's p50
//! and the pairs' median ratio), =control pairs the same way with no receipt asked (the method's
//! own error).
//! TEESERVE_BENCH_ENCODED=once (gRPC): the request is encoded once and each call sends those
//! bytes as they are, as a load tool with a fixed body (h2load) does, so that the requester's own
//! work on the shared cores is the transport alone; by default every call encodes its tensor, as
//! a requester's client library does.
use std::sync::Arc;
use std::time::{Duration, Instant};

use teeserve_client::requester::{Connection, RequestTarget};
use teeserve_client::{ca_verifier, client_config};
use teeserve_serving::engine::{EngineChoice, LoadedModel, TensorFlowEngine, TensorFlowOptions};
use teeserve_tensor::{Data, Tensor};

fn input(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let data = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    Tensor {
        shape: shape.to_vec(),
        data: Data::F32(data),
    }
}

/// The batch size a `paced` line asks for: the number it holds, or `default` if it is blank.
fn line_batch(line: &str, default: usize) -> Result<usize, String> {
    match line.trim() {
        "" => Ok(default),
        b => b.parse().map_err(|e| format!("batch {b:?}: {e}")),
    }
}

fn report(mut ms: Vec<f64>, elapsed: Duration) -> String {
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    format!(
        "{{\"p50_ms\": {:.3}, \"p90_ms\": {:.3}, \"p99_ms\": {:.3}, \"count\": {}, \"per_second\": {:.2}}}",
        q(0.5),
        q(0.9),
        q(0.99),
        ms.len(),
        ms.len() as f64 / elapsed.as_secs_f64()
    )
}

fn engine(args: &[String]) -> Result<(), String> {
    let [model, which, batch, reps] = args else {
        return Err("engine MODEL tract|onnxruntime=LIB|tensorflow=LIB BATCH REPS".into());
    };
    let batch: usize = batch.parse().map_err(|e| format!("BATCH: {e}"))?;
    let paced = reps == "paced";
    let reps: usize = if paced {
        0
    } else {
        reps.parse().map_err(|e| format!("REPS: {e}"))?
    };
    let onnx = |choice: EngineChoice| {
        let bytes = std::fs::read(model).map_err(|e| format!("{model}: {e}"))?;
        choice
            .start(1)
            .and_then(|e| e.load(&bytes))
            .map_err(|e| e.to_string())
    };
    let m: Arc<dyn LoadedModel> = match which.split_once('=') {
        Some(("onnxruntime", lib)) => onnx(EngineChoice::OnnxRuntime {
            lib: lib.into(),
            intra_op_threads: 0,
        })?,
        None if which == "tract" => onnx(EngineChoice::Tract)?,
        // One thread per operation and one operation at a time, as the Python reference runs.
        Some(("tensorflow", lib)) => {
            let mut options = TensorFlowOptions::new(lib.into());
            options.intra_op_parallelism = 1;
            options.inter_op_parallelism = 1;
            TensorFlowEngine::new(options)
                .and_then(|e| e.load_dir(std::path::Path::new(model)))
                .map_err(|e| e.to_string())?
        }
        _ => return Err(format!("unknown engine {which}")),
    };
    let spec = &m
        .signatures()
        .get("")
        .ok_or("no serving_default signature")?
        .inputs[0];
    let shape = |batch: usize| -> Vec<usize> {
        spec.shape
            .iter()
            .enumerate()
            .map(|(i, &d)| match (i, d) {
                (0, _) => batch,
                (_, d) if d > 0 => d as usize,
                (1 | 2, _) => 224,
                _ => 3,
            })
            .collect()
    };
    let x = input(&shape(batch));
    m.run("", vec![x.clone()]).map_err(|e| e.to_string())?; // warm-up
    if paced {
        use std::io::{BufRead, Write};
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        let mut inputs = std::collections::HashMap::from([(batch, x)]);
        for line in std::io::stdin().lock().lines() {
            let b = line_batch(&line.map_err(|e| e.to_string())?, batch)?;
            let x = inputs.entry(b).or_insert_with(|| input(&shape(b)));
            let t = Instant::now();
            m.run("", vec![x.clone()]).map_err(|e| e.to_string())?;
            writeln!(out, "{:.3}", t.elapsed().as_secs_f64() * 1e3).map_err(|e| e.to_string())?;
            out.flush().map_err(|e| e.to_string())?;
        }
        return Ok(());
    }
    let start = Instant::now();
    let mut ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        m.run("", vec![x.clone()]).map_err(|e| e.to_string())?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!("{}", report(ms, start.elapsed()));
    Ok(())
}

/// One gRPC Predict whose message (`framed`: the 5-byte gRPC prefix and the encoded
/// PredictRequest) was encoded once: sent as it is on `channel`, and the answer decoded into
/// tensors as [`Connection::predict_proto`]'s are.
async fn send_encoded(
    channel: &mut tonic::transport::Channel,
    addr: &str,
    framed: &bytes::Bytes,
    receipt: bool,
) -> Result<(), String> {
    use http_body_util::BodyExt as _;
    use prost::Message as _;
    use tonic::codegen::Service as _;
    let mut req = hyper::Request::post(format!(
        "https://{addr}/tensorflow.serving.PredictionService/Predict"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers");
    if receipt {
        req = req.header("x-teeserve-receipt", "1");
    }
    let req = req
        .body(tonic::body::Body::new(http_body_util::Full::new(
            framed.clone(),
        )))
        .map_err(|e| e.to_string())?;
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .map_err(|e| e.to_string())?;
    let (parts, body) = channel
        .call(req)
        .await
        .map_err(|e| e.to_string())?
        .into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?;
    // The status is in the trailers, or in the head of an answer without a message.
    let mut meta = parts.headers;
    meta.extend(body.trailers().cloned().unwrap_or_default());
    let text = |k: &str| {
        meta.get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    if text("grpc-status") != "0" {
        return Err(format!(
            "gRPC status {:?}: {}",
            text("grpc-status"),
            text("grpc-message")
        ));
    }
    if receipt && !meta.contains_key("x-teeserve-receipt-bin") {
        return Err("the answer came without a receipt".into());
    }
    let bytes = body.to_bytes();
    let message = bytes
        .get(5..)
        .ok_or("an answer shorter than its gRPC prefix")?;
    let r = teeserve_wire::tensorflow::serving::PredictResponse::decode(message)
        .map_err(|e| format!("PredictResponse: {e}"))?;
    for p in r.outputs.values() {
        Tensor::from_proto(p).map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn client(args: &[String]) -> Result<(), String> {
    let rest = args.iter().any(|a| a == "--rest");
    let args: Vec<&String> = args.iter().filter(|a| *a != "--rest").collect();
    let [addr, ca, model, input_name, batch, conc, secs] = args[..] else {
        return Err(
            "client HOST:PORT CA.pem MODEL INPUT BATCH CONCURRENCY SECONDS [--rest]".into(),
        );
    };
    let batch: usize = batch.parse().map_err(|e| format!("BATCH: {e}"))?;
    let conc: usize = conc.parse().map_err(|e| format!("CONCURRENCY: {e}"))?;
    let paced = secs == "paced";
    let secs: f64 = if paced {
        0.0
    } else {
        secs.parse().map_err(|e| format!("SECONDS: {e}"))?
    };
    let ca = std::fs::read(ca).map_err(|e| format!("{ca}: {e}"))?;
    let alpn: &[&[u8]] = if rest { &[b"http/1.1"] } else { &[b"h2"] };
    let cfg = Arc::new(client_config(ca_verifier(&ca)?, None, alpn)?);
    let target = RequestTarget {
        model: model.clone(),
        ..Default::default()
    };
    let x = input(&[batch, 224, 224, 3]);
    // gRPC: the answer is decoded into tensors, as `tf.make_ndarray` does for a Python requester;
    // REST: into JSON values.
    async fn send(
        c: &mut Connection,
        rest: bool,
        t: &RequestTarget,
        inputs: &[(String, Tensor)],
    ) -> Result<(), String> {
        if rest {
            return c.predict(t, inputs).await.map(drop).map_err(String::from);
        }
        let r = c.predict_proto(t, inputs).await?;
        for p in r.outputs.values() {
            Tensor::from_proto(p).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
    // TEESERVE_BENCH_TRANSPORT=1: the model name is unknown to the server, so a request measures
    // only carrying the input there and the error back.
    let transport_only = std::env::var_os("TEESERVE_BENCH_TRANSPORT").is_some();
    // Warm-up: one request per connection, not timed.
    let mut conns = Vec::new();
    for _ in 0..conc {
        let mut c = Connection::open(addr, Some(cfg.clone()), "127.0.0.1", rest).await?;
        let r = send(&mut c, rest, &target, &[(input_name.clone(), x.clone())]).await;
        if !transport_only {
            r?;
        }
        conns.push(c);
    }
    if paced {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let mut c = conns.pop().ok_or("CONCURRENCY must be 1 or more")?;
        let mut batches = std::collections::HashMap::from([(batch, x)]);
        let mut out = tokio::io::stdout();
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        out.write_all(b"ready\n").await.map_err(|e| e.to_string())?;
        out.flush().await.map_err(|e| e.to_string())?;
        while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
            let b = line_batch(&line, batch)?;
            let x = batches.entry(b).or_insert_with(|| input(&[b, 224, 224, 3]));
            let inputs = [(input_name.clone(), x.clone())];
            let t0 = Instant::now();
            send(&mut c, rest, &target, &inputs).await?;
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            out.write_all(format!("{ms:.3}\n").as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            out.flush().await.map_err(|e| e.to_string())?;
        }
        return Ok(());
    }
    // TEESERVE_BENCH_RECEIPT=1: every request asks for a receipt; =alternate: each connection
    // sends pairs of a request without one and a request with one, and the report adds the p50
    // of each and the median of the pairs' ratios (a pair is two requests a moment apart, so a
    // drift in the machine's speed hits both). Which of a pair goes first changes from one pair
    // to the next, so that whatever the second request of a pair pays (or saves) for being
    // second counts on both sides. =control: the same pairs, but neither request asks for a
    // receipt: the ratios then show what the method itself gives for no difference.
    let receipts = std::env::var("TEESERVE_BENCH_RECEIPT").unwrap_or_default();
    if !["", "1", "alternate", "control"].contains(&receipts.as_str()) {
        return Err(format!(
            "TEESERVE_BENCH_RECEIPT={receipts:?}: give 1, alternate or control (or leave it unset)"
        ));
    }
    let control = receipts == "control";
    let alternate = receipts == "alternate" || control;
    let with_receipt = RequestTarget {
        receipt: true,
        ..target.clone()
    };
    let target = if receipts == "1" {
        with_receipt.clone()
    } else {
        target
    };
    let encoded = match std::env::var("TEESERVE_BENCH_ENCODED")
        .unwrap_or_default()
        .as_str()
    {
        "" => None,
        "once" if !rest => {
            use prost::Message as _;
            let request = teeserve_wire::tensorflow::serving::PredictRequest {
                model_spec: Some(teeserve_wire::tensorflow::serving::ModelSpec {
                    name: model.clone(),
                    ..Default::default()
                }),
                inputs: [(input_name.clone(), x.to_proto(true))].into(),
                output_filter: Vec::new(),
            }
            .encode_to_vec();
            let mut framed = vec![0u8];
            framed.extend_from_slice(&(request.len() as u32).to_be_bytes());
            framed.extend_from_slice(&request);
            Some(bytes::Bytes::from(framed))
        }
        other => {
            return Err(format!(
                "TEESERVE_BENCH_ENCODED={other:?}: give once (gRPC only), or leave it unset"
            ))
        }
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let (t, inputs) = (target.clone(), vec![(input_name.clone(), x.clone())]);
            let with_receipt = with_receipt.clone();
            let (encoded, addr) = (encoded.clone(), addr.clone());
            tokio::spawn(async move {
                // (milliseconds, asked for a receipt)
                let mut ms = Vec::new();
                while Instant::now() < deadline {
                    // The pair's second in even pairs, its first in odd ones.
                    let receipt = alternate && (ms.len() % 2 == 1) != ((ms.len() / 2) % 2 == 1);
                    // Counted as the receipt side, asked for only when not a control run.
                    let asks = receipt && !control;
                    let t0 = Instant::now();
                    let r = match (&encoded, &mut c) {
                        (Some(framed), Connection::Grpc(_, channel)) => {
                            send_encoded(channel, &addr, framed, asks || t.receipt).await
                        }
                        _ => {
                            send(&mut c, rest, if asks { &with_receipt } else { &t }, &inputs).await
                        }
                    };
                    if !transport_only {
                        r?;
                    }
                    ms.push((t0.elapsed().as_secs_f64() * 1e3, receipt));
                }
                Ok::<_, String>(ms)
            })
        })
        .collect();
    let (mut ms, mut plain, mut receipt, mut ratios) = (vec![], vec![], vec![], vec![]);
    for t in tasks {
        let runs = t.await.map_err(|e| e.to_string())??;
        for pair in runs.chunks_exact(2).filter(|_| alternate) {
            let (with, without) = if pair[0].1 {
                (pair[0].0, pair[1].0)
            } else {
                (pair[1].0, pair[0].0)
            };
            ratios.push(with / without);
        }
        for (m, r) in runs {
            ms.push(m);
            if r { &mut receipt } else { &mut plain }.push(m);
        }
    }
    let elapsed = start.elapsed();
    if !alternate {
        println!("{}", report(ms, elapsed));
        return Ok(());
    }
    if plain.is_empty() || receipt.is_empty() {
        return Err("too short a run: no pair of requests was made".into());
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let all = report(ms, elapsed);
    println!(
        "{}, \"p50_ms_plain\": {:.3}, \"p50_ms_receipt\": {:.3}, \"pairs\": {}, \"pair_ratio_median\": {:.4}}}",
        all.trim_end_matches('}'),
        median(plain),
        median(receipt),
        ratios.len(),
        median(ratios)
    );
    Ok(())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        // On a thread of its own, as `serve` runs inferences on its workers.
        Some("engine") => {
            let args = args[1..].to_vec();
            std::thread::spawn(move || engine(&args))
                .join()
                .unwrap_or_else(|_| Err("the engine's thread panicked".into()))
        }
        Some("client") => client(&args[1..]).await,
        _ => Err("usage: model_bench engine ... | model_bench client ...".into()),
    };
    if let Err(e) = r {
        eprintln!("model_bench: {e}");
        std::process::exit(1);
    }
}
