//! `teeserve-load` against the real server: it checks the attestation on each connection,
//! counts every request and judges each answer, and retries through a server's restart
//! without losing a request.
mod harness;
use harness::*;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A simulated platform and a CA with a server certificate (its key a host file) in `d`.
fn setup(d: &Path) {
    run_in(d, &["sim", "init", "--dir", "sim"]).ok();
    run_in(d, &["tls", "init", "--dir", "tls"]).ok();
    std::fs::write(
        d.join("policy.toml"),
        format!(
            "mrenclave = [\"{}\"]\nallow_simulated = true\ntls_key_origin = [\"host\"]\n",
            run(&["attest", "measure"]).ok().stdout.trim()
        ),
    )
    .unwrap();
}

/// `teeserve serve` of the bundled digits model on these ports (free ones when None),
/// publishing its attestation; None when a port was taken.
fn serve_on(d: &Path, ports: Option<(u16, u16)>) -> Option<Serve> {
    serve_models(d, &repo().join("models/digits"), &[], ports)
}

/// `teeserve serve` of the digits model in `models`, with `extra` flags, as [`serve_on`].
fn serve_models(
    d: &Path,
    models: &Path,
    extra: &[&str],
    ports: Option<(u16, u16)>,
) -> Option<Serve> {
    let args = [
        &[
            "--platform",
            "simulated",
            "--sim-dir",
            "sim",
            "--model_name",
            "digits",
            "--model_base_path",
            s(models),
            "--tls-cert",
            "tls/server.pem",
            "--tls-key",
            "tls/server.key",
            "--attest-host-tls-key",
            "--attestation-collateral",
            "sim/collateral.json",
        ][..],
        extra,
    ]
    .concat();
    listen(|| serve_command(d, &args), ports)
}

/// The server and its gRPC and REST ports.
fn serve(d: &Path) -> (Serve, u16, u16) {
    let server = serve_on(d, None).unwrap();
    let port = |a: &str| a.rsplit_once(':').unwrap().1.parse().unwrap();
    let (grpc, rest) = (port(&server.grpc), port(&server.rest));
    (server, grpc, rest)
}

fn load(d: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(load_bin());
    c.current_dir(d)
        .args(["--model", "digits", "--server-name", "127.0.0.1"])
        .args(args)
        .env_remove("RUST_LOG");
    c
}

fn finish(c: &mut Command) -> Run {
    let out = c.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn every_request_is_counted_and_judged_on_attested_connections() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let (_server, grpc, rest) = serve(d);
    let input = repo().join("testdata/digits/sample.npy");
    let attested = [
        "--ca",
        "tls/ca.pem",
        "--attest",
        "policy.toml",
        "--root",
        "sim/root.pem",
        "--input",
        s(&input),
    ];
    let v = finish(
        load(d, &attested)
            .args(["--server", &format!("127.0.0.1:{grpc}")])
            .args(["--requests", "40", "--connections", "2"]),
    )
    .ok()
    .json();
    assert_eq!(v["requests"], 40, "{v}");
    assert_eq!(v["answered"], 40, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["versions"]["1"], 40, "{v}");
    // Each connection attested on its own before it carried data.
    assert_eq!(v["connections"], 2, "{v}");
    assert_eq!(v["attestations"], 2, "{v}");

    // Over REST, with an expected answer that is not the model's: every answer is wrong.
    std::fs::write(
        d.join("expected.json"),
        r#"{"outputs": {"class": [9], "probabilities": [[0.1]]}}"#,
    )
    .unwrap();
    let v = finish(
        load(d, &attested)
            .args(["--server", &format!("127.0.0.1:{rest}"), "--rest"])
            .args(["--requests", "10", "--expected", "expected.json"]),
    )
    .ok()
    .json();
    assert_eq!(v["requests"], 10, "{v}");
    assert_eq!(v["wrong"], 10, "{v}");
    assert_eq!(v["lost"], 10, "{v}");

    // A policy that does not admit the server: no data is sent, and the run says why.
    std::fs::write(
        d.join("other.toml"),
        format!(
            "mrenclave = [\"{}\"]\nallow_simulated = true\n",
            "ab".repeat(32)
        ),
    )
    .unwrap();
    let r = finish(
        load(
            d,
            &[
                "--ca",
                "tls/ca.pem",
                "--attest",
                "other.toml",
                "--root",
                "sim/root.pem",
                "--input",
                s(&input),
            ],
        )
        .args(["--server", &format!("127.0.0.1:{grpc}"), "--requests", "5"]),
    )
    .fails(2);
    assert!(
        r.stderr.contains("attestation not admitted"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_server_restart_under_load_costs_retries_not_requests() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let (server, grpc, rest) = serve(d);
    let input = repo().join("testdata/digits/sample.npy");
    let mut c = load(
        d,
        &[
            "--ca",
            "tls/ca.pem",
            "--input",
            s(&input),
            "--duration",
            "6",
            "--connections",
            "2",
            "--max-attempts",
            "40",
        ],
    );
    let child = c
        .args(["--server", &format!("127.0.0.1:{grpc}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    drop(server);
    std::thread::sleep(Duration::from_millis(300));
    let mut again = None;
    for _ in 0..20 {
        again = serve_on(d, Some((grpc, rest)));
        if again.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        again.is_some(),
        "the server did not start again on its ports"
    );
    let out = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["lost"], 0, "{v}");
    assert!(v["answered"].as_u64().unwrap() > 0, "{v}");
    assert!(v["retried"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["connections"].as_u64().unwrap() >= 3, "{v}");
}

#[test]
fn bad_flags_and_an_unreachable_server_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = repo().join("testdata/digits/sample.npy");
    let r = finish(&mut load(
        d,
        &["--server", "127.0.0.1:1", "--input", s(&input)],
    ))
    .fails(2);
    assert!(r.stderr.contains("--ca"), "{}", r.stderr);
    setup(d);
    let r = finish(&mut load(
        d,
        &[
            "--server",
            &format!("127.0.0.1:{}", free_port()),
            "--ca",
            "tls/ca.pem",
            "--input",
            s(&input),
            "--max-attempts",
            "2",
        ],
    ))
    .fails(2);
    assert!(r.stderr.contains("cannot connect"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    let r = finish(&mut load(
        d,
        &[
            "--server",
            "127.0.0.1:1",
            "--ca",
            "tls/ca.pem",
            "--input",
            "tls/ca.pem",
        ],
    ))
    .fails(2);
    assert!(r.stderr.contains("neither .npy nor JSON"), "{}", r.stderr);
}

/// A server that takes the connection and never answers (a frozen replica the kernel still
/// accepts for) costs attempts of `--timeout` each, not the run; a duration the clock cannot
/// hold is refused, not a panic.
#[test]
fn a_server_that_never_answers_costs_attempts_not_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_in(d, &["tls", "init", "--dir", "tls"]).ok();
    let input = repo().join("testdata/digits/sample.npy");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut child = load(
        d,
        &[
            "--server",
            &silent.local_addr().unwrap().to_string(),
            "--ca",
            "tls/ca.pem",
            "--input",
            s(&input),
            "--timeout",
            "0.5",
            "--max-attempts",
            "2",
            "--duration",
            "600",
        ],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("teeserve-load still waits on a server that never answers");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no answer within 0.5 s"), "{stderr}");
    drop(silent);

    // A client key file without a key is named.
    let r = finish(&mut load(
        d,
        &[
            "--server",
            "127.0.0.1:1",
            "--ca",
            "tls/ca.pem",
            "--input",
            s(&input),
            "--cert",
            "tls/server.pem",
            "--key",
            "tls/ca.pem",
        ],
    ))
    .fails(2);
    assert!(
        r.stderr.contains("--key") && r.stderr.contains("tls/ca.pem"),
        "{}",
        r.stderr
    );
    for (flag, v) in [("--duration", "1e20"), ("--timeout", "0")] {
        let r = finish(&mut load(
            d,
            &["--server", "127.0.0.1:1", "--input", s(&input), flag, v],
        ))
        .fails(2);
        assert!(
            r.stderr
                .contains(&format!("{flag} must be a positive number of seconds")),
            "{}",
            r.stderr
        );
    }
}

/// teeserve-load pinned to version 1's digest (`models = {...}` in its policy) keeps its
/// attested connections while the host adds a version 2 (which replaces version 1: the policy
/// serves the latest): no request is answered by version 2, since each request carries the
/// pin; the server refuses them instead, saying so, and new connections refuse the server's
/// attestation. Without a pin, the same run is answered by version 2 once it loads (so the
/// attack is real).
#[test]
fn a_requesters_pin_holds_for_every_request_on_connections_already_attested() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let model = std::fs::read(repo().join("models/digits/1/model.onnx")).unwrap();
    let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, &model));
    let input = repo().join("testdata/digits/sample.npy");
    let base_policy = std::fs::read_to_string(d.join("policy.toml")).unwrap();
    std::fs::write(
        d.join("pinned.toml"),
        format!("{base_policy}models = {{ digits = [\"{digest}\"] }}\n"),
    )
    .unwrap();
    for pinned in [true, false] {
        let models = d.join(format!("models-{pinned}"));
        std::fs::create_dir_all(models.join("1")).unwrap();
        std::fs::write(models.join("1/model.onnx"), &model).unwrap();
        let server =
            serve_models(d, &models, &["--file_system_poll_wait_seconds", "1"], None).unwrap();
        let policy = if pinned { "pinned.toml" } else { "policy.toml" };
        let mut c = load(
            d,
            &[
                "--ca",
                "tls/ca.pem",
                "--attest",
                policy,
                "--root",
                "sim/root.pem",
                "--input",
                s(&input),
            ],
        );
        c.args(["--server", &server.grpc])
            .args(["--duration", "6", "--connections", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = c.spawn().unwrap();
        std::thread::sleep(Duration::from_secs(2));
        // The host adds version 2: the same graph with one more (ignored) field, another file.
        let mut v2 = model.clone();
        v2.extend_from_slice(b"\x32\x03new");
        std::fs::create_dir_all(models.join("2")).unwrap();
        std::fs::write(models.join("2/model.onnx"), &v2).unwrap();
        let out = child.wait_with_output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        let answered = v["answered"].as_u64().unwrap();
        assert!(answered > 10, "{v}");
        if pinned {
            assert_eq!(v["versions"]["1"], answered, "{v}");
            assert!(v["versions"].get("2").is_none(), "{v}");
            let errors = v["errors"].as_object().unwrap();
            assert!(
                errors
                    .keys()
                    .any(|e| e.contains("accepts only model files")),
                "{v}"
            );
            for e in errors.keys() {
                assert!(
                    e.contains("accepts only model files") || e.contains("rule models"),
                    "{e}"
                );
            }
        } else {
            assert_eq!(v["lost"], 0, "{v}");
            assert!(v["versions"]["2"].as_u64().unwrap_or(0) > 0, "{v}");
        }
    }
}
