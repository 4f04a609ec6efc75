//! RA-TLS for teeserve: X.509 certificates that carry TEE evidence binding their own key, in
//! Gramine's formats (the legacy quote extension and the TCG DICE tagged-evidence extension);
//! rustls verifiers that admit a peer only when its evidence verifies and a policy admits it;
//! and the attestation document a server publishes for requesters, with what its quote binds.
//!
//! ```
//! use teeserve_attest::platform::SimulatedPlatform;
//! use teeserve_attest::sim::{self, SimPlatform};
//! use teeserve_ratls::{parse_cert, EvidenceFormat, KeyType, RaTlsIdentity};
//! # let tmp = tempfile::tempdir().unwrap();
//! # let dir = tmp.path().join("sim");
//! // A simulated TEE (it protects nothing; it lets the flow run anywhere).
//! sim::init(&dir, &Default::default()).unwrap();
//! let platform = SimulatedPlatform(SimPlatform::open(&dir, [0x11; 32]).unwrap());
//! let id = RaTlsIdentity::generate(&platform, EvidenceFormat::Both, KeyType::P256).unwrap();
//! let evidence = parse_cert(&id.cert_der).unwrap();
//! assert!(evidence.binding_ok);
//! ```
//!
//! Formats: Gramine `tools/sgx/ra-tls/ra_tls_attest.c`, `ra_tls_verify_common.c`, `ra_tls.h`,
//! `ra_tls_common.h` (see docs/ratls.md). [`document`] holds the attestation document's
//! binding rule.
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

mod binding;
mod cbor;
mod cert;
pub mod document;
pub mod key_release;
pub mod receipt;
pub mod tlog;
mod verifier;

pub use binding::{key_report_data, report_data_over};
pub use document::{AttestationDoc, DocumentError, KeyOrigin, ModelDigest};
pub use verifier::{
    spki_of, Appraiser, AttestedClientVerifier, AttestedServerVerifier, PinnedKeyVerifier,
};

pub use cert::{
    parse_cert, EvidenceFormat, KeyType, RaTlsEvidence, RaTlsIdentity, CBOR_TAG_TEE_QUOTE,
    LEGACY_OID_DER, MAX_EVIDENCE, TCG_OID_DER,
};

/// Why an RA-TLS certificate could not be made or was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum RaTlsError {
    /// The certificate is malformed or carries no evidence.
    #[error("RA-TLS certificate: {0}")]
    Certificate(String),
    /// The evidence does not bind the certificate's key.
    #[error("RA-TLS binding: {0}")]
    Binding(String),
    /// The quote did not verify.
    #[error("RA-TLS evidence: {0}")]
    Verify(#[from] teeserve_attest::VerifyError),
    /// The policy refused the verdict.
    #[error("RA-TLS {0}")]
    Policy(#[from] teeserve_attest::PolicyError),
    /// Collateral could not be obtained.
    #[error("RA-TLS collateral: {0}")]
    Collateral(String),
    /// Evidence could not be produced.
    #[error("RA-TLS evidence: {0}")]
    Platform(#[from] teeserve_attest::platform::PlatformError),
    /// Key or certificate generation failed.
    #[error("RA-TLS generation: {0}")]
    Generate(String),
}
