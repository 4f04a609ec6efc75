//! TensorFlow SavedModels on the TensorFlow engine, through the real binary on loopback:
//! Predict and metadata of SavedModels in both export styles (TF1 Builder, TF2
//! tf.saved_model.save) with no flag but `--tensorflow-lib`, DT_STRING in and out, an ONNX
//! model and a SavedModel side by side, and a sealed SavedModel served from memory with no
//! plaintext byte on the file system.
//!
//! TensorFlow is loaded from TEESERVE_TENSORFLOW_LIB (the tensorflow-cpu wheel's
//! libtensorflow_cc.so.2) and the models are made by tests/python/make_savedmodels.py with the
//! Python beside it; without the library these tests skip, unless TEESERVE_REQUIRE_TENSORFLOW=1.
mod harness;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use harness::{bin, free_port, listen, repo, run, s, serve_command, Serve};
use serde_json::{json, Value};

/// The test SavedModels, made once per test process.
fn savedmodels(lib: &Path) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        teeserve_testkit::make_savedmodels(lib, d.path()).unwrap();
        d
    })
    .path()
    .to_owned()
}

/// `teeserve serve` with `args` on loopback, from directory `cwd`, which is also its TMPDIR;
/// returns once it listens.
fn serve_in(cwd: &Path, args: &[&str]) -> Serve {
    let args = [&["--insecure"][..], args].concat();
    let command = || {
        let mut c = serve_command(cwd, &args);
        c.env("TMPDIR", cwd)
            .env_remove("TEESERVE_TENSORFLOW_LIB")
            .env("TF_CPP_MIN_LOG_LEVEL", "2");
        c
    };
    listen(command, None).unwrap()
}

fn serve(args: &[&str]) -> Serve {
    serve_in(&std::env::temp_dir(), args)
}

fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = String::new();
    c.read_to_string(&mut r).unwrap();
    let code = r[9..12].parse().unwrap();
    let body = &r[r.find("\r\n\r\n").unwrap() + 4..];
    (
        code,
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

fn predict(addr: &str, model: &str, body: Value) -> Value {
    let (code, v) = http(
        addr,
        "POST",
        &format!("/v1/models/{model}:predict"),
        &body.to_string(),
    );
    assert_eq!(code, 200, "{v}");
    v
}

/// What the half models give for [[1, 2, 3], [6, 5, 4]]: y = 0.5 x + 2 and its argmax.
fn half_predictions() -> Value {
    json!([
        {"argmax": 2, "y": [2.5, 3.0, 3.5]},
        {"argmax": 0, "y": [5.0, 4.5, 4.0]},
    ])
}

#[test]
fn savedmodels_of_both_export_styles_serve_predict_and_metadata_with_only_the_library_flag() {
    let lib = teeserve_testkit::require_tensorflow!();
    let models = savedmodels(&lib);
    for (name, tensor) in [("half_tf1", "x:0"), ("half_tf2", "serving_default_x:0")] {
        let base = models.join(name);
        let server = serve(&[
            "--tensorflow-lib",
            s(&lib),
            "--model_name",
            name,
            "--model_base_path",
            s(&base),
        ]);
        // Row format, two outputs: one object per row (TF Serving's rule).
        let out = predict(
            &server.rest,
            name,
            json!({"instances": [[1.0, 2.0, 3.0], [6.0, 5.0, 4.0]]}),
        );
        assert_eq!(out["predictions"], half_predictions(), "{name}");
        // Columnar format.
        let out = predict(
            &server.rest,
            name,
            json!({"signature_name": "serving_default", "inputs": {"x": [[1.0, 2.0, 3.0]]}}),
        );
        assert_eq!(out["outputs"]["argmax"], json!([2]), "{name}");
        let (code, meta) = http(
            &server.rest,
            "GET",
            &format!("/v1/models/{name}/metadata"),
            "",
        );
        assert_eq!(code, 200);
        let sig = &meta["metadata"]["signature_def"]["signature_def"]["serving_default"];
        assert_eq!(sig["method_name"], "tensorflow/serving/predict", "{meta}");
        assert_eq!(sig["inputs"]["x"]["dtype"], "DT_FLOAT");
        assert_eq!(sig["inputs"]["x"]["name"], tensor);
        assert_eq!(sig["inputs"]["x"]["tensor_shape"]["dim"][1]["size"], "3");
        assert_eq!(sig["outputs"]["argmax"]["dtype"], "DT_INT64");
        // An unknown signature is TF Serving's error.
        let (code, err) = http(
            &server.rest,
            "POST",
            &format!("/v1/models/{name}:predict"),
            r#"{"signature_name": "nope", "instances": [[1.0, 2.0, 3.0]]}"#,
        );
        assert_eq!(code, 400, "{err}");
        assert!(err["error"].as_str().unwrap().contains("nope"), "{err}");
    }
}

/// TensorFlow's outputs are held to `--max_response_tensor_bytes` like the other engines': the
/// refusal is RESOURCE_EXHAUSTED (429) naming the output and the flag, not an argument error.
#[test]
fn outputs_past_the_response_bound_are_refused_naming_the_output_and_the_flag() {
    let lib = teeserve_testkit::require_tensorflow!();
    let models = savedmodels(&lib);
    let server = serve(&[
        "--tensorflow-lib",
        s(&lib),
        "--model_name",
        "half",
        "--model_base_path",
        s(&models.join("half_tf2")),
        "--max_response_tensor_bytes",
        "20",
    ]);
    // One row: 12 bytes of y and 8 of argmax, within the bound.
    let out = predict(
        &server.rest,
        "half",
        json!({"instances": [[1.0, 2.0, 3.0]]}),
    );
    assert_eq!(
        out["predictions"],
        json!([{"argmax": 2, "y": [2.5, 3.0, 3.5]}])
    );
    // Two rows: 24 bytes of y alone.
    let (code, err) = http(
        &server.rest,
        "POST",
        "/v1/models/half:predict",
        &json!({"instances": [[1.0, 2.0, 3.0], [6.0, 5.0, 4.0]]}).to_string(),
    );
    assert_eq!(code, 429, "{err}");
    let message = err["error"].as_str().unwrap();
    assert!(
        message.contains("--max_response_tensor_bytes") && message.contains("output"),
        "{message}"
    );
}

#[test]
fn string_tensors_go_in_and_out() {
    let lib = teeserve_testkit::require_tensorflow!();
    let models = savedmodels(&lib);
    let server = serve(&[
        "--tensorflow-lib",
        s(&lib),
        "--model_name",
        "strings",
        "--model_base_path",
        s(&models.join("strings_tf2")),
    ]);
    let long = "a long string that does not fit in a small TF_TString";
    let out = predict(
        &server.rest,
        "strings",
        json!({"instances": ["abc", {"b64": "ZGVm"}, long]}),
    );
    assert_eq!(
        out["predictions"],
        json!([
            {"length": 3, "upper": "ABC"},
            {"length": 3, "upper": "DEF"},
            {"length": long.len(), "upper": long.to_uppercase()},
        ])
    );
}

#[test]
fn an_onnx_model_and_a_savedmodel_are_served_side_by_side() {
    let lib = teeserve_testkit::require_tensorflow!();
    let models = savedmodels(&lib);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("models.config");
    std::fs::write(
        &config,
        format!(
            "model_config_list {{\n config {{ name: 'digits' base_path: '{}' model_platform: 'onnx' }}\n config {{ name: 'half' base_path: '{}' model_platform: 'tensorflow' }}\n}}\n",
            repo().join("models/digits").display(),
            models.join("half_tf2").display()
        ),
    )
    .unwrap();
    let server = serve(&[
        "--tensorflow-lib",
        s(&lib),
        "--model_config_file",
        s(&config),
    ]);
    let out = predict(
        &server.rest,
        "half",
        json!({"instances": [[1.0, 2.0, 3.0], [6.0, 5.0, 4.0]]}),
    );
    assert_eq!(out["predictions"], half_predictions());
    let (code, meta) = http(&server.rest, "GET", "/v1/models/digits/metadata", "");
    assert_eq!(code, 200);
    assert!(meta["metadata"]["signature_def"]["signature_def"]["serving_default"].is_object());
}

#[test]
fn a_savedmodel_without_the_library_fails_to_load_naming_the_flag() {
    // No TensorFlow needed: the version is refused before anything is read.
    let base = tempfile::tempdir().unwrap();
    std::fs::create_dir(base.path().join("1")).unwrap();
    std::fs::write(base.path().join("1/saved_model.pb"), b"not read").unwrap();
    // As TF Serving, a model none of whose versions loads stops the start, with the reason.
    let out = Command::new(bin())
        .args([
            "serve",
            "--insecure",
            "--model_name",
            "m",
            "--model_base_path",
        ])
        .arg(base.path())
        .args(["--port", &free_port().to_string()])
        .args(["--rest_api_port", &free_port().to_string()])
        .env_remove("TEESERVE_TENSORFLOW_LIB")
        .output()
        .unwrap();
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{msg}");
    assert!(msg.contains("model m did not load: version 1:"), "{msg}");
    assert!(msg.contains("--tensorflow_lib"), "{msg}");
}

/// Whether `needle` occurs in any file under `dir`.
fn found_under(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return hits;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            hits.extend(found_under(&p, needle));
        } else if t.is_file() {
            if let Ok(b) = std::fs::read(&p) {
                if b.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p);
                }
            }
        }
    }
    hits
}

#[test]
fn a_sealed_savedmodel_serves_from_memory_and_no_plaintext_reaches_the_file_system() {
    let lib = teeserve_testkit::require_tensorflow!();
    let models = savedmodels(&lib);
    let work = tempfile::tempdir().unwrap();
    let key = work.path().join("model.key");
    run(&["keygen", "--out", s(&key)]).ok();
    // Bound to the model name IN's directory gives (half_tf1), as `teeserve seal` defaults.
    let sealed = work.path().join("sealed/half_tf1");
    run(&[
        "seal",
        "--key",
        s(&key),
        s(&models.join("half_tf1")),
        s(&sealed),
    ])
    .ok();
    assert!(sealed.join("1/saved_model.pb.sealed").is_file());
    assert!(sealed.join("1/variables/variables.index.sealed").is_file());
    assert!(!sealed.join("1/saved_model.pb").exists());
    let cwd = work.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let server = serve_in(
        &cwd,
        &[
            "--tensorflow-lib",
            s(&lib),
            "--model-key",
            s(&key),
            "--model_name",
            "half_tf1",
            "--model_base_path",
            s(&sealed),
        ],
    );
    let out = predict(
        &server.rest,
        "half_tf1",
        json!({"instances": [[1.0, 2.0, 3.0], [6.0, 5.0, 4.0]]}),
    );
    assert_eq!(out["predictions"], half_predictions());
    // The plaintext graph and weights appear nowhere: not in the server's working and
    // temporary directory, not beside the sealed files, not in /dev/shm, not among its open
    // files.
    let plain = models.join("half_tf1/1");
    let graph = std::fs::read(plain.join("saved_model.pb")).unwrap();
    let weights = std::fs::read(plain.join("variables/variables.index")).unwrap();
    for needle in [&graph[..], &weights[..]] {
        for dir in [work.path(), Path::new("/dev/shm")] {
            let hits = found_under(dir, needle);
            assert!(hits.is_empty(), "plaintext model bytes in {hits:?}");
        }
    }
    let fds = std::fs::read_dir(format!("/proc/{}/fd", server.child.id())).unwrap();
    for fd in fds.flatten() {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy();
            assert!(
                !t.contains("saved_model") && !t.contains("variables"),
                "the server holds {t} open"
            );
        }
    }
}

#[test]
fn classify_and_regress_run_a_savedmodels_signatures_on_tf_examples() {
    let lib = teeserve_testkit::require_tensorflow!();
    let models = savedmodels(&lib);
    let server = serve(&[
        "--tensorflow-lib",
        s(&lib),
        "--model_name",
        "ex",
        "--model_base_path",
        s(&models.join("examples_tf1")),
    ]);
    // x = [1, 2]: logits x·w = [5, 0], regression 0.25 + 8.
    let (code, out) = http(
        &server.rest,
        "POST",
        "/v1/models/ex:classify",
        r#"{"signature_name": "classify_x", "examples": [{"x": [1.0, 2.0]}]}"#,
    );
    assert_eq!(code, 200, "{out}");
    let row = &out["results"][0];
    assert_eq!(row[0][0], "neg", "{out}");
    assert_eq!(row[1][0], "pos", "{out}");
    let p = 1.0 / (1.0 + (-5f64).exp());
    assert!((row[0][1].as_f64().unwrap() - p).abs() < 1e-5, "{out}");
    let (code, out) = http(
        &server.rest,
        "POST",
        "/v1/models/ex:regress",
        r#"{"signature_name": "regress_x", "context": {"x": [1.0, 2.0]}, "examples": [{}]}"#,
    );
    assert_eq!(code, 200, "{out}");
    assert!(
        (out["results"][0].as_f64().unwrap() - 8.25).abs() < 1e-5,
        "{out}"
    );
}

/// Examples, each one float feature: its name and values.
type Examples<'a> = &'a [(&'a str, &'a [f32])];

/// A warmup file of Classify and Regress requests on the examples model's signatures: per
/// record, the signature and its examples.
fn examples_warmup(records: &[(&str, Examples)]) -> Vec<u8> {
    use prost::Message;
    use teeserve_wire::tensorflow::serving::{
        input, prediction_log::LogType, ClassificationRequest, ClassifyLog, ExampleList, Input,
        ModelSpec, PredictionLog, RegressLog, RegressionRequest,
    };
    use teeserve_wire::tensorflow::{feature, Example, Feature, Features, FloatList};
    let mut out = Vec::new();
    for (signature, examples) in records {
        let examples = examples
            .iter()
            .map(|(name, values)| Example {
                features: Some(Features {
                    feature: [(
                        name.to_string(),
                        Feature {
                            kind: Some(feature::Kind::FloatList(FloatList {
                                value: values.to_vec(),
                            })),
                        },
                    )]
                    .into_iter()
                    .collect(),
                }),
            })
            .collect();
        let input = Some(Input {
            kind: Some(input::Kind::ExampleList(ExampleList { examples })),
        });
        let model_spec = Some(ModelSpec {
            name: "ex".into(),
            signature_name: signature.to_string(),
            ..Default::default()
        });
        let log_type = if signature.starts_with("classify") {
            LogType::ClassifyLog(ClassifyLog {
                request: Some(ClassificationRequest { model_spec, input }),
                response: None,
            })
        } else {
            LogType::RegressLog(RegressLog {
                request: Some(RegressionRequest { model_spec, input }),
                response: None,
            })
        };
        let log = PredictionLog {
            log_type: Some(log_type),
        };
        out.extend(teeserve_serving::fuzzing::frame_record(
            &log.encode_to_vec(),
        ));
    }
    out
}

/// Copies a directory tree.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn classify_and_regress_warmup_records_run_on_a_savedmodels_signatures() {
    let lib = teeserve_testkit::require_tensorflow!();
    let models = savedmodels(&lib);
    let base = tempfile::tempdir().unwrap();
    copy_tree(&models.join("examples_tf1"), base.path());
    let warmup = base
        .path()
        .join("1/assets.extra/tf_serving_warmup_requests");
    std::fs::create_dir_all(warmup.parent().unwrap()).unwrap();
    let start = || {
        Command::new(bin())
            .args(["serve", "--insecure", "--tensorflow-lib", s(&lib)])
            .args(["--model_name", "ex", "--model_base_path", s(base.path())])
            .args(["--port", &free_port().to_string()])
            .args(["--rest_api_port", &free_port().to_string()])
            .args(["--grpc_bind_address", "127.0.0.1"])
            .args(["--rest_api_bind_address", "127.0.0.1"])
            .env("TF_CPP_MIN_LOG_LEVEL", "2")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Good records on both signatures: the version loads and says how many it replayed.
    std::fs::write(
        &warmup,
        examples_warmup(&[
            ("classify_x", &[("x", &[1.0, 2.0]), ("x", &[0.5, 0.0])]),
            ("regress_x", &[("x", &[1.0, 2.0])]),
        ]),
    )
    .unwrap();
    let mut child = start();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(line.starts_with("listening"), "{line}{log}");
    assert!(
        log.contains("warmup requests replayed") && log.contains("records=2"),
        "{log}"
    );
    // They are run by TensorFlow, not skipped: an example without the feature the signature
    // parses (a FixedLenFeature with no default) fails the load, naming the record.
    std::fs::write(
        &warmup,
        examples_warmup(&[
            ("regress_x", &[("x", &[1.0, 2.0])]),
            ("classify_x", &[("y", &[1.0, 2.0])]),
        ]),
    )
    .unwrap();
    let out = start().wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("warmup file: record 1: the model refused it"),
        "{log}"
    );
}

/// A SavedModel whose serving function also writes its input to a file on the host and prints
/// it to the server's log (`tf.io.write_file`, `tf.print`) is refused at load, with an error
/// naming the operator, and nothing it would have written appears; the policy is stated in
/// the error. (Before the operator policy, the model loaded and every request's input reached
/// the host's disk and log.)
#[test]
fn a_savedmodel_that_writes_or_prints_its_inputs_is_refused_naming_the_operator() {
    let lib = teeserve_testkit::require_tensorflow!();
    let models = savedmodels(&lib);
    let cwd = tempfile::tempdir().unwrap();
    let out = serve_command(
        cwd.path(),
        &[
            "--insecure",
            "--tensorflow-lib",
            s(&lib),
            "--model_name",
            "exfil",
            "--model_base_path",
            s(&models.join("exfil_tf2")),
            "--port",
            &free_port().to_string(),
            "--rest_api_port",
            &free_port().to_string(),
        ],
    )
    .env("TMPDIR", cwd.path())
    .env_remove("TEESERVE_TENSORFLOW_LIB")
    .env("TF_CPP_MIN_LOG_LEVEL", "2")
    .output()
    .unwrap();
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{msg}");
    assert!(msg.contains("model exfil did not load"), "{msg}");
    assert!(msg.contains("teeserve-tensorflow-compute-v1"), "{msg}");
    assert!(
        msg.contains("WriteFile") && msg.contains("PrintV2"),
        "the refusal names the operators: {msg}"
    );
    assert!(!cwd.path().join("exfil.txt").exists());
}

/// The host swaps a plaintext SavedModel's weights after the server has hashed them and before
/// TensorFlow would read them: the server answers with the weights it hashed (those the version's
/// digest describes), never with the swapped ones. A large last file (sorted after
/// `variables/`) holds the hashing pass open long enough for the swap to land in between;
/// the test swaps as soon as the server opens it.
#[test]
fn weights_swapped_after_hashing_never_run() {
    let lib = teeserve_testkit::require_tensorflow!();
    let models = savedmodels(&lib);
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("half");
    copy_tree(&models.join("half_tf2/1"), &base.join("1"));
    let padding = base.join("1/zz-padding");
    // Sparse: costs no disk, but is read and hashed like any file.
    std::fs::File::create(&padding)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let padding = padding.canonicalize().unwrap();
    let quarter = models.join("quarter_tf2/1/variables");
    let staged = work.path().join("staged");
    copy_tree(&quarter, &staged);
    let mut command = serve_command(
        work.path(),
        &[
            "--insecure",
            "--tensorflow-lib",
            s(&lib),
            "--model_name",
            "half",
            "--model_base_path",
            s(&base),
        ],
    );
    command
        .env_remove("TEESERVE_TENSORFLOW_LIB")
        .env("TF_CPP_MIN_LOG_LEVEL", "2");
    let port = (free_port(), free_port());
    let mut child = command
        .args(["--grpc_bind_address", "127.0.0.1"])
        .args(["--rest_api_bind_address", "127.0.0.1"])
        .args(["--port", &port.0.to_string()])
        .args(["--rest_api_port", &port.1.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the server to open the padding: the weights before it are hashed by then.
    let fd_dir = format!("/proc/{}/fd", child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut swapped = false;
    while std::time::Instant::now() < deadline && !swapped {
        for fd in std::fs::read_dir(&fd_dir).into_iter().flatten().flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|t| t == padding) {
                for f in ["variables.index", "variables.data-00000-of-00001"] {
                    std::fs::rename(staged.join(f), base.join("1/variables").join(f)).unwrap();
                }
                swapped = true;
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    assert!(swapped, "the server never opened the padding file");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _kill = KillOnDrop(child);
    assert!(line.starts_with("listening"), "{line}");
    let rest = format!("127.0.0.1:{}", port.1);
    let out = predict(
        &rest,
        "half",
        json!({"instances": [[1.0, 2.0, 3.0], [6.0, 5.0, 4.0]]}),
    );
    // 0.5 x + 2, the hashed weights; the swapped ones would give 0.25 x + 2.
    assert_eq!(out["predictions"], half_predictions());
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
