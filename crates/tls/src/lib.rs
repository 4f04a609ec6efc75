//! Ordinary TLS for teeserve: loading PEM certificates and keys, a small CA that issues server
//! and client certificates (`teeserve tls init`), and the rustls configurations (one crypto
//! provider, the protocol versions) that teeserve's endpoints use; and, in [`broker`], the TEE
//! side of the key broker's protocol. The key broker and the server both build on it, so the
//! server needs nothing from the broker's crate.
//!
//! ```
//! let ca = teeserve_tls::make_ca("owner CA").unwrap();
//! let server = teeserve_tls::issue(&ca, "server", &["localhost".into()], false).unwrap();
//! let chain = teeserve_tls::certs_from_pem(server.cert_pem.as_bytes()).unwrap();
//! let key = teeserve_tls::key_from_pem(server.key_pem.as_bytes()).unwrap();
//! let config = rustls::ServerConfig::builder_with_provider(teeserve_tls::provider())
//!     .with_safe_default_protocol_versions()
//!     .unwrap()
//!     .with_no_client_auth()
//!     .with_single_cert(chain, key)
//!     .unwrap();
//! # drop(config);
//! ```
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

pub mod broker;
mod ca;
mod config;
mod pem;

pub use ca::{issue, make_ca, IssuedCert};
pub use config::{client_config, provider, server_config, server_name};
pub use pem::{certs_from_pem, key_from_pem, load_certs, load_key, roots_from_pem};

/// Why TLS material could not be loaded or a configuration made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds no usable certificate or key.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The CA certificates to trust are not usable.
    #[error("CA: {0}")]
    Ca(String),
    /// rustls refused the configuration.
    #[error("{0}")]
    Config(rustls::Error),
    /// The certificate chain and the private key do not make a usable pair.
    #[error("certificate and key: {0}")]
    CertKey(rustls::Error),
    /// PEM text that holds no usable certificate or key.
    #[error("{0}")]
    Pem(String),
    /// A certificate could not be made.
    #[error("cannot make a certificate: {0}")]
    Issue(String),
    /// The name is not a DNS name or IP address a certificate can be checked against.
    #[error("{0:?} is not a valid server name")]
    ServerName(String),
}
