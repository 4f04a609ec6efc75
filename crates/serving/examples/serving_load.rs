//! Throughput of the digits model: engine only (one inference per core, in process), then
//! gRPC+TLS and REST+TLS end to end at concurrency 32 on loopback.
//!
//!     cargo run --release -p teeserve-serving --example serving_load [-- SECONDS]
use std::sync::Arc;
use std::time::{Duration, Instant};

use teeserve_client::requester::{Connection, RequestTarget};
use teeserve_client::{ca_verifier, client_config};
use teeserve_serving::engine::{Engine, TractEngine};
use teeserve_serving::{ServeOptions, Server, TlsOptions};
use teeserve_tensor as tensor;

fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> u16 {
    teeserve_serving::free_loopback_port().unwrap()
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

/// `conc` requesters, each on its own connection sending one held-out row at a time for `secs`
/// seconds; returns every request's latency in ms.
async fn load(
    addr: &str,
    cfg: &Arc<rustls::ClientConfig>,
    rest: bool,
    conc: usize,
    secs: u64,
    pixels: &tensor::Tensor,
) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..conc {
        let mut c = Connection::open(addr, Some(cfg.clone()), "127.0.0.1", rest).await?;
        let x = pixels.slice_rows(i, i + 1);
        tasks.push(tokio::spawn(async move {
            let t = RequestTarget {
                model: "digits".into(),
                ..Default::default()
            };
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let inputs = [("pixels".into(), x.clone())];
                if rest {
                    c.predict(&t, &inputs).await?;
                } else {
                    for p in c.predict_proto(&t, &inputs).await?.outputs.values() {
                        tensor::Tensor::from_proto(p).map_err(|e| e.to_string())?;
                    }
                }
                lat.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            Ok::<_, String>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    Ok(lat)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let model = std::fs::read(repo().join("models/digits/1/model.onnx"))?;
    let pixels = tensor::from_npy(&std::fs::read(
        repo().join("testdata/digits/heldout-pixels.npy"),
    )?)?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);

    // Engine only: one single-threaded inference per core.
    let m = TractEngine.load(&model)?;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let handles: Vec<_> = (0..cores)
        .map(|_| {
            let (m, x) = (m.clone(), pixels.slice_rows(0, 1));
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    m.run("", vec![x.clone()]).unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let engine: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let engine_rate = engine as f64 / secs as f64;
    println!("engine only (tract, {cores} threads, batch 1): {engine_rate:.0} inferences/s");

    let dir = tempfile::tempdir()?;
    let base = dir.path().join("digits");
    std::fs::create_dir_all(base.join("1"))?;
    std::fs::write(base.join("1/model.onnx"), &model)?;
    let ca = teeserve_tls::make_ca("bench CA")?;
    let srv = teeserve_tls::issue(&ca, "server", &["127.0.0.1".into()], false)?;
    std::fs::write(dir.path().join("s.pem"), &srv.cert_pem)?;
    std::fs::write(dir.path().join("s.key"), srv.key_pem.as_bytes())?;
    let o = ServeOptions {
        port: free_port(),
        rest_api_port: free_port(),
        grpc_bind: "127.0.0.1".into(),
        rest_bind: "127.0.0.1".into(),
        model_name: "digits".into(),
        model_base_path: Some(base),
        file_system_poll_wait_seconds: 0,
        tls: TlsOptions {
            cert: Some(dir.path().join("s.pem")),
            key: Some(dir.path().join("s.key")),
            ..Default::default()
        },
        ..Default::default()
    };
    let batching = dir.path().join("batching.txt");
    std::fs::write(&batching, "max_batch_size { value: 32 } batch_timeout_micros { value: 200 } num_batch_threads { value: 2 } max_enqueued_batches { value: 64 }")?;
    let mut ob = o.clone();
    ob.port = free_port();
    ob.rest_api_port = free_port();
    ob.enable_batching = true;
    ob.batching_parameters_file = Some(batching);
    let s = Server::start(o, None).await?;
    let sb = Server::start(ob, None).await?;
    let verifier = ca_verifier(ca.cert_pem.as_bytes())?;
    let h2 = Arc::new(client_config(verifier.clone(), None, &[b"h2"])?);
    let http1 = Arc::new(client_config(verifier, None, &[b"http/1.1"])?);
    for (label, addr) in [
        ("gRPC+TLS without batching", s.grpc_addr.unwrap()),
        (
            "gRPC+TLS with --enable_batching (max 32, 200 us)",
            sb.grpc_addr.unwrap(),
        ),
    ] {
        let lat = load(&addr.to_string(), &h2, false, 16, secs, &pixels).await?;
        println!(
            "{label}, concurrency 16: {:.0} requests/s",
            lat.len() as f64 / secs as f64
        );
    }
    sb.shutdown().await;
    for rest in [false, true] {
        let (addr, cfg) = if rest {
            (s.rest_addr, &http1)
        } else {
            (s.grpc_addr, &h2)
        };
        let mut lat = load(&addr.unwrap().to_string(), cfg, rest, 32, secs, &pixels).await?;
        let rate = lat.len() as f64 / secs as f64;
        println!(
            "{} end to end, concurrency 32, batch 1: {rate:.0} requests/s ({:.0}% of engine only), p50 {:.2} ms, p99 {:.2} ms",
            if rest { "REST+TLS" } else { "gRPC+TLS" },
            100.0 * rate / engine_rate,
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99)
        );
    }
    s.shutdown().await;
    Ok(())
}
