//! Sealed files for teeserve: the model never sits on the TEE host's disk in plaintext.
//!
//! Two formats, each a namespace with its writer and reader (in memory, and file to file),
//! both keyed by a [`SealKey`]:
//! - [`stream`]: teeserve's own format (docs/SEALED_FORMAT.md): an authenticated header, then
//!   AES-256-GCM chunks in the STREAM construction, streamed in constant memory.
//! - [`gramine`]: Gramine protected files, as written by `gramine-sgx-pf-crypt` (v1 and v2), so
//!   files sealed here open under an unmodified Gramine and Gramine's files unseal here.
//!
//! [`binding`] holds the rule for the name a sealed model file is bound to.
//!
//! ```
//! use teeserve_seal::{stream, SealKey};
//! let key = SealKey::generate(32).unwrap();
//! let mut sealed = Vec::new();
//! stream::seal(&key, "model.onnx", 5, &b"hello"[..], &mut sealed, &stream::SealOptions::default()).unwrap();
//! let plain = stream::unseal_to_vec(&key, &sealed, Some("model.onnx")).unwrap();
//! assert_eq!(&plain[..], b"hello");
//! ```
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

pub mod binding;
pub mod gramine;
mod key;
pub mod stream;

pub use key::SealKey;

/// Why sealing or unsealing failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Reading the input or writing the output failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The input is not a sealed file of the expected format.
    #[error("not a {format} sealed file: {reason}")]
    Format {
        /// `teeserve` or `gramine`.
        format: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The key does not open this file.
    #[error("wrong key: {0}")]
    WrongKey(String),
    /// Authentication failed: the file was modified, truncated, reordered or spliced.
    #[error("tampered sealed file: {0}")]
    Tampered(String),
    /// The file is bound to another name or path.
    #[error("bound name mismatch: the file is sealed for {found:?}, expected {expected:?}")]
    NameMismatch {
        /// The name in the file.
        found: String,
        /// The name the caller expected.
        expected: String,
    },
    /// A key of the wrong size or shape.
    #[error("key: {0}")]
    Key(String),
    /// An argument outside the supported range.
    #[error("{0}")]
    Invalid(String),
}
