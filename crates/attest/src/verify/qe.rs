//! The quoting enclave: its report is signed by the PCK key, binds the attestation key, and must
//! match the signed QE Identity.

use crate::collateral::{EnclaveIdentity, TcbStatus};
use crate::quote::{EnclaveReport, Quote, Tee};
use crate::x509::{sha256, verify_p256};

use super::chain::VerifiedPck;
use super::error::{SignedObject, VerifyError};
use super::tcb::first_isv_level;

/// At most this many QE reports are remembered per PCK chain.
const MAX_QE_REPORTS: usize = 64;

/// The QE report is signed by the PCK key. A report already verified under this
/// PCK chain is not verified again.
pub(super) fn check_qe_report_signature(
    quote: &Quote,
    pck: &VerifiedPck,
) -> Result<(), VerifyError> {
    let mut qe_key = Vec::with_capacity(448);
    qe_key.extend_from_slice(&quote.qe_report_raw);
    qe_key.extend_from_slice(&quote.qe_report_signature);
    let qe_hash = sha256(&qe_key);
    let seen = pck
        .qe_reports
        .read()
        .map(|s| s.contains(&qe_hash))
        .unwrap_or(false);
    if seen {
        return Ok(());
    }
    if !verify_p256(
        &pck.leaf.public_key,
        &quote.qe_report_raw,
        &quote.qe_report_signature,
    ) {
        return Err(VerifyError::Signature(SignedObject::QeReport));
    }
    if let Ok(mut s) = pck.qe_reports.write() {
        if s.len() < MAX_QE_REPORTS {
            s.insert(qe_hash);
        }
    }
    Ok(())
}

/// The QE report data binds the attestation key: its first 32 bytes are
/// SHA-256(attestation key || QE auth data).
pub(super) fn check_qe_report_data(quote: &Quote) -> Result<(), VerifyError> {
    let mut bound = Vec::with_capacity(64 + quote.qe_auth_data.len());
    bound.extend_from_slice(&quote.attestation_key);
    bound.extend_from_slice(&quote.qe_auth_data);
    if sha256(&bound) != quote.qe_report.report_data[..32] {
        return Err(VerifyError::QeReportData);
    }
    Ok(())
}

/// The QE report matches the QE Identity; returns the status of the QE's level.
pub(super) fn check_qe_identity(
    qe: &EnclaveReport,
    id: &EnclaveIdentity,
    tee: Tee,
) -> Result<TcbStatus, VerifyError> {
    let want_id = match tee {
        Tee::Sgx => "QE",
        Tee::Tdx => "TD_QE",
    };
    if id.id != want_id {
        return Err(VerifyError::QeIdentityMismatch {
            field: "identity id",
            expected: want_id.into(),
            got: id.id.clone(),
        });
    }
    if qe.misc_select & id.miscselect_mask != id.miscselect {
        return Err(VerifyError::QeIdentityMismatch {
            field: "MISCSELECT",
            expected: format!(
                "{:08x} under mask {:08x}",
                id.miscselect, id.miscselect_mask
            ),
            got: format!("{:08x}", qe.misc_select),
        });
    }
    let masked: Vec<u8> = qe
        .attributes
        .iter()
        .zip(id.attributes_mask.iter())
        .map(|(a, m)| a & m)
        .collect();
    if masked != id.attributes {
        return Err(VerifyError::QeIdentityMismatch {
            field: "ATTRIBUTES",
            expected: format!(
                "{} under mask {}",
                hex::encode(id.attributes),
                hex::encode(id.attributes_mask)
            ),
            got: hex::encode(qe.attributes),
        });
    }
    if qe.mr_signer != id.mrsigner {
        return Err(VerifyError::QeIdentityMismatch {
            field: "MRSIGNER",
            expected: hex::encode(id.mrsigner),
            got: hex::encode(qe.mr_signer),
        });
    }
    if qe.isv_prod_id != id.isvprodid {
        return Err(VerifyError::QeIdentityMismatch {
            field: "ISVPRODID",
            expected: id.isvprodid.to_string(),
            got: qe.isv_prod_id.to_string(),
        });
    }
    first_isv_level(&id.levels, qe.isv_svn)
        .map(|l| l.status)
        .ok_or_else(|| {
            VerifyError::TcbNotSupported(format!(
                "QE ISVSVN {} is below every qe_identity level",
                qe.isv_svn
            ))
        })
}
