//! Why a quote did not verify: one variant per class of failure, each naming the item, field
//! or signed object at fault.

use crate::collateral::{format_time, CollateralError};
use crate::quote::QuoteError;

/// An object whose signature is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedObject {
    /// The PCK intermediate CA certificate, signed by the root.
    IntermediateCert,
    /// The PCK leaf certificate, signed by the intermediate CA.
    PckCert,
    /// The TCB Signing certificate, signed by the root.
    TcbSigningCert,
    /// The Root CA CRL.
    RootCaCrl,
    /// The PCK CRL.
    PckCrl,
    /// The TCB Info.
    TcbInfo,
    /// The QE Identity.
    QeIdentity,
    /// The QE report, signed by the PCK key.
    QeReport,
    /// The enclave or TD report, signed by the attestation key.
    IsvReport,
}

impl std::fmt::Display for SignedObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SignedObject::IntermediateCert => {
                "PCK intermediate CA certificate (signed by the root)"
            }
            SignedObject::PckCert => "PCK certificate (signed by the intermediate CA)",
            SignedObject::TcbSigningCert => "TCB Signing certificate (signed by the root)",
            SignedObject::RootCaCrl => "root_ca_crl (signed by the root)",
            SignedObject::PckCrl => "pck_crl (signed by the PCK CA)",
            SignedObject::TcbInfo => "tcb_info (tcb_info_signature by the TCB Signing key)",
            SignedObject::QeIdentity => {
                "qe_identity (qe_identity_signature by the TCB Signing key)"
            }
            SignedObject::QeReport => "QE report (qe_report_signature by the PCK key)",
            SignedObject::IsvReport => "quote body (ISV signature by the attestation key)",
        })
    }
}

/// Why a quote did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The quote could not be parsed.
    #[error(transparent)]
    Quote(#[from] QuoteError),
    /// The collateral could not be read.
    #[error(transparent)]
    Collateral(#[from] CollateralError),
    /// A certificate or chain is malformed or has the wrong shape.
    #[error("{item}: {reason}")]
    Certificate {
        /// Which certificate or chain.
        item: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A chain ends in a root other than the trusted one.
    #[error("{item} chains to {subject:?} (sha256 {fingerprint}), not to the trusted root (sha256 {expected}){}",
        if *.simulated { "; this is simulated evidence from a teeserve simulated TEE, which gives no protection (pass its root.pem with --root to verify it anyway)" } else { "" })]
    UntrustedRoot {
        /// Which chain.
        item: &'static str,
        /// The chain root's subject CN.
        subject: String,
        /// SHA-256 of the chain root's DER.
        fingerprint: String,
        /// SHA-256 of the trusted root's DER.
        expected: String,
        /// True when the root is a teeserve simulated root.
        simulated: bool,
    },
    /// A signature did not verify.
    #[error("signature of the {0} does not verify")]
    Signature(SignedObject),
    /// An item's validity ended before the verification time.
    #[error("{item}.{field} {} is before the verification time {}", format_time(*.bound), format_time(*.at))]
    Expired {
        /// The item.
        item: String,
        /// `notAfter` or `nextUpdate`.
        field: &'static str,
        /// Its value.
        bound: i64,
        /// The verification time.
        at: i64,
    },
    /// An item's validity starts after the verification time.
    #[error("{item}.{field} {} is after the verification time {}", format_time(*.bound), format_time(*.at))]
    NotYetValid {
        /// The item.
        item: String,
        /// `notBefore`, `thisUpdate` or `issueDate`.
        field: &'static str,
        /// Its value.
        bound: i64,
        /// The verification time.
        at: i64,
    },
    /// A certificate is listed in a CRL.
    #[error("{item} (serial {serial}) is revoked by the {crl}")]
    Revoked {
        /// The revoked certificate.
        item: &'static str,
        /// Its serial, hex.
        serial: String,
        /// The CRL that lists it.
        crl: &'static str,
    },
    /// A CRL was issued by someone other than the expected CA.
    #[error("{crl} is issued by {got:?}, expected {expected:?}")]
    CrlIssuer {
        /// Which CRL.
        crl: &'static str,
        /// The expected issuer CN.
        expected: String,
        /// The CRL's issuer CN.
        got: String,
    },
    /// The PCK certificate's FMSPC differs from the TCB Info's.
    #[error("PCK certificate FMSPC {pck} does not match tcb_info.fmspc {tcb_info}")]
    FmspcMismatch {
        /// From the PCK certificate.
        pck: String,
        /// From the TCB Info.
        tcb_info: String,
    },
    /// The PCK certificate's PCE id differs from the TCB Info's.
    #[error("PCK certificate PCE-ID {pck} does not match tcb_info.pceId {tcb_info}")]
    PceIdMismatch {
        /// From the PCK certificate.
        pck: String,
        /// From the TCB Info.
        tcb_info: String,
    },
    /// The TCB Info is for another TEE or version.
    #[error("tcb_info mismatch: {0}")]
    TcbInfoMismatch(String),
    /// The QE report does not match the QE Identity.
    #[error("QE report {field} {got} does not match qe_identity ({expected})")]
    QeIdentityMismatch {
        /// Which field.
        field: &'static str,
        /// What the identity requires.
        expected: String,
        /// What the report has.
        got: String,
    },
    /// The QE report data does not bind the attestation key.
    #[error("QE report data does not equal SHA-256(attestation key || QE auth data)")]
    QeReportData,
    /// The TDX module does not match the TCB Info's module identity.
    #[error("TDX module mismatch: {0}")]
    TdxModuleMismatch(String),
    /// No TCB level matches (Intel's TCB_NOT_SUPPORTED).
    #[error("no matching TCB level: {0} (Intel: TCB_NOT_SUPPORTED)")]
    TcbNotSupported(String),
    /// The TCB level is revoked.
    #[error("TCB status is Revoked ({0})")]
    TcbRevoked(String),
}

impl VerifyError {
    /// The check that failed, as a short stable name a caller can branch on (the message says
    /// exactly what failed).
    pub fn rule(&self) -> &'static str {
        match self {
            VerifyError::Quote(_) => "quote",
            VerifyError::Collateral(_) => "collateral",
            VerifyError::Certificate { .. } => "certificate",
            VerifyError::UntrustedRoot { .. } => "root",
            VerifyError::Signature(_) => "signature",
            VerifyError::Expired { .. } => "expired",
            VerifyError::NotYetValid { .. } => "not_yet_valid",
            VerifyError::Revoked { .. } => "revoked",
            VerifyError::CrlIssuer { .. } => "crl_issuer",
            VerifyError::FmspcMismatch { .. } => "fmspc",
            VerifyError::PceIdMismatch { .. } => "pce_id",
            VerifyError::TcbInfoMismatch(_) => "tcb_info",
            VerifyError::QeIdentityMismatch { .. } => "qe_identity",
            VerifyError::QeReportData => "qe_report_data",
            VerifyError::TdxModuleMismatch(_) => "tdx_module",
            VerifyError::TcbNotSupported(_) => "tcb_not_supported",
            VerifyError::TcbRevoked(_) => "tcb_revoked",
        }
    }
}
