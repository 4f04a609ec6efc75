//! Test support shared by teeserve's crates: where the real test vectors and the optional
//! engine libraries are, and how a test that needs one of them skips when it is absent.
//!
//! A test that needs something outside the repository calls one of the `require_*!` macros at
//! its start. When the thing is absent the test prints `skipped: ...` (naming what is missing
//! and the variable that points to it) and returns. A variable set in CI turns the skip into a
//! failure, so that nothing silently skips there:
//!
//! | needs | found at | points to it | no skip when |
//! |---|---|---|---|
//! | real DCAP and Gramine vectors | `../shared/vectors` beside the repository | `TEESERVE_VECTORS` | `TEESERVE_REQUIRE_VECTORS=1` |
//! | TensorFlow (`libtensorflow_cc.so.2` of the tensorflow-cpu wheel) | nowhere by default | `TEESERVE_TENSORFLOW_LIB` | `TEESERVE_REQUIRE_TENSORFLOW=1` |
//! | a docker daemon, with the base images of `deploy/docker/Dockerfile.tfserving` already pulled | `docker` on `PATH` | `DOCKER_HOST` (docker's own) | `TEESERVE_REQUIRE_DOCKER=1` |
//!
//! ```
//! fn a_test_on_real_quotes() {
//!     let vectors = teeserve_testkit::require_vectors!();
//!     let _quote = vectors.join("dcap/sgx-v3-dcapqvl.quote");
//! }
//! # a_test_on_real_quotes();
//! ```
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

use std::path::{Path, PathBuf};

/// The repository's root directory.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where the shared real vectors are: `TEESERVE_VECTORS`, else `shared/vectors` beside the
/// repository. `None` (after saying so on stderr) when that folder does not exist; a panic
/// instead when `TEESERVE_REQUIRE_VECTORS=1`.
pub fn vectors() -> Option<PathBuf> {
    let (dir, how) = match std::env::var_os("TEESERVE_VECTORS") {
        Some(p) => (PathBuf::from(p), "TEESERVE_VECTORS"),
        None => (repo().join("../shared/vectors"), "the default"),
    };
    if dir.is_dir() {
        return Some(dir);
    }
    absent(
        &format!(
            "the real test vectors (DCAP quotes, Gramine files) are not at {} ({how}); \
         set TEESERVE_VECTORS to the vectors folder",
            dir.display()
        ),
        "TEESERVE_REQUIRE_VECTORS",
    )
}

/// Reports that something a test needs is absent: a skip on stderr, or a panic when the
/// variable `require` is `1`.
pub fn absent<T>(what: &str, require: &str) -> Option<T> {
    if std::env::var(require).as_deref() == Ok("1") {
        panic!("{require}=1 but {what}");
    }
    eprintln!("skipped: {what}");
    None
}

/// The real vectors folder, or returns from the calling test (a skip) when it is absent.
#[macro_export]
macro_rules! require_vectors {
    () => {
        match $crate::vectors() {
            Some(dir) => dir,
            None => return,
        }
    };
}

/// The TensorFlow library (`TEESERVE_TENSORFLOW_LIB`: the tensorflow-cpu wheel's
/// `tensorflow/libtensorflow_cc.so.2`). `None` (after saying so on stderr) when it is not set
/// or not a file; a panic instead when `TEESERVE_REQUIRE_TENSORFLOW=1`.
pub fn tensorflow_lib() -> Option<PathBuf> {
    match std::env::var_os("TEESERVE_TENSORFLOW_LIB").map(PathBuf::from) {
        Some(p) if p.is_file() => Some(p),
        Some(p) => absent(
            &format!(
                "TEESERVE_TENSORFLOW_LIB is {}, which is not a file",
                p.display()
            ),
            "TEESERVE_REQUIRE_TENSORFLOW",
        ),
        None => absent(
            "no TensorFlow library: set TEESERVE_TENSORFLOW_LIB to the tensorflow-cpu wheel's \
             tensorflow/libtensorflow_cc.so.2",
            "TEESERVE_REQUIRE_TENSORFLOW",
        ),
    }
}

/// The TensorFlow library, or returns from the calling test (a skip) when it is absent.
#[macro_export]
macro_rules! require_tensorflow {
    () => {
        match $crate::tensorflow_lib() {
            Some(lib) => lib,
            None => return,
        }
    };
}

/// Makes the test SavedModels of `tests/python/make_savedmodels.py` under `out` with the
/// Python of the virtualenv the TensorFlow library `lib` belongs to (or `TEESERVE_PYTHON`).
pub fn make_savedmodels(lib: &Path, out: &Path) -> Result<(), String> {
    let python = match std::env::var_os("TEESERVE_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => lib
            .ancestors()
            .map(|a| a.join("bin/python"))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                format!(
                    "no bin/python above {}; set TEESERVE_PYTHON to a Python with tensorflow",
                    lib.display()
                )
            })?,
    };
    let script = repo().join("tests/python/make_savedmodels.py");
    let o = std::process::Command::new(&python)
        .arg(&script)
        .arg(out)
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !o.status.success() {
        return Err(format!(
            "{} {} failed: {}",
            python.display(),
            script.display(),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(())
}
