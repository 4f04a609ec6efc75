//! The root every chain must end in: the Intel SGX Root CA (embedded, pinned by its SHA-256),
//! or a custom root such as a simulated platform's `root.pem`.

use crate::x509::Cert;

use super::error::VerifyError;

/// SHA-256 of the DER of the Intel SGX Root CA.
pub const INTEL_ROOT_SHA256: &str =
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3";
const INTEL_ROOT_PEM: &str = include_str!("../../data/intel-sgx-root-ca.pem");
const INTEL_PLATFORM_CA_PEM: &str = include_str!("../../data/intel-pck-platform-ca.pem");
const INTEL_PROCESSOR_CA_PEM: &str = include_str!("../../data/intel-pck-processor-ca.pem");

/// The trusted root of all chains.
#[derive(Debug, Clone)]
pub struct TrustAnchor {
    cert: Cert,
    intel: bool,
}

impl TrustAnchor {
    /// The Intel SGX Root CA.
    pub fn intel() -> Self {
        let cert = Cert::chain_from_pem(INTEL_ROOT_PEM.as_bytes())
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_else(unreachable_root);
        TrustAnchor { cert, intel: true }
    }

    /// A custom root from PEM (for example a simulated platform's `root.pem`).
    pub fn from_pem(pem: &[u8]) -> Result<Self, VerifyError> {
        let certs = Cert::chain_from_pem(pem).map_err(|reason| VerifyError::Certificate {
            item: "root certificate",
            reason,
        })?;
        let cert = certs.into_iter().next().ok_or(VerifyError::Certificate {
            item: "root certificate",
            reason: "no certificate".into(),
        })?;
        let intel = hex::encode(cert.fingerprint()) == INTEL_ROOT_SHA256;
        Ok(TrustAnchor { cert, intel })
    }

    /// True when this is Intel's production root.
    pub fn is_intel(&self) -> bool {
        self.intel
    }

    /// SHA-256 of the root's DER, hex.
    pub fn fingerprint(&self) -> String {
        hex::encode(self.cert.fingerprint())
    }

    /// The root certificate.
    pub fn cert(&self) -> &Cert {
        &self.cert
    }

    /// Intel's PCK Platform and Processor CAs that verify against this root: both for Intel's
    /// root, none for any other.
    pub(super) fn intel_pck_cas(&self) -> Vec<Cert> {
        if !self.intel {
            return Vec::new();
        }
        [INTEL_PLATFORM_CA_PEM, INTEL_PROCESSOR_CA_PEM]
            .iter()
            .filter_map(|pem| {
                Cert::chain_from_pem(pem.as_bytes())
                    .ok()?
                    .into_iter()
                    .next()
            })
            .filter(|c| c.verify_by(&self.cert))
            .collect()
    }
}

fn unreachable_root() -> Cert {
    // The embedded PEM is checked by a unit test; this path cannot be reached with it.
    Cert {
        der: Vec::new(),
        subject_raw: Vec::new(),
        issuer_raw: Vec::new(),
        subject_cn: String::new(),
        issuer_cn: String::new(),
        serial: Vec::new(),
        not_before: 0,
        not_after: 0,
        spki: Vec::new(),
        public_key: Vec::new(),
        curve: Vec::new(),
        signed: crate::x509::Signed::default(),
        sgx_extension: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_intel_root_has_the_pinned_fingerprint() {
        let a = TrustAnchor::intel();
        assert_eq!(a.fingerprint(), INTEL_ROOT_SHA256);
        assert!(a.is_intel());
    }
}
