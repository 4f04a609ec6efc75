//! TCB levels: whether the TCB Info is for this platform, which of its levels the platform and
//! the TDX module reach, and how their statuses and the QE's combine into the verdict's, as
//! Intel's QVL does it (`TcbLevelCheck.cpp`, `TdxModuleCheck.cpp`, `TDRelaunchCheck.cpp`).

use crate::collateral::{IsvLevel, TcbInfo, TcbLevel, TcbStatus, TdxModuleIdentity};
use crate::pck::SgxExtension;
use crate::quote::{Body, TdReport, Tee};

use super::error::VerifyError;

/// The TCB Info must be for the quote's TEE (and, for TDX, be version 3).
pub(super) fn check_tcb_info_tee(tee: Tee, tcb: &TcbInfo) -> Result<(), VerifyError> {
    match (tee, tcb.id.as_str(), tcb.version) {
        (Tee::Sgx, "SGX", _) => Ok(()),
        (Tee::Tdx, "TDX", 3) => Ok(()),
        _ => Err(VerifyError::TcbInfoMismatch(format!(
            "a {tee} quote cannot be verified with TCB Info id {} version {}",
            tcb.id, tcb.version
        ))),
    }
}

/// The PCK certificate's FMSPC and PCEID are the TCB Info's.
pub(super) fn check_fmspc_and_pce_id(ext: &SgxExtension, tcb: &TcbInfo) -> Result<(), VerifyError> {
    if ext.fmspc != tcb.fmspc {
        return Err(VerifyError::FmspcMismatch {
            pck: hex::encode_upper(ext.fmspc),
            tcb_info: hex::encode_upper(tcb.fmspc),
        });
    }
    if ext.pce_id != tcb.pce_id {
        return Err(VerifyError::PceIdMismatch {
            pck: hex::encode_upper(ext.pce_id),
            tcb_info: hex::encode_upper(tcb.pce_id),
        });
    }
    Ok(())
}

/// A TD's module matches the TCB Info's module identity. Returns the status of the
/// module's TCB level: `None` for SGX, and for a TD whose module has no major version.
pub(super) fn tdx_module_status(
    body: &Body,
    tcb: &TcbInfo,
) -> Result<Option<TcbStatus>, VerifyError> {
    match body {
        Body::Td10(td) | Body::Td15(td) => check_tdx_module(td, tcb),
        Body::Sgx(_) => Ok(None),
    }
}

fn check_tdx_module(td: &TdReport, tcb: &TcbInfo) -> Result<Option<TcbStatus>, VerifyError> {
    let version = td.tee_tcb_svn[1];
    let identity: &TdxModuleIdentity = if version > 0 {
        let want = format!("TDX_{version:02X}");
        tcb.tdx_module_identities
            .iter()
            .find(|m| m.id.eq_ignore_ascii_case(&want))
            .ok_or_else(|| {
                VerifyError::TdxModuleMismatch(format!(
                    "tcb_info has no tdxModuleIdentities entry {want}"
                ))
            })?
    } else {
        tcb.tdx_module
            .as_ref()
            .ok_or_else(|| VerifyError::TdxModuleMismatch("tcb_info has no tdxModule".into()))?
    };
    if identity.mrsigner != td.mr_signer_seam {
        return Err(VerifyError::TdxModuleMismatch(format!(
            "MRSIGNERSEAM {} is not {}",
            hex::encode(td.mr_signer_seam),
            hex::encode(&identity.mrsigner)
        )));
    }
    if td.seam_attributes != [0u8; 8] || identity.attributes.iter().any(|&b| b != 0) {
        return Err(VerifyError::TdxModuleMismatch(format!(
            "SEAMATTRIBUTES {} are not the expected {}",
            hex::encode(td.seam_attributes),
            hex::encode(&identity.attributes)
        )));
    }
    if version == 0 {
        return Ok(None);
    }
    let level =
        first_isv_level(&identity.levels, u16::from(td.tee_tcb_svn[0])).ok_or_else(|| {
            VerifyError::TcbNotSupported(format!(
                "TDX module ISVSVN {} is below every level of {}",
                td.tee_tcb_svn[0], identity.id
            ))
        })?;
    Ok(Some(level.status))
}

/// The first level whose ISV SVN the given one reaches (a TDX module's or the QE's).
pub(super) fn first_isv_level(levels: &[IsvLevel], svn: u16) -> Option<&IsvLevel> {
    levels.iter().find(|l| l.isvsvn <= svn)
}

/// The TCB level the platform reaches, and its status with the TDX module's folded in.
#[derive(Debug)]
pub(super) struct PlatformTcb<'a> {
    pub(super) level: &'a TcbLevel,
    pub(super) status: TcbStatus,
    pub(super) module_status: Option<TcbStatus>,
}

/// The first (highest) level whose SGX components and PCESVN the PCK certificate
/// reaches and, for a TD, whose TDX components its TEE_TCB_SVN reaches. `module_status` is
/// [`tdx_module_status`]'s, `qe_status` the QE identity's (for the TD 1.5 relaunch advice).
pub(super) fn platform_tcb<'a>(
    body: &Body,
    tcb: &'a TcbInfo,
    ext: &SgxExtension,
    module_status: Option<TcbStatus>,
    qe_status: TcbStatus,
) -> Result<PlatformTcb<'a>, VerifyError> {
    let sgx_level = tcb
        .levels
        .iter()
        .find(|l| sgx_reached(l, ext))
        .ok_or_else(|| {
            VerifyError::TcbNotSupported(format!(
                "PCK SGX components {:?} / PCESVN {} are below every tcb_info level",
                ext.tcb_components, ext.pcesvn
            ))
        })?;
    let td = match body {
        Body::Sgx(_) => {
            return Ok(PlatformTcb {
                level: sgx_level,
                status: sgx_level.status,
                module_status: None,
            })
        }
        Body::Td10(td) | Body::Td15(td) => td,
    };
    let tdx_level = tcb
        .levels
        .iter()
        .find(|l| sgx_reached(l, ext) && tdx_reached(l, &td.tee_tcb_svn))
        .ok_or_else(|| {
            VerifyError::TcbNotSupported(format!(
                "TEE_TCB_SVN {} is below every tcb_info TDX level",
                hex::encode(td.tee_tcb_svn)
            ))
        })?;
    let mut status = tdx_level.status;
    if let Some(m) = module_status {
        status = converge(m, status);
    }
    if let (Body::Td15(td15), Some(TcbStatus::OutOfDate)) = (body, module_status) {
        status = relaunch_check(td15, tcb, qe_status, sgx_level.status, status);
    }
    Ok(PlatformTcb {
        level: tdx_level,
        status,
        module_status,
    })
}

/// True when the PCK certificate's SGX components and PCESVN are all at or above `l`'s.
fn sgx_reached(l: &TcbLevel, ext: &SgxExtension) -> bool {
    l.sgx_components
        .iter()
        .zip(ext.tcb_components.iter())
        .all(|(need, have)| have >= need)
        && ext.pcesvn >= l.pcesvn
}

/// True when a TEE_TCB_SVN is at or above `l`'s TDX components; the first two (module ISVSVN
/// and major version) are left to the module check when the module has a major version.
fn tdx_reached(l: &TcbLevel, tee_tcb_svn: &[u8; 16]) -> bool {
    let start = if tee_tcb_svn[1] > 0 { 2 } else { 0 };
    l.tdx_components
        .map(|c| (start..16).all(|i| tee_tcb_svn[i] >= c[i]))
        .unwrap_or(false)
}

/// Folds a component's status into a level's: the TDX module's into the TD's level, and last
/// the QE's into the platform's.
fn converge(component: TcbStatus, status: TcbStatus) -> TcbStatus {
    match (component, status) {
        (TcbStatus::Revoked, _) => TcbStatus::Revoked,
        (TcbStatus::OutOfDate, TcbStatus::UpToDate | TcbStatus::SWHardeningNeeded) => {
            TcbStatus::OutOfDate
        }
        (
            TcbStatus::OutOfDate,
            TcbStatus::ConfigurationNeeded | TcbStatus::ConfigurationAndSWHardeningNeeded,
        ) => TcbStatus::OutOfDateConfigurationNeeded,
        (_, s) => s,
    }
}

/// TD 1.5 relaunch advice (QVL `TDRelaunchCheck.cpp`): the TD runs on an out-of-date module,
/// but the platform already has the newest one (TEE_TCB_SVN2), so relaunching would fix it.
fn relaunch_check(
    td: &TdReport,
    tcb: &TcbInfo,
    qe: TcbStatus,
    sgx: TcbStatus,
    tdx: TcbStatus,
) -> TcbStatus {
    use TcbStatus::*;
    if matches!(qe, OutOfDate | Revoked)
        || !matches!(
            sgx,
            UpToDate | SWHardeningNeeded | ConfigurationNeeded | ConfigurationAndSWHardeningNeeded
        )
        || !matches!(tdx, OutOfDate | OutOfDateConfigurationNeeded)
    {
        return tdx;
    }
    let Some(svn2) = td.tee_tcb_svn2 else {
        return tdx;
    };
    let latest_ok = tcb
        .levels
        .first()
        .map(|l| tdx_reached(l, &svn2))
        .unwrap_or(false);
    let module_ok = if svn2[1] > 0 {
        let want = format!("TDX_{:02X}", svn2[1]);
        tcb.tdx_module_identities
            .iter()
            .find(|m| m.id.eq_ignore_ascii_case(&want))
            .and_then(|m| m.levels.first())
            .map(|l| u16::from(svn2[0]) >= l.isvsvn)
            .unwrap_or(false)
    } else {
        true
    };
    if latest_ok && module_ok {
        if sgx.needs_configuration() || tdx.needs_configuration() {
            TDRelaunchAdvisedConfigurationNeeded
        } else {
            TDRelaunchAdvised
        }
    } else {
        tdx
    }
}

/// The statuses a verdict reports, and the level they come from.
#[derive(Debug)]
pub(super) struct TcbOutcome<'a> {
    pub(super) level: &'a TcbLevel,
    /// The platform's status converged with the QE's.
    pub(super) status: TcbStatus,
    pub(super) platform_status: TcbStatus,
    pub(super) qe_status: TcbStatus,
    pub(super) module_status: Option<TcbStatus>,
}

/// The final status: the platform's converged with the QE's. A revoked one refuses the quote,
/// naming which level is revoked.
pub(super) fn converge_with_qe(
    platform: PlatformTcb<'_>,
    qe_status: TcbStatus,
) -> Result<TcbOutcome<'_>, VerifyError> {
    let status = converge(qe_status, platform.status);
    if status == TcbStatus::Revoked {
        let which = if qe_status == TcbStatus::Revoked {
            "the QE's TCB level is revoked"
        } else if platform.module_status == Some(TcbStatus::Revoked) {
            "the TDX module's TCB level is revoked"
        } else {
            "the platform's TCB level is revoked"
        };
        return Err(VerifyError::TcbRevoked(which.into()));
    }
    Ok(TcbOutcome {
        level: platform.level,
        status,
        platform_status: platform.status,
        qe_status,
        module_status: platform.module_status,
    })
}
