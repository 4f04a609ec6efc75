//! The outcome of a successful verification: what was proven about the evidence. It serialises
//! to the JSON that `teeserve attest verify` prints, and it is what a policy appraises.

use serde::{Deserialize, Serialize};

use crate::collateral::TcbStatus;
use crate::quote::{EnclaveReport, TdReport, Tee};

/// The collateral validity window and freshness, as recorded in a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollateralWindow {
    /// Latest start of validity over every item (RFC 3339).
    pub not_before: String,
    /// Earliest end of validity over every item (RFC 3339).
    pub not_after: String,
    /// Oldest issue time of tcb_info, qe_identity and pck_crl (RFC 3339).
    pub oldest_issue: String,
    /// Unix seconds of `oldest_issue`.
    pub oldest_issue_unix: i64,
    /// tcbEvaluationDataNumber of the TCB Info.
    pub tcb_evaluation_data_number: u32,
}

/// The root a verdict chains to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootInfo {
    /// True for Intel's production root; false for any other (simulated) root.
    pub intel: bool,
    /// SHA-256 of the root's DER, hex.
    pub sha256: String,
    /// The root's subject CN.
    pub subject: String,
}

/// SGX measurements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SgxMeasurements {
    /// MRENCLAVE, hex.
    pub mrenclave: String,
    /// MRSIGNER, hex.
    pub mrsigner: String,
    /// ISVPRODID.
    pub isv_prod_id: u16,
    /// ISVSVN.
    pub isv_svn: u16,
    /// ATTRIBUTES (flags || xfrm), hex.
    pub attributes: String,
    /// MISCSELECT.
    pub misc_select: u32,
    /// CONFIGID, hex.
    pub config_id: String,
    /// CONFIGSVN.
    pub config_svn: u16,
}

/// TDX measurements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdxMeasurements {
    /// MRTD, hex.
    pub mrtd: String,
    /// RTMR0..3, hex.
    pub rtmr: [String; 4],
    /// MRCONFIGID, hex.
    pub mrconfigid: String,
    /// MROWNER, hex.
    pub mrowner: String,
    /// MROWNERCONFIG, hex.
    pub mrownerconfig: String,
    /// MRSEAM, hex.
    pub mrseam: String,
    /// TDATTRIBUTES, hex.
    pub td_attributes: String,
    /// XFAM, hex.
    pub xfam: String,
    /// TEE_TCB_SVN, hex.
    pub tee_tcb_svn: String,
}

/// The outcome of a successful verification: what was proven about the evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// `sgx` or `tdx`.
    pub tee: Tee,
    /// Quote version (3, 4 or 5).
    pub quote_version: u16,
    /// Final TCB status (Intel's convergence of platform and QE statuses).
    pub tcb_status: TcbStatus,
    /// Advisory IDs of the matched TCB level.
    pub advisory_ids: Vec<String>,
    /// Status of the matched platform (SGX or TDX) TCB level.
    pub platform_tcb_status: TcbStatus,
    /// Status of the QE's TCB level.
    pub qe_tcb_status: TcbStatus,
    /// Status of the TDX module's level, when one applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tdx_module_tcb_status: Option<TcbStatus>,
    /// tcbDate of the matched level.
    pub tcb_date: String,
    /// FMSPC, hex.
    pub fmspc: String,
    /// PCE id, hex.
    pub pce_id: String,
    /// True for a debug enclave or TD.
    pub debug: bool,
    /// The 64 bytes of report data, hex.
    pub report_data: String,
    /// SGX measurements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sgx: Option<SgxMeasurements>,
    /// TDX measurements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tdx: Option<TdxMeasurements>,
    /// Collateral window.
    pub collateral: CollateralWindow,
    /// The root the evidence chains to.
    pub root: RootInfo,
    /// The verification time (RFC 3339).
    pub verified_at: String,
    /// The verification time, Unix seconds.
    pub verified_at_unix: i64,
    /// True when the PCK certificate was checked against its own CA's CRL.
    pub pck_revocation_checked: bool,
    /// Facts a policy may want to weigh that did not fail verification.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// When the evidence's carrier was made (an RA-TLS certificate's notBefore, Unix seconds);
    /// `None` for a bare quote. Set by whoever parsed the carrier; the quote does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_not_before_unix: Option<i64>,
}

impl Verdict {
    /// The report data bytes.
    pub fn report_data_bytes(&self) -> Vec<u8> {
        hex::decode(&self.report_data).unwrap_or_default()
    }
}

/// The measurements of an enclave report, as a verdict records them.
pub(super) fn sgx_measurements(r: &EnclaveReport) -> SgxMeasurements {
    SgxMeasurements {
        mrenclave: hex::encode(r.mr_enclave),
        mrsigner: hex::encode(r.mr_signer),
        isv_prod_id: r.isv_prod_id,
        isv_svn: r.isv_svn,
        attributes: hex::encode(r.attributes),
        misc_select: r.misc_select,
        config_id: hex::encode(r.config_id),
        config_svn: r.config_svn,
    }
}

/// The measurements of a TD report, as a verdict records them.
pub(super) fn tdx_measurements(t: &TdReport) -> TdxMeasurements {
    TdxMeasurements {
        mrtd: hex::encode(t.mr_td),
        rtmr: t.rtmr.map(hex::encode),
        mrconfigid: hex::encode(t.mr_config_id),
        mrowner: hex::encode(t.mr_owner),
        mrownerconfig: hex::encode(t.mr_owner_config),
        mrseam: hex::encode(t.mr_seam),
        td_attributes: hex::encode(t.td_attributes),
        xfam: hex::encode(t.xfam),
        tee_tcb_svn: hex::encode(t.tee_tcb_svn),
    }
}
