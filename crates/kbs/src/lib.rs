//! The teeserve key broker (KBS): the model owner's gatekeeper. It holds named secrets (model
//! keys, the serving TLS key) and releases each only to a TEE whose RA-TLS evidence verifies and
//! whose policy admits it, over a native HTTPS API and over Gramine's secret-provisioning
//! protocol, writing one audit line per decision.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let kbs = teeserve_kbs::Kbs::start(std::path::Path::new("kbs.toml")).await?;
//! println!("native API on {}", kbs.native_addr());
//! kbs.reload()?; // what SIGHUP does: a broken configuration is refused, the old one stays
//! # Ok(()) }
//! ```
//!
//! With `[log]` in its configuration, the audit log is a signed transparency log: every line
//! is a leaf of an RFC 9162 Merkle tree, a C2SP checkpoint is signed after every append, and a
//! grant's answer carries its inclusion proof. [`verify_log`], [`prove_inclusion`] and
//! [`prove_consistency`] check and prove such a log offline.
//!
//! [`Kbs`] runs the ports (the native HTTPS API and Gramine's secret provisioning); the
//! [`KeyBroker`] behind them holds the configuration, the audit log and the refusal throttle,
//! and decides what each peer receives. The TEE side of the protocol is
//! `teeserve_tls::broker`, so that a TEE needs nothing from this crate.
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

mod audit;
mod broker;
mod config;
mod gramine;
mod log_verify;
mod server;
mod signed_log;
mod throttle;

pub use broker::KeyBroker;
pub use log_verify::{prove_consistency, prove_inclusion, verify_log, LogCheckError, LogSummary};
pub use server::Kbs;
pub use signed_log::sidecar_path;

/// Key broker errors.
#[derive(Debug, thiserror::Error)]
pub enum KbsError {
    /// The configuration is invalid.
    #[error("config {path}: {reason}")]
    Config {
        /// The config file (or the file it names).
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// An I/O error.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The TLS configuration could not be made.
    #[error("TLS: {0}")]
    Tls(String),
}

impl From<teeserve_tls::TlsError> for KbsError {
    fn from(e: teeserve_tls::TlsError) -> Self {
        match e {
            teeserve_tls::TlsError::File { path, reason } => KbsError::Config { path, reason },
            e => KbsError::Tls(e.to_string()),
        }
    }
}
