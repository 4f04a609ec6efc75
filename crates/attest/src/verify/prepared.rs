//! Collateral whose chains, CRLs and signatures were checked once, to be reused (and cached) for
//! many quotes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::collateral::{EnclaveIdentity, TcbInfo};
use crate::x509::{Cert, Crl};

use super::chain::VerifiedPck;
use super::validity::{window, Validity};

/// At most this many verified PCK chains are remembered per prepared collateral.
const MAX_PCK_CHAINS: usize = 4096;

/// Collateral whose signatures, chains and shapes were verified; reusable for many quotes.
#[derive(Debug)]
pub struct PreparedCollateral {
    /// The TCB Info.
    pub tcb_info: TcbInfo,
    /// The QE Identity.
    pub qe_identity: EnclaveIdentity,
    pub(super) root_crl: Crl,
    pub(super) pck_crl: Crl,
    pub(super) pck_crl_issuer: Cert,
    pub(super) validity: Vec<Validity>,
    pub(super) window: (i64, i64),
    pub(super) oldest_issue: i64,
    chains: RwLock<HashMap<[u8; 32], Arc<VerifiedPck>>>,
}

impl PreparedCollateral {
    /// Checked collateral: `pck_crl_issuer` signed `pck_crl`, and `validity` lists every item.
    pub(super) fn new(
        tcb_info: TcbInfo,
        qe_identity: EnclaveIdentity,
        root_crl: Crl,
        pck_crl: Crl,
        pck_crl_issuer: Cert,
        validity: Vec<Validity>,
    ) -> Self {
        let oldest_issue = tcb_info
            .issue_date
            .min(qe_identity.issue_date)
            .min(pck_crl.this_update);
        Self {
            window: window(&validity),
            tcb_info,
            qe_identity,
            root_crl,
            pck_crl,
            pck_crl_issuer,
            validity,
            oldest_issue,
            chains: RwLock::new(HashMap::new()),
        }
    }

    /// The earliest end of validity over every collateral item.
    pub fn not_after(&self) -> i64 {
        self.window.1
    }

    /// The latest start of validity over every collateral item.
    pub fn not_before(&self) -> i64 {
        self.window.0
    }

    /// The PCK chain with SHA-256 `key`, if it was verified against this collateral before.
    pub(super) fn verified_pck(&self, key: &[u8; 32]) -> Option<Arc<VerifiedPck>> {
        self.chains.read().ok().and_then(|m| m.get(key).cloned())
    }

    /// Remembers a PCK chain verified against this collateral.
    pub(super) fn remember_pck(&self, key: [u8; 32], verified: Arc<VerifiedPck>) {
        if let Ok(mut m) = self.chains.write() {
            if m.len() < MAX_PCK_CHAINS {
                m.insert(key, verified);
            }
        }
    }
}
