//! The collateral bundle, as raw signed material, and the RFC 3339 times of its items.
//!
//! The bundle layout is the JSON that Phala's dcap-qvl uses (`QuoteCollateralV3`): PEM issuer
//! chains, hex-encoded DER CRLs, and the inner `tcbInfo` / `enclaveIdentity` objects kept as the
//! exact strings that were signed.

use serde::{Deserialize, Serialize};

/// The largest collateral bundle accepted (real ones are 10-60 KB).
pub const MAX_BUNDLE_SIZE: usize = 4 * 1024 * 1024;

/// Why collateral could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollateralError {
    /// The bundle is not valid JSON or misses a field.
    #[error("collateral bundle: {0}")]
    Bundle(String),
    /// A field has the wrong shape.
    #[error("collateral {field}: {reason}")]
    Field {
        /// Which field, dotted (`tcb_info.fmspc`).
        field: String,
        /// What was wrong.
        reason: String,
    },
    /// The bundle is larger than [`MAX_BUNDLE_SIZE`].
    #[error("collateral bundle is {0} bytes, more than the {MAX_BUNDLE_SIZE} accepted")]
    TooLarge(usize),
    /// Fetching from a PCCS failed.
    #[error("PCCS {url}: {reason}")]
    Fetch {
        /// The URL requested.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

impl CollateralError {
    pub(crate) fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Field {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A collateral bundle, as raw signed material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collateral {
    /// PEM chain of the PCK CRL's issuer (Platform or Processor CA, then root).
    pub pck_crl_issuer_chain: String,
    /// The Intel SGX Root CA CRL (DER).
    #[serde(with = "hex_bytes")]
    pub root_ca_crl: Vec<u8>,
    /// The PCK CRL (DER).
    #[serde(with = "hex_bytes")]
    pub pck_crl: Vec<u8>,
    /// PEM chain of the TCB Info signer (TCB Signing, then root).
    pub tcb_info_issuer_chain: String,
    /// The `tcbInfo` JSON object, exactly as signed.
    pub tcb_info: String,
    /// ECDSA P-256 signature `r || s` over `tcb_info`.
    #[serde(with = "hex_bytes")]
    pub tcb_info_signature: Vec<u8>,
    /// PEM chain of the QE Identity signer.
    pub qe_identity_issuer_chain: String,
    /// The `enclaveIdentity` JSON object, exactly as signed.
    pub qe_identity: String,
    /// ECDSA P-256 signature `r || s` over `qe_identity`.
    #[serde(with = "hex_bytes")]
    pub qe_identity_signature: Vec<u8>,
}

impl Collateral {
    /// Reads a bundle from JSON bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, CollateralError> {
        if bytes.len() > MAX_BUNDLE_SIZE {
            return Err(CollateralError::TooLarge(bytes.len()));
        }
        serde_json::from_slice(bytes).map_err(|e| CollateralError::Bundle(e.to_string()))
    }

    /// Writes the bundle as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s.trim()).map_err(serde::de::Error::custom)
    }
}

/// Parses an RFC 3339 timestamp into Unix seconds.
pub fn parse_time(field: &str, s: &str) -> Result<i64, CollateralError> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| CollateralError::field(field, format!("{s:?} is not an RFC 3339 time: {e}")))
}

/// Formats Unix seconds as RFC 3339 (UTC).
pub fn format_time(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{t}"))
}
