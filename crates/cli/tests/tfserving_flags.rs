//! TF Serving's command lines start teeserve as they are: every flag of tensorflow_model_server
//! (2.x) is accepted, those teeserve does not need with one warning line each that says what
//! it does instead; the two whose meaning would weaken a guarantee are refused, saying why.
mod harness;
use harness::*;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

#[test]
fn a_tf_serving_command_line_starts_teeserve_and_says_what_each_unneeded_flag_does() {
    let dir = tempfile::tempdir().unwrap();
    let models = repo().join("models/digits");
    let (grpc, rest) = (free_port(), free_port());
    let log = tempfile::tempfile().unwrap();
    let mut child = serve_command(
        dir.path(),
        &[
            "--insecure",
            "--grpc_bind_address",
            "127.0.0.1",
            "--rest_api_bind_address",
            "127.0.0.1",
            &format!("--port={grpc}"),
            &format!("--rest_api_port={rest}"),
            "--model_name=digits",
            &format!("--model_base_path={}", s(&models)),
            "--enable_model_warmup=false",
            "--grpc_channel_arguments=grpc.max_connection_age_ms=2000",
            "--tensorflow_session_parallelism=2",
            "--allow_version_labels_for_unavailable_models",
            "--grpc_max_threads=8",
            "--rest_api_num_threads=8",
            "--rest_api_timeout_in_ms=5000",
            "--enable_grpc_healthcheck_service=true",
            "--flush_filesystem_caches=false",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(log.try_clone().unwrap())
    .spawn()
    .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let err = written_so_far(&log);
    let _kill = Killed(child);
    assert!(line.starts_with("listening"), "{line} {err}");
    for flag in [
        "enable_model_warmup",
        "grpc_channel_arguments",
        "tensorflow_session_parallelism",
        "allow_version_labels_for_unavailable_models",
        "grpc_max_threads",
        "rest_api_num_threads",
        "enable_grpc_healthcheck_service",
        "flush_filesystem_caches",
    ] {
        let warning = format!("warning: --{flag} is accepted");
        assert_eq!(err.matches(&warning).count(), 1, "{flag}: {err}");
    }
    // --rest_api_timeout_in_ms is teeserve's own deadline: no warning.
    assert!(!err.contains("--rest_api_timeout_in_ms is"), "{err}");
    let r = run_in(
        dir.path(),
        &[
            "predict",
            "--insecure",
            "--server",
            &format!("127.0.0.1:{grpc}"),
            "--model",
            "digits",
            "--input",
            s(&repo().join("testdata/digits/sample.npy")),
        ],
    )
    .ok();
    assert!(r.stdout.contains("\"class\""), "{}", r.stdout);
    // The gRPC access log speaks gRPC: the status code's name, not an HTTP status. The log is
    // written in batches, at most 100 ms late.
    let line = "entry=\"grpc\" method=\"Predict\" model=\"digits\" status=OK";
    let mut err = String::new();
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        err = written_so_far(&log);
        if err.contains(line) {
            break;
        }
    }
    assert!(err.contains(line), "{err}");
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn flags_that_would_weaken_a_guarantee_are_refused_saying_why() {
    let models = repo().join("models/digits");
    for (flag, why) in [
        ("--grpc_socket_path=/tmp/teeserve.sock", "outside TLS"),
        ("--use_alts_credentials=true", "ALTS would replace"),
    ] {
        let r = run(&[
            "serve",
            "--insecure",
            "--model_name",
            "digits",
            "--model_base_path",
            s(&models),
            flag,
        ]);
        assert_ne!(r.code, 0, "{flag}");
        assert!(
            r.stderr.contains("is refused") && r.stderr.contains(why),
            "{flag}: {}",
            r.stderr
        );
    }
}

#[test]
fn version_prints_and_help_lists_the_compatibility_flags() {
    let r = run(&["serve", "--version"]).ok();
    assert!(r.stdout.starts_with("teeserve "), "{}", r.stdout);
    let help = run(&["serve", "--help"]).ok().stdout;
    assert!(
        help.contains("TF Serving flags teeserve accepts but does not need"),
        "{help}"
    );
    for flag in [
        "--enable_model_warmup",
        "--grpc_channel_arguments",
        "--tensorflow_session_parallelism",
        "--allow_version_labels_for_unavailable_models",
        "--grpc_max_threads",
        "--rest_api_timeout_in_ms",
        "--version",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

/// A command line without TLS material (and without --insecure) is refused before any model is
/// read: the error is about TLS, not about the model (here one that would not even load).
#[test]
fn missing_tls_is_reported_before_any_model_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("m/1")).unwrap();
    std::fs::write(dir.path().join("m/1/saved_model.pb"), b"never read").unwrap();
    let r = run(&[
        "serve",
        "--model_name",
        "m",
        "--model_base_path",
        s(&dir.path().join("m")),
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("TLS is required"), "{}", r.stderr);
    assert!(!r.stderr.contains("did not load"), "{}", r.stderr);
    let r = run(&[
        "serve",
        "--tls-cert",
        "server.pem",
        "--model_name",
        "m",
        "--model_base_path",
        s(&dir.path().join("m")),
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("--tls_key"), "{}", r.stderr);
    assert!(!r.stderr.contains("did not load"), "{}", r.stderr);
}

/// A model file placed directly under the base path (not in `<base>/1/`) gets a hint naming
/// the move that fixes it.
#[test]
fn a_model_file_directly_under_the_base_path_gets_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("digits");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::copy(
        repo().join("models/digits/1/model.onnx"),
        base.join("model.onnx"),
    )
    .unwrap();
    let r = run(&[
        "serve",
        "--insecure",
        "--port",
        &free_port().to_string(),
        "--rest_api_port",
        &free_port().to_string(),
        "--model_name",
        "digits",
        "--model_base_path",
        s(&base),
    ]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("model.onnx lies directly under the base path")
            && r.stderr.contains(&format!("{}/1/", base.display())),
        "{}",
        r.stderr
    );
}

/// A certificate and a key that do not go together are refused naming both files.
#[test]
fn a_key_of_another_certificate_is_refused_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    run_in(
        dir.path(),
        &[
            "tls", "init", "--dir", "tls", "--name", "server", "--name", "other",
        ],
    )
    .ok();
    let r = run_in(
        dir.path(),
        &[
            "serve",
            "--tls-cert",
            "tls/server.pem",
            "--tls-key",
            "tls/other.key",
            "--port",
            &free_port().to_string(),
            "--rest_api_port",
            &free_port().to_string(),
            "--model_name",
            "digits",
            "--model_base_path",
            s(&repo().join("models/digits")),
        ],
    );
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("--tls_cert tls/server.pem and --tls_key tls/other.key")
            && r.stderr.contains("the key is not the certificate's"),
        "{}",
        r.stderr
    );
}

/// `serve --help` speaks TF Serving's snake_case only: every flag it lists is spelled so (the
/// earlier kebab-case spellings stay accepted, unlisted; the test above passes `--tls-cert`),
/// and teeserve's own flags are grouped under headings of their own after TF Serving's.
#[test]
fn help_lists_every_flag_in_snake_case_with_teeserves_own_under_their_headings() {
    let help = run(&["serve", "--help"]).ok().stdout;
    let flags: Vec<&str> = help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter(|l| l.starts_with(|c: char| c.is_ascii_lowercase()))
        .map(|l| l.split([' ', '=', '<']).next().unwrap())
        .collect();
    assert!(flags.len() > 60, "{flags:?}");
    let kebab: Vec<&&str> = flags.iter().filter(|f| f.contains('-')).collect();
    assert!(kebab.is_empty(), "flags not in snake_case: {kebab:?}");
    let at = |s: &str| {
        help.find(s)
            .unwrap_or_else(|| panic!("{s} missing from --help"))
    };
    for heading in [
        "teeserve: listeners and limits:",
        "teeserve: TLS, attestation and access:",
        "teeserve: key broker and model key:",
        "teeserve: engines:",
    ] {
        assert!(at("--model_base_path") < at(heading), "{heading}");
    }
    assert!(at("teeserve: TLS, attestation and access:") < at("--tls_cert"));
    assert!(at("teeserve: key broker and model key:") < at("--kbs_ca"));
}
