//! Certificate chains and CRLs: the TCB Signing chains, the root CA CRL, the PCK CRL and its
//! issuer chain from the collateral, and the PCK chain in the quote, each checked up to the
//! trusted root.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use crate::collateral::Collateral;
use crate::pck::SgxExtension;
use crate::quote::Quote;
use crate::x509::{Cert, Crl};

use super::anchor::TrustAnchor;
use super::error::{SignedObject, VerifyError};
use super::validity::{cert_validity, Validity};

/// At most this many certificates are remembered as signed by the root.
const MAX_REMEMBERED: usize = 1024;

/// The trust anchor, and the certificates known to be signed by it.
///
/// Intel's PCK CAs and TCB Signing certificate are stable, so their signatures are checked once
/// per process and remembered. Revocation and validity periods are checked on every use.
#[derive(Debug, Clone)]
pub(super) struct TrustStore {
    anchor: TrustAnchor,
    signed_by_root: Arc<RwLock<HashSet<[u8; 32]>>>,
    /// Intel's PCK Platform and Processor CAs, verified against the root at construction (empty
    /// for other roots).
    known_intermediates: Arc<Vec<Cert>>,
}

impl TrustStore {
    pub(super) fn new(anchor: TrustAnchor) -> Self {
        let known = anchor.intel_pck_cas();
        let signed_by_root = known.iter().map(Cert::fingerprint).collect();
        Self {
            anchor,
            signed_by_root: Arc::new(RwLock::new(signed_by_root)),
            known_intermediates: Arc::new(known),
        }
    }

    pub(super) fn anchor(&self) -> &TrustAnchor {
        &self.anchor
    }

    fn remember(&self, c: &Cert) {
        if let Ok(mut set) = self.signed_by_root.write() {
            if set.len() < MAX_REMEMBERED {
                set.insert(c.fingerprint());
            }
        }
    }

    /// True when `c` is signed by the root (remembered, or checked now).
    fn signed_by_root(&self, c: &Cert) -> bool {
        let fp = c.fingerprint();
        if self
            .signed_by_root
            .read()
            .map(|s| s.contains(&fp))
            .unwrap_or(false)
        {
            return true;
        }
        let ok = c.verify_by(self.anchor.cert());
        if ok {
            self.remember(c);
        }
        ok
    }

    /// Checks that `chain` ends in the trusted root.
    pub(super) fn check_root(&self, item: &'static str, chain: &[Cert]) -> Result<(), VerifyError> {
        let root = chain.last().ok_or(VerifyError::Certificate {
            item,
            reason: "empty chain".into(),
        })?;
        if root.der != self.anchor.cert().der {
            return Err(VerifyError::UntrustedRoot {
                item,
                subject: root.subject_cn.clone(),
                fingerprint: hex::encode(root.fingerprint()),
                expected: self.anchor.fingerprint(),
                simulated: root.subject_cn.contains("teeserve Simulated"),
            });
        }
        Ok(())
    }
}

/// The root CA CRL: issued and signed by the root.
pub(super) fn root_ca_crl(trust: &TrustStore, der: &[u8]) -> Result<Crl, VerifyError> {
    let root = trust.anchor.cert();
    let root_crl = Crl::parse(der).map_err(|reason| VerifyError::Certificate {
        item: "root_ca_crl",
        reason,
    })?;
    if root_crl.issuer_raw != root.subject_raw {
        return Err(VerifyError::CrlIssuer {
            crl: "root_ca_crl",
            expected: root.subject_cn.clone(),
            got: root_crl.issuer_cn.clone(),
        });
    }
    if !root_crl.verify_by(root) {
        return Err(VerifyError::Signature(SignedObject::RootCaCrl));
    }
    Ok(root_crl)
}

/// The TCB Signing certificates of the TCB Info and of the QE Identity. `tcb_chain` is the TCB
/// Info's issuer chain when it was already parsed.
pub(super) fn signing_certs(
    trust: &TrustStore,
    c: &Collateral,
    root_crl: &Crl,
    tcb_chain: Option<Vec<Cert>>,
) -> Result<(Cert, Cert), VerifyError> {
    let tcb_signer = signing_chain(
        trust,
        "tcb_info_issuer_chain",
        &c.tcb_info_issuer_chain,
        root_crl,
        tcb_chain,
    )?;
    // Intel serves the same chain for both; verify it once.
    let qe_signer = if c.qe_identity_issuer_chain == c.tcb_info_issuer_chain {
        tcb_signer.clone()
    } else {
        signing_chain(
            trust,
            "qe_identity_issuer_chain",
            &c.qe_identity_issuer_chain,
            root_crl,
            None,
        )?
    };
    Ok((tcb_signer, qe_signer))
}

/// A TCB Signing chain (TCB Signing certificate, root); returns the signing certificate.
fn signing_chain(
    trust: &TrustStore,
    item: &'static str,
    pem: &str,
    root_crl: &Crl,
    parsed: Option<Vec<Cert>>,
) -> Result<Cert, VerifyError> {
    let chain = match parsed {
        Some(c) => c,
        None => Cert::chain_from_pem(pem.as_bytes())
            .map_err(|reason| VerifyError::Certificate { item, reason })?,
    };
    trust.check_root(item, &chain)?;
    if chain.len() != 2 {
        return Err(VerifyError::Certificate {
            item,
            reason: format!(
                "{} certificates, expected 2 (TCB Signing, root)",
                chain.len()
            ),
        });
    }
    let signer = chain[0].clone();
    if !trust.signed_by_root(&signer) {
        return Err(VerifyError::Signature(SignedObject::TcbSigningCert));
    }
    if root_crl.is_revoked(&signer.serial) {
        return Err(VerifyError::Revoked {
            item: "TCB Signing certificate",
            serial: hex::encode(&signer.serial),
            crl: "root_ca_crl",
        });
    }
    Ok(signer)
}

/// The PCK CRL's issuer chain (PCK CA, root); returns the PCK CA.
pub(super) fn pck_crl_issuer(
    trust: &TrustStore,
    pem: &str,
    root_crl: &Crl,
) -> Result<Cert, VerifyError> {
    let issuer_chain =
        Cert::chain_from_pem(pem.as_bytes()).map_err(|reason| VerifyError::Certificate {
            item: "pck_crl_issuer_chain",
            reason,
        })?;
    trust.check_root("pck_crl_issuer_chain", &issuer_chain)?;
    let pck_crl_issuer = issuer_chain
        .first()
        .filter(|_| issuer_chain.len() == 2)
        .cloned()
        .ok_or_else(|| VerifyError::Certificate {
            item: "pck_crl_issuer_chain",
            reason: format!(
                "{} certificates, expected 2 (PCK CA, root)",
                issuer_chain.len()
            ),
        })?;
    if !trust.signed_by_root(&pck_crl_issuer) {
        return Err(VerifyError::Signature(SignedObject::IntermediateCert));
    }
    if root_crl.is_revoked(&pck_crl_issuer.serial) {
        return Err(VerifyError::Revoked {
            item: "PCK intermediate CA certificate",
            serial: hex::encode(&pck_crl_issuer.serial),
            crl: "root_ca_crl",
        });
    }
    Ok(pck_crl_issuer)
}

/// The PCK CRL, authenticated; returns it with the PCK CA that signed it.
pub(super) fn pck_crl(
    trust: &TrustStore,
    der: &[u8],
    pck_crl_issuer: Cert,
) -> Result<(Crl, Cert), VerifyError> {
    let pck_crl = Crl::parse(der).map_err(|reason| VerifyError::Certificate {
        item: "pck_crl",
        reason,
    })?;
    // The CRL's issuer is normally the first certificate of its issuer chain. Hand-assembled
    // bundles sometimes carry the other Intel PCK CA's CRL; Intel's two PCK CAs are known,
    // so such a CRL can still be authenticated (and is then recorded as not covering the PCK).
    let pck_crl_issuer = if pck_crl.issuer_raw == pck_crl_issuer.subject_raw {
        pck_crl_issuer
    } else {
        trust
            .known_intermediates
            .iter()
            .find(|ca| ca.subject_raw == pck_crl.issuer_raw)
            .cloned()
            .ok_or_else(|| VerifyError::CrlIssuer {
                crl: "pck_crl",
                expected: pck_crl_issuer.subject_cn.clone(),
                got: pck_crl.issuer_cn.clone(),
            })?
    };
    if !pck_crl.verify_by(&pck_crl_issuer) {
        return Err(VerifyError::Signature(SignedObject::PckCrl));
    }
    Ok((pck_crl, pck_crl_issuer))
}

/// Checks a quote's PCK certificate chain up to the pinned root: its shape, names and
/// signatures (revocation and validity need collateral). `trusted_inter` is a PCK CA already
/// known to be signed by the root.
pub(super) fn pck_chain_signed(
    trust: &TrustStore,
    quote: &Quote,
    trusted_inter: Option<&Cert>,
) -> Result<Vec<Cert>, VerifyError> {
    let item = "PCK certificate chain (quote certification data)";
    let chain = Cert::chain_from_pem(&quote.pck_chain_pem)
        .map_err(|reason| VerifyError::Certificate { item, reason })?;
    if chain.len() != 3 {
        return Err(VerifyError::Certificate {
            item,
            reason: format!(
                "{} certificates, expected 3 (PCK, PCK CA, root)",
                chain.len()
            ),
        });
    }
    trust.check_root(item, &chain)?;
    let (leaf, inter) = (&chain[0], &chain[1]);
    if !inter.subject_cn.contains("CA") {
        return Err(VerifyError::Certificate {
            item: "PCK intermediate CA certificate",
            reason: format!("subject CN {:?} does not name a CA", inter.subject_cn),
        });
    }
    if !leaf.subject_cn.contains("SGX PCK Certificate") {
        return Err(VerifyError::Certificate {
            item: "PCK certificate",
            reason: format!(
                "subject CN {:?} is not an SGX PCK Certificate",
                leaf.subject_cn
            ),
        });
    }
    if inter.issuer_raw != trust.anchor.cert().subject_raw || leaf.issuer_raw != inter.subject_raw {
        return Err(VerifyError::Certificate {
            item,
            reason: "issuer and subject names do not chain".into(),
        });
    }
    // The PCK CA is normally the PCK CRL's issuer, already verified against the root.
    if trusted_inter.map(|t| t.der != inter.der).unwrap_or(true) && !trust.signed_by_root(inter) {
        return Err(VerifyError::Signature(SignedObject::IntermediateCert));
    }
    if !leaf.verify_by(inter) {
        return Err(VerifyError::Signature(SignedObject::PckCert));
    }
    Ok(chain)
}

/// A PCK chain that was verified against a prepared collateral set.
#[derive(Debug)]
pub(super) struct VerifiedPck {
    /// QE reports (with their signatures) already verified under this PCK key: a platform's QE
    /// report only changes when its attestation key does.
    pub(super) qe_reports: RwLock<HashSet<[u8; 32]>>,
    pub(super) leaf: Cert,
    pub(super) warnings: Vec<String>,
    pub(super) ext: SgxExtension,
    pub(super) validity: Vec<Validity>,
}

/// Checks a quote's PCK chain against the collateral's CRLs (`pck_crl_issuer` signed the PCK
/// CRL) and reads the PCK certificate's SGX extension.
pub(super) fn verify_pck(
    trust: &TrustStore,
    quote: &Quote,
    root_crl: &Crl,
    pck_crl: &Crl,
    pck_crl_issuer: &Cert,
) -> Result<VerifiedPck, VerifyError> {
    let chain = pck_chain_signed(trust, quote, Some(pck_crl_issuer))?;
    let (leaf, inter) = (&chain[0], &chain[1]);
    if root_crl.is_revoked(&inter.serial) {
        return Err(VerifyError::Revoked {
            item: "PCK intermediate CA certificate",
            serial: hex::encode(&inter.serial),
            crl: "root_ca_crl",
        });
    }
    // The PCK CRL should come from the CA that issued this PCK certificate. Collateral
    // assembled by hand sometimes pairs the other Intel PCK CA's CRL: the PCK's revocation
    // then cannot be checked. That is recorded in the verdict, and policies refuse it
    // unless they set `allow_unchecked_pck_revocation`.
    let crl_matches =
        pck_crl_issuer.subject_raw == inter.subject_raw && pck_crl_issuer.spki == inter.spki;
    let mut warnings = Vec::new();
    if !crl_matches {
        warnings.push(format!(
            "pck_crl is issued by {:?}, not by the PCK certificate's issuer {:?}: the PCK certificate's revocation was not checked",
            pck_crl.issuer_cn, inter.subject_cn
        ));
    }
    if crl_matches && pck_crl.is_revoked(&leaf.serial) {
        return Err(VerifyError::Revoked {
            item: "PCK certificate",
            serial: hex::encode(&leaf.serial),
            crl: "pck_crl",
        });
    }
    let ext_der = leaf
        .sgx_extension
        .as_deref()
        .ok_or(VerifyError::Certificate {
            item: "PCK certificate",
            reason: "no SGX extension (1.2.840.113741.1.13.1)".into(),
        })?;
    let ext = SgxExtension::parse(ext_der).map_err(|e| VerifyError::Certificate {
        item: "PCK certificate SGX extension",
        reason: e.to_string(),
    })?;
    Ok(VerifiedPck {
        validity: vec![
            cert_validity("PCK certificate", leaf),
            cert_validity("PCK intermediate CA certificate", inter),
        ],
        qe_reports: RwLock::new(HashSet::new()),
        leaf: leaf.clone(),
        ext,
        warnings,
    })
}
