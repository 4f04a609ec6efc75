//! Appraisal policy: what a verified [`Verdict`] must show to be admitted.
//!
//! Verification proves what the evidence says; the policy decides whether that is acceptable.
//! Defaults are strict: no debug enclaves, only `UpToDate`, no simulated (non-Intel) roots.

use serde::{Deserialize, Serialize};

use crate::collateral::TcbStatus;
use crate::verify::Verdict;

/// An appraisal policy (TOML).
///
/// ```toml
/// name = "tfserving"
/// mrenclave = ["<64 hex>"]
/// tcb_status = ["UpToDate", "SWHardeningNeeded"]
/// allow_debug = false
/// allow_simulated = false
/// max_collateral_age_secs = 604800
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// A name for audit lines and messages.
    #[serde(default = "default_name")]
    pub name: String,
    /// Accepted TEEs (default: both).
    #[serde(default)]
    pub tee: Vec<crate::quote::Tee>,
    /// Accepted MRENCLAVE values (SGX), hex.
    #[serde(default)]
    pub mrenclave: Vec<String>,
    /// Accepted MRSIGNER values (SGX), hex.
    #[serde(default)]
    pub mrsigner: Vec<String>,
    /// Required ISVPRODID (SGX).
    #[serde(default)]
    pub isv_prod_id: Option<u16>,
    /// Minimum ISVSVN (SGX).
    #[serde(default)]
    pub min_isv_svn: Option<u16>,
    /// Accepted MRTD values (TDX), hex.
    #[serde(default)]
    pub mrtd: Vec<String>,
    /// Required RTMR values (TDX): up to four entries, hex; an empty string skips that RTMR.
    #[serde(default)]
    pub rtmr: Vec<String>,
    /// Accepted MRCONFIGID values (TDX), hex.
    #[serde(default)]
    pub mrconfigid: Vec<String>,
    /// Admit debug enclaves / TDs (default false).
    #[serde(default)]
    pub allow_debug: bool,
    /// Accepted TCB statuses (default: UpToDate only).
    #[serde(default = "default_statuses")]
    pub tcb_status: Vec<TcbStatus>,
    /// Advisory IDs that may be present (default none: any advisory refuses, unless the
    /// status itself is UpToDate, which carries none).
    #[serde(default)]
    pub accepted_advisories: Vec<String>,
    /// Maximum age of the oldest collateral item (tcb_info / qe_identity issueDate, pck_crl
    /// thisUpdate) at verification time, in seconds.
    #[serde(default)]
    pub max_collateral_age_secs: Option<i64>,
    /// Maximum age of the evidence at verification time, in seconds: how long ago the RA-TLS
    /// certificate that carries the quote became valid (its notBefore). Off by default, as in
    /// Gramine, whose verifier ignores the certificate's validity; evidence that does not say
    /// when it was made is refused when this is set.
    #[serde(default)]
    pub max_evidence_age_secs: Option<i64>,
    /// Admit evidence that chains to a root other than Intel's (the simulated TEE).
    #[serde(default)]
    pub allow_simulated: bool,
    /// Admit evidence whose PCK certificate could not be checked against its own CA's CRL.
    #[serde(default)]
    pub allow_unchecked_pck_revocation: bool,
    /// Secrets this policy may receive (used by the key broker).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// The secret the Gramine secret-provisioning port sends to peers this policy admits.
    #[serde(default)]
    pub gramine_secret: Option<String>,
}

fn default_name() -> String {
    "policy".into()
}

fn default_statuses() -> Vec<TcbStatus> {
    vec![TcbStatus::UpToDate]
}

impl Default for Policy {
    fn default() -> Self {
        // The same values an empty TOML policy gets through the serde defaults.
        Policy {
            name: default_name(),
            tee: Vec::new(),
            mrenclave: Vec::new(),
            mrsigner: Vec::new(),
            isv_prod_id: None,
            min_isv_svn: None,
            mrtd: Vec::new(),
            rtmr: Vec::new(),
            mrconfigid: Vec::new(),
            allow_debug: false,
            tcb_status: default_statuses(),
            accepted_advisories: Vec::new(),
            max_collateral_age_secs: None,
            max_evidence_age_secs: None,
            allow_simulated: false,
            allow_unchecked_pck_revocation: false,
            secrets: Vec::new(),
            gramine_secret: None,
        }
    }
}

/// A refusal: the rule that failed and the values that failed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("policy {policy:?} refused: rule {rule}: {detail}")]
pub struct PolicyError {
    /// The policy's name.
    pub policy: String,
    /// The rule (the TOML key) that failed.
    pub rule: &'static str,
    /// The values involved.
    pub detail: String,
}

/// Why a policy file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    /// The TOML is invalid.
    #[error("policy: {0}")]
    Toml(#[from] toml::de::Error),
    /// A value has the wrong shape.
    #[error("policy {field}: {reason}")]
    Invalid {
        /// The key.
        field: &'static str,
        /// What was wrong.
        reason: String,
    },
}

fn norm(v: &[String]) -> Vec<String> {
    v.iter().map(|s| s.trim().to_ascii_lowercase()).collect()
}

impl Policy {
    /// Parses a policy from TOML and checks the shape of its values.
    pub fn from_toml(s: &str) -> Result<Self, PolicyLoadError> {
        let mut p: Policy = toml::from_str(s)?;
        p.normalise()?;
        Ok(p)
    }

    /// Lower-cases hex values and checks their lengths.
    pub fn normalise(&mut self) -> Result<(), PolicyLoadError> {
        let check = |field: &'static str, v: &mut Vec<String>, len: usize, allow_empty: bool| {
            *v = norm(v);
            for s in v.iter() {
                if allow_empty && s.is_empty() {
                    continue;
                }
                if s.len() != len * 2 || hex::decode(s).is_err() {
                    return Err(PolicyLoadError::Invalid {
                        field,
                        reason: format!("{s:?} is not {len} bytes of hex"),
                    });
                }
            }
            Ok(())
        };
        check("mrenclave", &mut self.mrenclave, 32, false)?;
        check("mrsigner", &mut self.mrsigner, 32, false)?;
        check("mrtd", &mut self.mrtd, 48, false)?;
        check("rtmr", &mut self.rtmr, 48, true)?;
        check("mrconfigid", &mut self.mrconfigid, 48, false)?;
        if self.rtmr.len() > 4 {
            return Err(PolicyLoadError::Invalid {
                field: "rtmr",
                reason: "more than four RTMRs".into(),
            });
        }
        // One signing key signs every product of its owner; without a product id (or an exact
        // MRENCLAVE) the policy would admit all of them. Gramine's verifier asks for both too.
        if !self.mrsigner.is_empty() && self.mrenclave.is_empty() && self.isv_prod_id.is_none() {
            return Err(PolicyLoadError::Invalid {
                field: "isv_prod_id",
                reason: "mrsigner is set without isv_prod_id (or mrenclave), which would admit \
                         every enclave product signed by that key; set isv_prod_id"
                    .into(),
            });
        }
        for (field, v) in [
            ("max_collateral_age_secs", self.max_collateral_age_secs),
            ("max_evidence_age_secs", self.max_evidence_age_secs),
        ] {
            if matches!(v, Some(s) if s < 0) {
                return Err(PolicyLoadError::Invalid {
                    field,
                    reason: "must not be negative".into(),
                });
            }
        }
        Ok(())
    }

    fn refuse(&self, rule: &'static str, detail: String) -> PolicyError {
        PolicyError {
            policy: self.name.clone(),
            rule,
            detail,
        }
    }

    /// Appraises a verdict. `Ok` means admitted.
    pub fn appraise(&self, v: &Verdict) -> Result<(), PolicyError> {
        if !v.root.intel && !self.allow_simulated {
            return Err(self.refuse(
                "allow_simulated",
                format!(
                    "the evidence chains to {:?} (sha256 {}), not to the Intel SGX Root CA: it is simulated evidence, which gives no protection",
                    v.root.subject, v.root.sha256
                ),
            ));
        }
        if !v.pck_revocation_checked && !self.allow_unchecked_pck_revocation {
            return Err(self.refuse(
                "allow_unchecked_pck_revocation",
                format!(
                    "the PCK certificate's revocation was not checked: {}",
                    v.warnings.join("; ")
                ),
            ));
        }
        if !self.tee.is_empty() && !self.tee.contains(&v.tee) {
            return Err(self.refuse("tee", format!("{} is not one of {:?}", v.tee, self.tee)));
        }
        if v.debug && !self.allow_debug {
            let what = if v.tee == crate::quote::Tee::Sgx {
                "a debug enclave (ATTRIBUTES.DEBUG set)"
            } else {
                "a debug TD (TDATTRIBUTES.DEBUG set)"
            };
            return Err(self.refuse("allow_debug", format!("the evidence comes from {what}")));
        }
        if !self.tcb_status.contains(&v.tcb_status) {
            let accepted: Vec<&str> = self.tcb_status.iter().map(|s| s.name()).collect();
            return Err(self.refuse(
                "tcb_status",
                format!(
                    "{} is not accepted (accepted: {})",
                    v.tcb_status,
                    accepted.join(", ")
                ),
            ));
        }
        let unaccepted: Vec<&String> = v
            .advisory_ids
            .iter()
            .filter(|a| {
                !self
                    .accepted_advisories
                    .iter()
                    .any(|b| b.eq_ignore_ascii_case(a))
            })
            .collect();
        if v.tcb_status != TcbStatus::UpToDate && !unaccepted.is_empty() {
            return Err(self.refuse(
                "accepted_advisories",
                format!("advisories {unaccepted:?} are not accepted"),
            ));
        }
        if let Some(max) = self.max_collateral_age_secs {
            let age = v.verified_at_unix - v.collateral.oldest_issue_unix;
            if age > max {
                return Err(self.refuse(
                    "max_collateral_age_secs",
                    format!(
                        "collateral issued {} is {age} s old, more than {max} s",
                        v.collateral.oldest_issue
                    ),
                ));
            }
        }
        if let Some(max) = self.max_evidence_age_secs {
            let Some(made) = v.evidence_not_before_unix else {
                return Err(self.refuse(
                    "max_evidence_age_secs",
                    "the evidence does not say when it was made (a bare quote, not an RA-TLS certificate)".into(),
                ));
            };
            // A notBefore in the future counts too: inside SGX the certificate's clock is the
            // host's, so a far-future stamp must not make old evidence look fresh forever.
            let age = v.verified_at_unix - made;
            if age.abs() > max {
                let when = if age >= 0 { "before" } else { "after" };
                return Err(self.refuse(
                    "max_evidence_age_secs",
                    format!(
                        "the RA-TLS certificate became valid at {}, {} s {when} the verification time {}, more than {max} s",
                        crate::collateral::format_time(made),
                        age.abs(),
                        v.verified_at
                    ),
                ));
            }
        }
        match (&v.sgx, &v.tdx) {
            (Some(m), _) => {
                if self.mrenclave.is_empty() && self.mrsigner.is_empty() && !self.mrtd.is_empty() {
                    return Err(self.refuse(
                        "mrtd",
                        "the policy admits TDX measurements only; this is SGX evidence".into(),
                    ));
                }
                if !self.mrenclave.is_empty() && !self.mrenclave.contains(&m.mrenclave) {
                    return Err(self.refuse(
                        "mrenclave",
                        format!(
                            "MRENCLAVE {} is not one of {:?}",
                            m.mrenclave, self.mrenclave
                        ),
                    ));
                }
                if !self.mrsigner.is_empty() && !self.mrsigner.contains(&m.mrsigner) {
                    return Err(self.refuse(
                        "mrsigner",
                        format!("MRSIGNER {} is not one of {:?}", m.mrsigner, self.mrsigner),
                    ));
                }
                if let Some(id) = self.isv_prod_id {
                    if m.isv_prod_id != id {
                        return Err(self.refuse(
                            "isv_prod_id",
                            format!("ISVPRODID {} is not {id}", m.isv_prod_id),
                        ));
                    }
                }
                if let Some(min) = self.min_isv_svn {
                    if m.isv_svn < min {
                        return Err(self.refuse(
                            "min_isv_svn",
                            format!("ISVSVN {} is below {min}", m.isv_svn),
                        ));
                    }
                }
                if self.mrenclave.is_empty() && self.mrsigner.is_empty() {
                    return Err(self.refuse(
                        "mrenclave",
                        "the policy names no MRENCLAVE or MRSIGNER, so it admits no SGX enclave"
                            .into(),
                    ));
                }
            }
            (None, Some(t)) => {
                if self.mrtd.is_empty() {
                    return Err(self.refuse(
                        "mrtd",
                        "the policy names no MRTD, so it admits no TD".into(),
                    ));
                }
                if !self.mrtd.contains(&t.mrtd) {
                    return Err(self.refuse(
                        "mrtd",
                        format!("MRTD {} is not one of {:?}", t.mrtd, self.mrtd),
                    ));
                }
                for (i, want) in self.rtmr.iter().enumerate() {
                    if !want.is_empty() && &t.rtmr[i] != want {
                        return Err(
                            self.refuse("rtmr", format!("RTMR{i} {} is not {want}", t.rtmr[i]))
                        );
                    }
                }
                if !self.mrconfigid.is_empty() && !self.mrconfigid.contains(&t.mrconfigid) {
                    return Err(self.refuse(
                        "mrconfigid",
                        format!(
                            "MRCONFIGID {} is not one of {:?}",
                            t.mrconfigid, self.mrconfigid
                        ),
                    ));
                }
            }
            (None, None) => {
                return Err(self.refuse("tee", "the verdict carries no measurements".into()))
            }
        }
        Ok(())
    }
}
