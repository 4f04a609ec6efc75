//! A small harness that runs the real `teeserve` binary the way a user does.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_teeserve"))
}

/// `teeserve-load`, built now beside `teeserve` with the same profile. It is its own package
/// (it links no engine), and `cargo test` builds only the binaries of the package under
/// test, so the requester is built here: a no-op when it is fresh, and never a stale binary
/// left from another build. Cargo holds no lock on the build directory while tests run.
pub fn load_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let target = bin();
            let profile_dir = target.parent().ok_or("no directory for teeserve")?;
            let profile = profile_dir
                .file_name()
                .and_then(|p| p.to_str())
                .ok_or("an unnamed profile directory")?;
            let mut cargo = Command::new(env!("CARGO"));
            cargo
                .current_dir(repo())
                .args(["build", "--quiet", "-p", "teeserve-load"]);
            match profile {
                "debug" => {}
                "release" => {
                    cargo.arg("--release");
                }
                other => {
                    cargo.args(["--profile", other]);
                }
            }
            if let Some(dir) = profile_dir.parent() {
                cargo.arg("--target-dir").arg(dir);
            }
            let out = cargo.output().map_err(|e| format!("cargo: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "cargo build -p teeserve-load failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(profile_dir.join("teeserve-load"))
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A child process, killed and reaped when dropped.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `teeserve kbs --config kbs.toml` in `dir`; returns it and the native address it
/// prints on its first line.
pub fn start_kbs(dir: &Path) -> (Kill, String) {
    let mut child = Kill(
        Command::new(bin())
            .args(["kbs", "--config", "kbs.toml"])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    if let Some(out) = child.0.stdout.take() {
        BufReader::new(out).read_line(&mut line).unwrap();
    }
    let addr = line
        .split("native=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the broker printed no address: {line:?}"))
        .to_owned();
    (child, addr)
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A loopback port free at the time of asking, outside the range connecting sockets get.
/// What a running child has written so far to `log`, a file that is also its stderr. Read at
/// offsets (`pread`), not through the file's position: that position is shared with the child's
/// descriptor, so rewinding it would make the child's next line overwrite the start of the log.
pub fn written_so_far(log: &std::fs::File) -> String {
    use std::os::unix::fs::FileExt as _;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match log.read_at(&mut buf, bytes.len() as u64) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading the server's log: {e}"),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

pub fn free_port() -> u16 {
    teeserve_serving::free_loopback_port().unwrap()
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn fails(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

pub fn run_in(dir: &Path, args: &[&str]) -> Run {
    let out: Output = Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        // The engine tests pass the library explicitly; an inherited one would change what
        // `serve` is asked to do.
        .env_remove("TEESERVE_ONNXRUNTIME_LIB")
        .output()
        .expect("run teeserve");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn run(args: &[&str]) -> Run {
    run_in(&std::env::temp_dir(), args)
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A running `teeserve serve`, killed when dropped, with the addresses its "listening" line
/// gave.
pub struct Serve {
    pub child: Child,
    pub grpc: String,
    pub rest: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `teeserve serve` in `dir` with `args` (no addresses or ports: [`listen`] adds them).
pub fn serve_command(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(dir)
        .arg("serve")
        .args(args)
        .env_remove("RUST_LOG");
    c
}

/// Starts `command()` on loopback and returns once it listens. Without `ports`, free ports are
/// chosen, and chosen again (5 tries) when something else took one first; with `ports`, a
/// port that is taken gives None. Any other failure to start panics with the server's log,
/// which goes to a file (a pipe nobody reads could fill up and stall the server).
pub fn listen(command: impl Fn() -> Command, ports: Option<(u16, u16)>) -> Option<Serve> {
    for _ in 0..5 {
        let (grpc, rest) = ports.unwrap_or_else(|| (free_port(), free_port()));
        let mut log = tempfile::tempfile().unwrap();
        let mut child = command()
            .args(["--grpc_bind_address", "127.0.0.1"])
            .args(["--rest_api_bind_address", "127.0.0.1"])
            .args(["--port", &grpc.to_string()])
            .args(["--rest_api_port", &rest.to_string()])
            .stdout(Stdio::piped())
            .stderr(log.try_clone().unwrap())
            .spawn()
            .expect("start teeserve serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.starts_with("listening") {
            let field = |k: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .unwrap_or_else(|| panic!("no {k} in {line:?}"))
                    .to_owned()
            };
            let (grpc, rest) = (field("grpc="), field("rest="));
            return Some(Serve { child, grpc, rest });
        }
        let _ = child.wait();
        let mut err = String::new();
        log.rewind().unwrap();
        log.read_to_string(&mut err).unwrap();
        assert!(err.contains("cannot listen"), "serve did not start: {err}");
        if ports.is_some() {
            return None;
        }
    }
    panic!("no free ports in 5 tries");
}

/// A Predict request for the bundled digits model: one row of 64 pixels, each `value`.
pub fn digits_request(value: f32) -> teeserve_wire::tensorflow::serving::PredictRequest {
    use teeserve_wire::tensorflow::DataType;
    digits_request_of(DataType::DtFloat, &[1, 64], |t| {
        t.float_val = vec![value; 64]
    })
}

/// A Predict request for the digits model whose one input (`pixels`) is of `dtype` and shape
/// `dims`, its values set by `set`: any shape or type, to test how the server bounds them.
pub fn digits_request_of(
    dtype: teeserve_wire::tensorflow::DataType,
    dims: &[i64],
    set: impl FnOnce(&mut teeserve_wire::tensorflow::TensorProto),
) -> teeserve_wire::tensorflow::serving::PredictRequest {
    use teeserve_wire::tensorflow::serving::{ModelSpec, PredictRequest};
    use teeserve_wire::tensorflow::{tensor_shape_proto, TensorProto, TensorShapeProto};
    let mut pixels = TensorProto {
        dtype: dtype as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: dims
                .iter()
                .map(|&size| tensor_shape_proto::Dim {
                    size,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }),
        ..Default::default()
    };
    set(&mut pixels);
    PredictRequest {
        model_spec: Some(ModelSpec {
            name: "digits".into(),
            ..Default::default()
        }),
        inputs: [("pixels".to_owned(), pixels)].into_iter().collect(),
        output_filter: vec![],
    }
}
