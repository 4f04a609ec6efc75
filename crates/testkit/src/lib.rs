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
