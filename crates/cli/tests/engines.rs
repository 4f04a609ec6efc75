//! `teeserve serve --engine`: the tract and ONNX Runtime engines behind the same APIs give the
//! same signature and the same outputs (onnxruntime's reference outputs, within 1e-4).
//!
//! ONNX Runtime is loaded from the library named by TEESERVE_ONNXRUNTIME_LIB, or from the
//! virtualenv that .ci/run creates. Without either, the tests that need the library say so and
//! pass, unless TEESERVE_REQUIRE_ONNXRUNTIME=1 (set by .ci/run) makes them fail.
mod harness;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use harness::{free_port, listen, repo, run, s, serve_command, Serve};

fn onnxruntime_lib() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TEESERVE_ONNXRUNTIME_LIB") {
        return Some(PathBuf::from(p));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let lib = std::fs::read_dir(cache.join("teeserve-pyclients/lib"))
        .ok()?
        .flatten()
        .map(|d| d.path().join("site-packages/onnxruntime/capi"))
        .find(|p| p.is_dir())?;
    std::fs::read_dir(lib)
        .ok()?
        .flatten()
        .map(|d| d.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so.1"))
        })
}

fn need_onnxruntime() -> Option<PathBuf> {
    let lib = onnxruntime_lib();
    if lib.is_none() {
        assert!(
            std::env::var("TEESERVE_REQUIRE_ONNXRUNTIME").as_deref() != Ok("1"),
            "TEESERVE_REQUIRE_ONNXRUNTIME=1 but no libonnxruntime was found (set TEESERVE_ONNXRUNTIME_LIB)"
        );
        eprintln!("skipped: no libonnxruntime (set TEESERVE_ONNXRUNTIME_LIB to run this test)");
    }
    lib
}

/// `teeserve serve` of the bundled digits model on loopback, with `extra` flags.
fn serve(extra: &[&str]) -> Serve {
    serve_model("digits", &repo().join("models/digits"), extra)
}

/// `teeserve serve` of model `name` at `base` on loopback; returns once it listens.
fn serve_model(name: &str, base: &Path, extra: &[&str]) -> Serve {
    let model = [
        "--insecure",
        "--model_name",
        name,
        "--model_base_path",
        s(base),
    ];
    let args = [&model[..], extra].concat();
    listen(
        || {
            let mut c = serve_command(&std::env::temp_dir(), &args);
            c.env_remove("TEESERVE_ONNXRUNTIME_LIB");
            c
        },
        None,
    )
    .unwrap()
}

fn http_get(addr: &str, path: &str) -> serde_json::Value {
    serde_json::from_str(&http_get_text(addr, path)).unwrap()
}

fn http_get_text(addr: &str, path: &str) -> String {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = String::new();
    c.read_to_string(&mut r).unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    r[r.find("\r\n\r\n").unwrap() + 4..].to_owned()
}

fn probabilities(out: &serde_json::Value) -> Vec<f32> {
    out["outputs"]["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter())
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn reference() -> Vec<f32> {
    let t = teeserve_tensor::from_npy(
        &std::fs::read(repo().join("testdata/digits/heldout-probabilities-onnxruntime.npy"))
            .unwrap(),
    )
    .unwrap();
    match t.data {
        teeserve_tensor::Data::F32(v) => v,
        other => panic!("reference is {other:?}"),
    }
}

fn predict(server: &str, rest: bool) -> Vec<f32> {
    let input = repo().join("testdata/digits/heldout-pixels.npy");
    let mut args = vec![
        "predict",
        "--insecure",
        "--server",
        server,
        "--model",
        "digits",
        "--input",
        s(&input),
    ];
    if rest {
        args.push("--rest");
    }
    probabilities(&run(&args).ok().json())
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: number of outputs");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "{what}: differs from onnxruntime by {worst}");
}

#[test]
fn both_engines_give_onnxruntimes_outputs_and_the_same_signature() {
    let want = reference();
    let tract = serve(&[]);
    assert_close(&predict(&tract.grpc, false), &want, "tract over gRPC");
    let Some(lib) = need_onnxruntime() else {
        return;
    };
    // The metrics are on only when a monitoring config says so.
    let monitoring = tempfile::tempdir().unwrap();
    let config = monitoring.path().join("monitoring.config");
    std::fs::write(&config, "prometheus_config { enable: true }\n").unwrap();
    let ort = serve(&[
        "--engine",
        "onnxruntime",
        "--onnxruntime-lib",
        s(&lib),
        "--monitoring_config_file",
        s(&config),
    ]);
    assert_close(&predict(&ort.grpc, false), &want, "onnxruntime over gRPC");
    assert_close(&predict(&ort.rest, true), &want, "onnxruntime over REST");
    let meta = |s: &Serve| http_get(&s.rest, "/v1/models/digits/metadata");
    assert_eq!(meta(&tract), meta(&ort), "metadata differs between engines");
    let metrics = http_get_text(&ort.rest, "/monitoring/prometheus/metrics");
    assert!(
        metrics.contains(r#"model_name="digits",API="Predict",runtime="onnxruntime""#),
        "{metrics}"
    );
}

#[test]
fn onnxruntime_engine_needs_a_loadable_library() {
    let model = repo().join("models/digits");
    let rest = free_port().to_string();
    let base = [
        "serve",
        "--insecure",
        "--port",
        "0",
        "--rest_api_port",
        &rest,
        "--rest_api_bind_address",
        "127.0.0.1",
        "--model_base_path",
        s(&model),
    ];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        run(&a).fails(2).stderr
    };
    let e = with(&["--engine", "onnxruntime"]);
    assert!(e.contains("needs --onnxruntime_lib"), "{e}");
    let e = with(&[
        "--engine",
        "onnxruntime",
        "--onnxruntime-lib",
        "/nonexistent/libonnxruntime.so",
    ]);
    assert!(
        e.contains("/nonexistent/libonnxruntime.so: no such file"),
        "{e}"
    );
    // A file that is not a shared library.
    let e = with(&[
        "--engine",
        "onnxruntime",
        "--onnxruntime-lib",
        s(&model.join("1/model.onnx")),
    ]);
    assert!(e.contains("failed to load from"), "{e}");
}

#[test]
fn onnxruntime_engine_reports_a_model_it_cannot_load() {
    let Some(lib) = need_onnxruntime() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("broken");
    std::fs::create_dir_all(base.join("1")).unwrap();
    std::fs::write(base.join("1/model.onnx"), b"this is not an ONNX model").unwrap();
    // As TF Serving: a model none of whose versions loads stops the start, with the error.
    let (grpc, rest) = (free_port().to_string(), free_port().to_string());
    let e = run(&[
        "serve",
        "--insecure",
        "--port",
        &grpc,
        "--rest_api_port",
        &rest,
        "--model_name",
        "broken",
        "--model_base_path",
        s(&base),
        "--engine",
        "onnxruntime",
        "--onnxruntime-lib",
        s(&lib),
    ])
    .fails(2)
    .stderr;
    assert!(e.contains("model broken did not load: version 1:"), "{e}");
    assert!(e.contains("ONNX Runtime cannot load the model"), "{e}");
}

#[test]
fn serve_stops_when_a_model_has_no_version_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(broken.join("1")).unwrap();
    std::fs::write(broken.join("1/model.onnx"), b"this is not an ONNX model").unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let config = dir.path().join("models.config");
    std::fs::write(
        &config,
        format!(
            "model_config_list {{\n  config {{ name: \"digits\" base_path: \"{}\" model_platform: \"onnx\" }}\n  config {{ name: \"broken\" base_path: \"{}\" }}\n  config {{ name: \"empty\" base_path: \"{}\" }}\n}}\n",
            repo().join("models/digits").display(),
            broken.display(),
            empty.display()
        ),
    )
    .unwrap();
    let (grpc, rest) = (free_port(), free_port());
    let r = run(&[
        "serve",
        "--insecure",
        "--port",
        &grpc.to_string(),
        "--rest_api_port",
        &rest.to_string(),
        "--model_config_file",
        s(&config),
    ])
    .fails(2);
    assert!(
        r.stderr
            .contains("model broken did not load: version 1: not an ONNX model"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("model empty: no version found under"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("model digits"), "{}", r.stderr);
    assert!(!r.stdout.contains("listening"), "{}", r.stdout);
    // Nothing was left listening on either port.
    for p in [grpc, rest] {
        assert!(std::net::TcpStream::connect(("127.0.0.1", p)).is_err());
    }
}

#[test]
fn serve_refuses_to_serve_nothing() {
    let e = run(&[
        "serve",
        "--insecure",
        "--port",
        "0",
        "--rest_api_port",
        "0",
        "--model_base_path",
        s(&repo().join("models/digits")),
    ])
    .fails(2)
    .stderr;
    assert!(e.contains("nothing would be served"), "{e}");
}
