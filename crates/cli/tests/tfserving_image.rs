//! The image for TF Serving users (`deploy/docker/Dockerfile.tfserving`), run the way they run
//! `tensorflow/serving`'s: `MODEL_NAME` and `MODEL_BASE_PATH`, ports 8500/8501 (or `GRPC_PORT`
//! and `PORT`), flags appended after the image name.
//!
//! The entrypoint script is run here on the host, as the image runs it (the `teeserve` under
//! test first on `PATH`), so these tests run wherever `cargo test` does. The image itself is
//! built and run with docker only where a daemon answers and the base images are already on the
//! machine: the test never pulls, and builds with no network, from the crates in the local cargo
//! cache. Otherwise it prints `skipped:` with the reason and passes
//! (`TEESERVE_REQUIRE_DOCKER=1` makes that a failure).
mod harness;
use harness::*;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn entrypoint() -> PathBuf {
    repo().join("deploy/docker/tfserving-entrypoint.sh")
}

/// Copies the directory tree `from` to `to`, readable by everyone (as a model directory a user
/// mounts into a container must be).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    set_mode(to, 0o755);
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            set_mode(&target, 0o644);
        }
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A directory laid out as the image's: the digits model at `models/digits`.
fn model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(
        &repo().join("models/digits"),
        &dir.path().join("models/digits"),
    );
    dir
}

/// The entrypoint as the image starts it, with `dir` in the image's places: the model at
/// `$MODEL_BASE_PATH/$MODEL_NAME` (`dir/models/digits`), the simulated platform in `dir/sim`.
fn entrypoint_command(dir: &Path) -> Command {
    let mut path = std::ffi::OsString::from(bin().parent().unwrap());
    if let Some(inherited) = std::env::var_os("PATH") {
        path.push(":");
        path.push(inherited);
    }
    let mut c = Command::new(entrypoint());
    c.current_dir(dir)
        .env("PATH", path)
        .env("MODEL_NAME", "digits")
        .env("MODEL_BASE_PATH", dir.join("models"))
        .env("TEESERVE_SIM_DIR", dir.join("sim"))
        .env_remove("GRPC_PORT")
        .env_remove("PORT")
        .env_remove("RUST_LOG")
        .env_remove("TEESERVE_ONNXRUNTIME_LIB")
        .env_remove("TEESERVE_TENSORFLOW_LIB");
    c
}

/// A started entrypoint: the first line it printed on stdout, its stderr in `log`; killed when
/// dropped.
struct Started {
    child: Child,
    line: String,
    log: File,
}

impl Started {
    fn new(mut command: Command) -> Started {
        let log = tempfile::tempfile().unwrap();
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(log.try_clone().unwrap())
            .spawn()
            .expect("start the entrypoint");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut started = Started { child, line, log };
        if !started.line.starts_with("listening") {
            panic!(
                "the entrypoint did not start teeserve: {:?}\n{}",
                started.line.clone(),
                started.log()
            );
        }
        started
    }

    fn log(&mut self) -> String {
        written_so_far(&self.log)
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `POST /v1/models/digits:predict` with the sample body, over plaintext HTTP/1.1 as curl sends
/// it; the whole response, status line first.
fn rest_predict(addr: &str) -> std::io::Result<String> {
    let body = std::fs::read(repo().join("testdata/digits/sample.json")).unwrap();
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "POST /v1/models/digits:predict HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// The classes of a REST predict response (`{"predictions": [{"class": 9, ...}, ...]}`).
fn rest_classes(response: &str) -> Vec<i64> {
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = &response[response.find("\r\n\r\n").expect("no body") + 4..];
    let json: serde_json::Value = serde_json::from_str(body).expect(body);
    json["predictions"]
        .as_array()
        .unwrap_or_else(|| panic!("no predictions: {body}"))
        .iter()
        .map(|p| p["class"].as_i64().unwrap())
        .collect()
}

/// The classes `teeserve predict` gets over gRPC from `server`, with `flags` (plaintext or
/// attestation).
fn grpc_classes(dir: &Path, server: &str, flags: &[&str]) -> Vec<i64> {
    let sample = repo().join("testdata/digits/sample.npy");
    let mut args = vec![
        "predict",
        "--server",
        server,
        "--model",
        "digits",
        "--input",
        s(&sample),
    ];
    args.extend_from_slice(flags);
    let json = run_in(dir, &args).ok().json();
    json["outputs"]["class"]
        .as_array()
        .unwrap_or_else(|| panic!("no classes: {json}"))
        .iter()
        .map(|c| c.as_i64().unwrap())
        .collect()
}

/// The classes of the three sample digits.
const SAMPLE_CLASSES: [i64; 3] = [9, 4, 6];

#[test]
fn tensorflow_servings_command_line_serves_the_model_on_a_simulated_tee_plaintext_when_asked() {
    let dir = model_dir();
    let (grpc, rest) = (free_port(), free_port());
    let mut command = entrypoint_command(dir.path());
    command
        .env("GRPC_PORT", grpc.to_string())
        .env("PORT", rest.to_string())
        // Appended as after `docker run ... teeserve-tfserving`: they reach teeserve.
        .args(["--insecure", "--grpc_bind_address=127.0.0.1"])
        .args(["--rest_api_bind_address", "127.0.0.1"]);
    let mut server = Started::new(command);
    assert_eq!(
        server.line.trim(),
        format!("listening grpc=127.0.0.1:{grpc} rest=127.0.0.1:{rest}")
    );
    let log = server.log();
    assert!(
        log.contains("this TEE is SIMULATED. It gives NO protection") && log.contains("plaintext"),
        "{log}"
    );
    assert!(dir.path().join("sim/collateral.json").is_file());

    let response = rest_predict(&format!("127.0.0.1:{rest}")).unwrap();
    assert_eq!(rest_classes(&response), SAMPLE_CLASSES);
    let answered = grpc_classes(dir.path(), &format!("127.0.0.1:{grpc}"), &["--insecure"]);
    assert_eq!(answered, SAMPLE_CLASSES);
}

#[test]
fn ra_tls_on_the_simulated_tee_is_attested_with_the_root_it_prints_across_restarts() {
    let dir = model_dir();
    let start = || {
        let (grpc, rest) = (free_port(), free_port());
        let mut command = entrypoint_command(dir.path());
        // The image sets --port and --rest_api_port (8500, 8501); the appended ones replace
        // them, in either spelling, as the last of a repeated flag does for TF Serving.
        command.args([
            "--tls_ra",
            "--grpc_bind_address=127.0.0.1",
            "--rest_api_bind_address=127.0.0.1",
            &format!("--port={grpc}"),
            "--rest-api-port",
            &rest.to_string(),
        ]);
        let server = Started::new(command);
        assert_eq!(
            server.line.trim(),
            format!("listening grpc=127.0.0.1:{grpc} rest=127.0.0.1:{rest}")
        );
        (server, grpc, rest)
    };
    let (mut server, grpc, rest) = start();
    let log = server.log();
    // The policy a requester needs, as the entrypoint prints it.
    let measured = log
        .split("mrenclave = [\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no mrenclave line: {log}"));
    assert_eq!(measured, run(&["attest", "measure"]).ok().stdout.trim());
    let root = dir.path().join("sim/root.pem");
    assert!(
        log.contains(&format!("root certificate, {}", root.display())),
        "{log}"
    );
    std::fs::write(
        dir.path().join("policy.toml"),
        format!("mrenclave = [\"{measured}\"]\nallow_simulated = true\n"),
    )
    .unwrap();
    // A copy of the root: the requester's, which must keep working after a restart.
    std::fs::copy(&root, dir.path().join("requester-root.pem")).unwrap();
    let attest = ["--attest", "policy.toml", "--root", "requester-root.pem"];
    let answered = grpc_classes(dir.path(), &format!("127.0.0.1:{grpc}"), &attest);
    assert_eq!(answered, SAMPLE_CLASSES);
    let rest_addr = format!("127.0.0.1:{rest}");
    let sample = repo().join("testdata/digits/sample.json");
    let mut args = vec![
        "predict",
        "--rest",
        "--server",
        &rest_addr,
        "--model",
        "digits",
        "--input",
        s(&sample),
    ];
    args.extend_from_slice(&attest);
    let r = run_in(dir.path(), &args).ok();
    assert!(
        r.stderr.contains("attested: sgx") && r.stderr.contains("TLS key from tee"),
        "{}",
        r.stderr
    );

    drop(server);
    let (mut server, grpc, _) = start();
    let log = server.log();
    assert!(log.contains("made at an earlier start"), "{log}");
    let answered = grpc_classes(dir.path(), &format!("127.0.0.1:{grpc}"), &attest);
    assert_eq!(answered, SAMPLE_CLASSES);
}

#[test]
fn without_a_choice_of_plaintext_or_tls_it_says_how_to_choose_and_starts_nothing() {
    let dir = model_dir();
    let out = entrypoint_command(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for choice in ["--insecure", "--ssl_config_file", "--tls_cert", "--tls_ra"] {
        assert!(stderr.contains(choice), "{choice}: {stderr}");
    }
    assert!(!dir.path().join("sim").exists(), "a platform was made");

    // Each TLS choice passes to teeserve, which reads its files.
    for choice in [
        &["--ssl_config_file=absent.cfg"][..],
        &["--tls_cert=absent.pem", "--tls_key=absent.key"],
    ] {
        let out = entrypoint_command(dir.path())
            .args(choice)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{choice:?}: {stderr}");
        assert!(
            !stderr.contains("say how clients connect") && stderr.contains("absent."),
            "{choice:?}: {stderr}"
        );
    }

    // --help is teeserve serve's, and needs no choice.
    let out = entrypoint_command(dir.path())
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Usage: teeserve serve"), "{stdout}");
}

/// `docker ARGS`: what it printed (stdout, then stderr), or what it said when it failed; given
/// up after `seconds`.
fn docker(args: &[&str], seconds: u64) -> Result<String, String> {
    let mut out = tempfile::tempfile().unwrap();
    let mut err = tempfile::tempfile().unwrap();
    let mut child = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .map_err(|e| format!("docker: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("docker {}: no answer in {seconds} s", args[0]));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let read = |f: &mut File| {
        let mut text = String::new();
        f.rewind().unwrap();
        f.read_to_string(&mut text).unwrap();
        text
    };
    if status.success() {
        Ok(read(&mut out) + &read(&mut err))
    } else {
        let text = read(&mut err) + &read(&mut out);
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(format!(
            "docker {} ({status}): {}",
            args[0],
            tail.join("\n").trim()
        ))
    }
}

/// The images the Dockerfile's stages start `FROM` (not its own stages).
fn base_images(dockerfile: &str) -> Vec<String> {
    let mut stages = Vec::new();
    let mut bases = Vec::new();
    for line in dockerfile.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if !words
            .first()
            .is_some_and(|w| w.eq_ignore_ascii_case("FROM"))
        {
            continue;
        }
        let mut words = words[1..].iter().filter(|w| !w.starts_with("--"));
        let image = words.next().expect("FROM without an image").to_string();
        if !stages.contains(&image) {
            bases.push(image);
        }
        if let (Some(_), Some(name)) = (words.next(), words.next()) {
            stages.push(name.to_string());
        }
    }
    bases
}

/// Why docker cannot build the image here without pulling or downloading, if it cannot.
fn docker_missing(dockerfile: &str) -> Option<String> {
    if let Err(e) = docker(&["version", "--format", "{{.Server.Version}}"], 20) {
        return Some(format!("no docker daemon answers ({e})"));
    }
    for image in base_images(dockerfile) {
        if docker(&["image", "inspect", "--format", "{{.Id}}", &image], 20).is_err() {
            return Some(format!(
                "the base image {image} is not on this machine, and this test never pulls \
                 (`docker pull {image}`, then run it again)"
            ));
        }
    }
    None
}

/// The build context a user's `docker build ... .` sends (the repository's files that git does
/// not ignore), plus the workspace's crates from the local cargo cache as vendored sources, so
/// that the build needs no network. Err: why that cannot be made here.
fn offline_context(ctx: &Path) -> Result<(), String> {
    let listed = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(repo())
        .output()
        .map_err(|e| format!("git ls-files: {e}"))?;
    if !listed.status.success() {
        return Err(format!(
            "git ls-files: {}",
            String::from_utf8_lossy(&listed.stderr)
        ));
    }
    for name in listed.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = std::str::from_utf8(name).map_err(|e| e.to_string())?;
        let from = repo().join(name);
        if !from.is_file() {
            continue; // deleted in the working tree
        }
        let to = ctx.join(name);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&from, &to).unwrap();
    }
    let vendored = Command::new(env!("CARGO"))
        .args(["vendor", "--offline", "--locked", "--versioned-dirs"])
        .arg(ctx.join("vendor"))
        .current_dir(repo())
        .output()
        .map_err(|e| format!("cargo vendor: {e}"))?;
    if !vendored.status.success() {
        let err = String::from_utf8_lossy(&vendored.stderr);
        return Err(format!(
            "the workspace's crates are not all in this machine's cargo cache, and the image \
             is built here without network (cargo vendor --offline: {})",
            err.lines().last().unwrap_or("")
        ));
    }
    std::fs::create_dir_all(ctx.join(".cargo")).unwrap();
    let mut config = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ctx.join(".cargo/config.toml"))
        .unwrap();
    writeln!(
        config,
        "\n[source.crates-io]\nreplace-with = \"vendored-sources\"\n\
         [source.vendored-sources]\ndirectory = \"vendor\""
    )
    .unwrap();
    Ok(())
}

/// What the test made in docker, removed when dropped.
struct DockerObjects {
    image: String,
    container: String,
}

impl Drop for DockerObjects {
    fn drop(&mut self) {
        let _ = docker(&["rm", "--force", &self.container], 60);
        let _ = docker(&["image", "rm", "--force", &self.image], 60);
    }
}

#[test]
fn the_image_builds_without_network_and_serves_as_tensorflow_serving_does() {
    let dockerfile_path = repo().join("deploy/docker/Dockerfile.tfserving");
    let dockerfile = std::fs::read_to_string(&dockerfile_path).unwrap();
    if let Some(why) = docker_missing(&dockerfile) {
        teeserve_testkit::absent::<()>(&why, "TEESERVE_REQUIRE_DOCKER");
        return;
    }
    let ctx = tempfile::tempdir().unwrap();
    if let Err(why) = offline_context(ctx.path()) {
        teeserve_testkit::absent::<()>(&why, "TEESERVE_REQUIRE_DOCKER");
        return;
    }
    let id = std::process::id();
    let made = DockerObjects {
        image: format!("teeserve-tfserving-test:{id}"),
        container: format!("teeserve-tfserving-test-{id}"),
    };
    eprintln!(
        "building {} (a release build inside docker, without network: minutes)",
        made.image
    );
    let dockerfile_in_ctx = ctx.path().join("deploy/docker/Dockerfile.tfserving");
    docker(
        &[
            "build",
            "--pull=false",
            "--network=none",
            "--file",
            s(&dockerfile_in_ctx),
            "--tag",
            &made.image,
            s(ctx.path()),
        ],
        3 * 3600,
    )
    .unwrap_or_else(|e| panic!("the image did not build: {e}"));

    // As TF Serving's README runs its image: the model mounted at /models/<name>, MODEL_NAME.
    let models = model_dir();
    let (grpc, rest) = (free_port(), free_port());
    let volume = format!(
        "{}:/models/digits:ro",
        models.path().join("models/digits").display()
    );
    docker(
        &[
            "run",
            "--detach",
            "--name",
            &made.container,
            "--publish",
            &format!("127.0.0.1:{grpc}:8500"),
            "--publish",
            &format!("127.0.0.1:{rest}:8501"),
            "--volume",
            &volume,
            "--env",
            "MODEL_NAME=digits",
            &made.image,
            "--insecure",
        ],
        120,
    )
    .unwrap_or_else(|e| panic!("the container did not start: {e}"));

    let logs = || docker(&["logs", &made.container], 60).unwrap_or_else(|e| e);
    let deadline = Instant::now() + Duration::from_secs(60);
    let response = loop {
        match rest_predict(&format!("127.0.0.1:{rest}")) {
            Ok(r) if r.starts_with("HTTP/1.1") => break r,
            _ if Instant::now() > deadline => {
                panic!("the container did not answer on REST in 60 s:\n{}", logs())
            }
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    };
    assert_eq!(rest_classes(&response), SAMPLE_CLASSES, "{}", logs());
    let dir = tempfile::tempdir().unwrap();
    let answered = grpc_classes(dir.path(), &format!("127.0.0.1:{grpc}"), &["--insecure"]);
    assert_eq!(answered, SAMPLE_CLASSES);
    let logs = logs();
    assert!(
        logs.contains("this TEE is SIMULATED. It gives NO protection"),
        "{logs}"
    );
}
