//! DCAP quote verification with Intel QVL semantics (Intel SGX-TDX-DCAP-QuoteVerificationLibrary,
//! `QuoteVerifier.cpp`, `TcbLevelCheck.cpp`, `TdxModuleCheck.cpp`, `TDRelaunchCheck.cpp`).
//!
//! The verification time is always an input. Collateral is checked once into a
//! [`PreparedCollateral`] that can be reused (and cached) for many quotes.

use std::sync::Arc;

use crate::collateral::{format_time, Collateral, EnclaveIdentity, TcbInfo};
use crate::quote::{Body, Quote};
use crate::x509::{sha256, verify_p256, Cert};

mod anchor;
mod chain;
mod error;
mod prepared;
mod qe;
mod tcb;
mod validity;
mod verdict;

pub use anchor::{TrustAnchor, INTEL_ROOT_SHA256};
pub use error::{SignedObject, VerifyError};
pub use prepared::PreparedCollateral;
pub use verdict::{CollateralWindow, RootInfo, SgxMeasurements, TdxMeasurements, Verdict};

use chain::{TrustStore, VerifiedPck};
use tcb::TcbOutcome;
use validity::{cert_validity, check_validity, crl_validity, issued_validity};
use verdict::{sgx_measurements, tdx_measurements};

/// Verifies quotes against collateral, anchored at one root.
///
/// The verifier remembers which certificates it has seen signed by its root (Intel's PCK CAs and
/// TCB Signing certificate are stable), so their signatures are checked once per process.
/// Revocation and validity periods are checked on every verification.
#[derive(Debug, Clone)]
pub struct Verifier {
    trust: TrustStore,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new(TrustAnchor::intel())
    }
}

impl Verifier {
    /// A verifier trusting `anchor`.
    pub fn new(anchor: TrustAnchor) -> Self {
        Self {
            trust: TrustStore::new(anchor),
        }
    }

    /// The trust anchor.
    pub fn anchor(&self) -> &TrustAnchor {
        self.trust.anchor()
    }

    /// Checks the collateral's chains, CRLs and signatures at time `at`.
    pub fn prepare(&self, c: &Collateral, at: i64) -> Result<PreparedCollateral, VerifyError> {
        let prepared = self.prepare_untimed(c)?;
        check_validity(&prepared.validity, at)?;
        Ok(prepared)
    }

    /// Everything of [`Verifier::prepare`] except the time checks.
    pub fn prepare_untimed(&self, c: &Collateral) -> Result<PreparedCollateral, VerifyError> {
        let mut validity = vec![cert_validity(
            "root CA certificate",
            self.trust.anchor().cert(),
        )];
        // Name a foreign (e.g. simulated) root before anything else fails on it.
        let tcb_chain = Cert::chain_from_pem(c.tcb_info_issuer_chain.as_bytes()).ok();
        if let Some(chain) = &tcb_chain {
            self.trust.check_root("tcb_info_issuer_chain", chain)?;
        }
        let root_crl = chain::root_ca_crl(&self.trust, &c.root_ca_crl)?;
        validity.push(crl_validity("root_ca_crl", &root_crl));
        let (tcb_signer, qe_signer) = chain::signing_certs(&self.trust, c, &root_crl, tcb_chain)?;
        validity.push(cert_validity("tcb_info_issuer_chain[0]", &tcb_signer));
        validity.push(cert_validity("qe_identity_issuer_chain[0]", &qe_signer));
        let (tcb_info, qe_identity) = signed_collateral(c, &tcb_signer, &qe_signer)?;
        validity.push(issued_validity(
            "tcb_info",
            tcb_info.issue_date,
            tcb_info.next_update,
        ));
        validity.push(issued_validity(
            "qe_identity",
            qe_identity.issue_date,
            qe_identity.next_update,
        ));
        let pck_crl_issuer =
            chain::pck_crl_issuer(&self.trust, &c.pck_crl_issuer_chain, &root_crl)?;
        validity.push(cert_validity("pck_crl_issuer_chain[0]", &pck_crl_issuer));
        let (pck_crl, pck_crl_issuer) = chain::pck_crl(&self.trust, &c.pck_crl, pck_crl_issuer)?;
        validity.push(crl_validity("pck_crl", &pck_crl));
        Ok(PreparedCollateral::new(
            tcb_info,
            qe_identity,
            root_crl,
            pck_crl,
            pck_crl_issuer,
            validity,
        ))
    }

    /// Checks that a quote's PCK certificate chains to the pinned root (signatures and names;
    /// not revocation or validity, which need collateral). Whatever selects collateral from the
    /// PCK certificate (its FMSPC and CA) calls this first, so that an unverified certificate
    /// cannot make the verifier fetch collateral for platforms of its choosing.
    pub fn check_pck_chain(&self, quote: &Quote) -> Result<(), VerifyError> {
        chain::pck_chain_signed(&self.trust, quote, None).map(|_| ())
    }

    /// Verifies a quote against collateral at time `at` (Unix seconds).
    pub fn verify(
        &self,
        quote: &[u8],
        collateral: &Collateral,
        at: i64,
    ) -> Result<Verdict, VerifyError> {
        let quote = Quote::parse(quote)?;
        let prepared = self.prepare(collateral, at)?;
        self.verify_parsed(&quote, &prepared, at)
    }

    /// Verifies a quote against prepared collateral at time `at`.
    pub fn verify_prepared(
        &self,
        quote: &[u8],
        p: &PreparedCollateral,
        at: i64,
    ) -> Result<Verdict, VerifyError> {
        let quote = Quote::parse(quote)?;
        self.verify_parsed(&quote, p, at)
    }

    /// Verifies a parsed quote against prepared collateral at time `at`.
    pub fn verify_parsed(
        &self,
        quote: &Quote,
        p: &PreparedCollateral,
        at: i64,
    ) -> Result<Verdict, VerifyError> {
        check_validity(&p.validity, at)?;
        let pck = self.pck_chain(quote, p)?;
        check_validity(&pck.validity, at)?;
        let tcb = &p.tcb_info;
        // 4.1.2.4.9: the TCB Info must be for this TEE.
        tcb::check_tcb_info_tee(quote.tee(), tcb)?;
        // 4.1.2.4.10: FMSPC and PCEID.
        tcb::check_fmspc_and_pce_id(&pck.ext, tcb)?;
        // 4.1.2.4.11: TDX module identity.
        let module_status = tcb::tdx_module_status(&quote.body, tcb)?;
        // 4.1.2.4.12: QE report signed by the PCK key.
        qe::check_qe_report_signature(quote, &pck)?;
        // 4.1.2.4.13: QE report data binds the attestation key.
        qe::check_qe_report_data(quote)?;
        // 4.1.2.4.14-15: QE identity.
        let qe_status = qe::check_qe_identity(&quote.qe_report, &p.qe_identity, quote.tee())?;
        // 4.1.2.4.16: the ISV signature.
        check_isv_signature(quote)?;
        // 4.1.2.4.17: platform TCB level.
        let platform = tcb::platform_tcb(&quote.body, tcb, &pck.ext, module_status, qe_status)?;
        // Final convergence with the QE status (QVL `convergeTcbStatusWithQeTcbStatus`).
        let outcome = tcb::converge_with_qe(platform, qe_status)?;
        Ok(self.verdict(quote, p, &pck, &outcome, at))
    }

    /// The quote's PCK chain, verified against `p`'s CRLs; remembered in `p` for the platform's
    /// next quote.
    fn pck_chain(
        &self,
        quote: &Quote,
        p: &PreparedCollateral,
    ) -> Result<Arc<VerifiedPck>, VerifyError> {
        let key = sha256(&quote.pck_chain_pem);
        if let Some(hit) = p.verified_pck(&key) {
            return Ok(hit);
        }
        let verified = Arc::new(chain::verify_pck(
            &self.trust,
            quote,
            &p.root_crl,
            &p.pck_crl,
            &p.pck_crl_issuer,
        )?);
        p.remember_pck(key, verified.clone());
        Ok(verified)
    }

    /// What the verification proved, for a quote that passed every check.
    fn verdict(
        &self,
        quote: &Quote,
        p: &PreparedCollateral,
        pck: &VerifiedPck,
        tcb: &TcbOutcome<'_>,
        at: i64,
    ) -> Verdict {
        let (sgx, tdx) = match &quote.body {
            Body::Sgx(r) => (Some(sgx_measurements(r)), None),
            Body::Td10(t) | Body::Td15(t) => (None, Some(tdx_measurements(t))),
        };
        let anchor = self.trust.anchor();
        Verdict {
            tee: quote.tee(),
            quote_version: quote.header.version,
            tcb_status: tcb.status,
            advisory_ids: tcb.level.advisory_ids.clone(),
            platform_tcb_status: tcb.platform_status,
            qe_tcb_status: tcb.qe_status,
            tdx_module_tcb_status: tcb.module_status,
            tcb_date: tcb.level.tcb_date.clone(),
            fmspc: hex::encode_upper(pck.ext.fmspc),
            pce_id: hex::encode_upper(pck.ext.pce_id),
            debug: quote.body.is_debug(),
            report_data: hex::encode(quote.body.report_data()),
            sgx,
            tdx,
            collateral: CollateralWindow {
                not_before: format_time(p.window.0),
                not_after: format_time(p.window.1),
                oldest_issue: format_time(p.oldest_issue),
                oldest_issue_unix: p.oldest_issue,
                tcb_evaluation_data_number: p.tcb_info.tcb_evaluation_data_number,
            },
            root: RootInfo {
                intel: anchor.is_intel(),
                sha256: anchor.fingerprint(),
                subject: anchor.cert().subject_cn.clone(),
            },
            verified_at: format_time(at),
            verified_at_unix: at,
            pck_revocation_checked: pck.warnings.is_empty(),
            warnings: pck.warnings.clone(),
            evidence_not_before_unix: None,
        }
    }
}

/// The TCB Info and QE Identity, once their signatures by their TCB Signing keys verify.
fn signed_collateral(
    c: &Collateral,
    tcb_signer: &Cert,
    qe_signer: &Cert,
) -> Result<(TcbInfo, EnclaveIdentity), VerifyError> {
    if c.tcb_info_signature.len() != 64
        || !verify_p256(
            &tcb_signer.public_key,
            c.tcb_info.as_bytes(),
            &c.tcb_info_signature,
        )
    {
        return Err(VerifyError::Signature(SignedObject::TcbInfo));
    }
    if c.qe_identity_signature.len() != 64
        || !verify_p256(
            &qe_signer.public_key,
            c.qe_identity.as_bytes(),
            &c.qe_identity_signature,
        )
    {
        return Err(VerifyError::Signature(SignedObject::QeIdentity));
    }
    Ok((
        TcbInfo::parse(&c.tcb_info)?,
        EnclaveIdentity::parse(&c.qe_identity)?,
    ))
}

/// The ISV signature: the enclave or TD report is signed by the attestation key.
fn check_isv_signature(quote: &Quote) -> Result<(), VerifyError> {
    if !verify_p256(
        &quote.attestation_key,
        &quote.signed_region,
        &quote.signature,
    ) {
        return Err(VerifyError::Signature(SignedObject::IsvReport));
    }
    Ok(())
}
