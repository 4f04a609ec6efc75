//! Appraisal policy: what a verified [`Verdict`] must show to be admitted.
//!
//! Verification proves what the evidence says; the policy decides whether that is acceptable.
//! Defaults are strict: no debug enclaves, only `UpToDate`, no simulated (non-Intel) roots.

use serde::{Deserialize, Serialize};

use crate::collateral::TcbStatus;
use crate::verify::{SgxMeasurements, TdxMeasurements, Verdict};

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
    /// Requester side: where the server's TLS key may come from, as its attestation document
    /// states (default: `tee` and `broker`, never a key file the host gave the server).
    #[serde(default)]
    pub tls_key_origin: Vec<KeyOrigin>,
    /// Requester side: for each model named here, the SHA-256 digests of the sealed files the
    /// server may serve it from; every served version of that model must be one of them.
    #[serde(default)]
    pub models: std::collections::BTreeMap<String, Vec<ModelDigest>>,
    /// Requester side: admit a server whose document says a model's requests may be batched
    /// with other requesters' (the owner declared the model row-independent). Default true.
    #[serde(default = "default_true")]
    pub allow_shared_batches: bool,
    /// Requester side: admit a server whose document says the owner widened a model's
    /// operator policy (`+Op,...`, e.g. printing). Default false: only graphs that compute.
    #[serde(default)]
    pub allow_widened_operators: bool,
    /// Requester side: the key broker's log verifier key, `<origin>+<key ID>+<base64 key>` (what
    /// `teeserve kbs log keygen` writes to `log.key.pub`). When set, the server's attestation
    /// document must carry the grants by which it got its secrets, each with an inclusion proof
    /// in a checkpoint signed by this key, made to the RA-TLS key the server states it used.
    #[serde(default)]
    pub log_key: Option<String>,
    /// Requester side: the SHA-256 (hex) of the key broker configurations (kbs.toml as loaded)
    /// under which the server's grants may have been made. Empty: any. Needs `log_key`.
    #[serde(default)]
    pub policy_sha256: Vec<String>,
}

fn default_true() -> bool {
    true
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
            tls_key_origin: Vec::new(),
            models: Default::default(),
            allow_shared_batches: true,
            allow_widened_operators: false,
            log_key: None,
            policy_sha256: Vec::new(),
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
        check("policy_sha256", &mut self.policy_sha256, 32, false)?;
        if let Some(k) = self.log_key.as_mut() {
            *k = k.trim().to_owned();
        }
        if !self.policy_sha256.is_empty() && self.log_key.is_none() {
            return Err(PolicyLoadError::Invalid {
                field: "policy_sha256",
                reason: "policy_sha256 needs log_key: without the key broker's log key, the \
                         policy hash a server states is not authenticated"
                    .into(),
            });
        }
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
        // MRTD measures only the TD's firmware (TDVF); the kernel, its command line and the
        // workload are extended into the RTMRs, and MRCONFIGID is what the host set for this TD.
        // With MRTD alone, any workload booted on that firmware would be admitted.
        if !self.mrtd.is_empty()
            && self.rtmr.iter().all(String::is_empty)
            && self.mrconfigid.is_empty()
        {
            return Err(PolicyLoadError::Invalid {
                field: "rtmr",
                reason: "mrtd is set without rtmr or mrconfigid, which would admit every \
                         workload booted on that TD firmware; set the RTMRs that measure the \
                         workload (or mrconfigid)"
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
        self.check_root(v)?;
        self.check_pck_revocation(v)?;
        self.check_tee(v)?;
        self.check_debug(v)?;
        self.check_tcb_status(v)?;
        self.check_advisories(v)?;
        self.check_collateral_age(v)?;
        self.check_evidence_age(v)?;
        match (&v.sgx, &v.tdx) {
            (Some(m), _) => self.check_sgx_measurements(m),
            (None, Some(t)) => self.check_tdx_measurements(t),
            (None, None) => Err(self.refuse("tee", "the verdict carries no measurements".into())),
        }
    }

    /// `allow_simulated`: the evidence chains to Intel's root, unless simulated evidence is
    /// admitted.
    fn check_root(&self, v: &Verdict) -> Result<(), PolicyError> {
        if !v.root.intel && !self.allow_simulated {
            return Err(self.refuse(
                "allow_simulated",
                format!(
                    "the evidence chains to {:?} (sha256 {}), not to the Intel SGX Root CA: it is simulated evidence, which gives no protection",
                    v.root.subject, v.root.sha256
                ),
            ));
        }
        Ok(())
    }

    /// `allow_unchecked_pck_revocation`: the PCK certificate was checked against its own CA's CRL.
    fn check_pck_revocation(&self, v: &Verdict) -> Result<(), PolicyError> {
        if !v.pck_revocation_checked && !self.allow_unchecked_pck_revocation {
            return Err(self.refuse(
                "allow_unchecked_pck_revocation",
                format!(
                    "the PCK certificate's revocation was not checked: {}",
                    v.warnings.join("; ")
                ),
            ));
        }
        Ok(())
    }

    /// `tee`: the evidence comes from an accepted TEE.
    fn check_tee(&self, v: &Verdict) -> Result<(), PolicyError> {
        if !self.tee.is_empty() && !self.tee.contains(&v.tee) {
            return Err(self.refuse("tee", format!("{} is not one of {:?}", v.tee, self.tee)));
        }
        Ok(())
    }

    /// `allow_debug`: no debug enclave or TD, unless admitted.
    fn check_debug(&self, v: &Verdict) -> Result<(), PolicyError> {
        if v.debug && !self.allow_debug {
            let what = if v.tee == crate::quote::Tee::Sgx {
                "a debug enclave (ATTRIBUTES.DEBUG set)"
            } else {
                "a debug TD (TDATTRIBUTES.DEBUG set)"
            };
            return Err(self.refuse("allow_debug", format!("the evidence comes from {what}")));
        }
        Ok(())
    }

    /// `tcb_status`: the TCB status is accepted.
    fn check_tcb_status(&self, v: &Verdict) -> Result<(), PolicyError> {
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
        Ok(())
    }

    /// `accepted_advisories`: a status other than UpToDate carries only accepted advisories.
    fn check_advisories(&self, v: &Verdict) -> Result<(), PolicyError> {
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
        Ok(())
    }

    /// `max_collateral_age_secs`: the oldest collateral item is recent enough.
    fn check_collateral_age(&self, v: &Verdict) -> Result<(), PolicyError> {
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
        Ok(())
    }

    /// `max_evidence_age_secs`: the evidence was made recently enough.
    fn check_evidence_age(&self, v: &Verdict) -> Result<(), PolicyError> {
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
        Ok(())
    }

    /// `mrenclave`, `mrsigner`, `isv_prod_id`, `min_isv_svn`: the SGX measurements.
    fn check_sgx_measurements(&self, m: &SgxMeasurements) -> Result<(), PolicyError> {
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
                "the policy names no MRENCLAVE or MRSIGNER, so it admits no SGX enclave".into(),
            ));
        }
        Ok(())
    }

    /// `mrtd`, `rtmr`, `mrconfigid`: the TDX measurements.
    fn check_tdx_measurements(&self, t: &TdxMeasurements) -> Result<(), PolicyError> {
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
                return Err(self.refuse("rtmr", format!("RTMR{i} {} is not {want}", t.rtmr[i])));
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
        Ok(())
    }
}

// The requester's rules about what the server's attestation document states besides the
// quote: where its TLS key came from and which model files it serves. They are appraised
// apart from the evidence (`Policy::appraise_served`), by requesters only.

/// Where a server's TLS private key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyOrigin {
    /// Made inside the TEE; it never left it.
    Tee,
    /// Released by the key broker to an attested TEE.
    Broker,
    /// A file the host gave the server: whoever controls the host holds it too.
    Host,
}

impl KeyOrigin {
    /// The name used in documents and policies.
    pub fn name(self) -> &'static str {
        match self {
            KeyOrigin::Tee => "tee",
            KeyOrigin::Broker => "broker",
            KeyOrigin::Host => "host",
        }
    }
}

impl std::fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A SHA-256 digest in lower-case hex, checked when the policy is read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelDigest(String);

impl ModelDigest {
    /// The digest as lower-case hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ModelDigest {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        if s.len() != 64 || hex::decode(&s).is_err() {
            return Err(format!(
                "model digest {s:?} is not a SHA-256 digest (64 hex digits)"
            ));
        }
        Ok(Self(s))
    }
}

impl From<ModelDigest> for String {
    fn from(d: ModelDigest) -> String {
        d.0
    }
}

/// One version a server says it serves, with the digest of the file it was loaded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedVersion<'a> {
    /// Model name.
    pub name: &'a str,
    /// Version.
    pub version: i64,
    /// SHA-256 (hex) of the file it was loaded from.
    pub sha256: &'a str,
    /// The operator policy its graph was checked against.
    pub operators: &'a str,
    /// Whether its requests may be batched with other requesters'.
    pub shared_batches: bool,
}

impl Policy {
    /// The key origins this policy admits (`tls_key_origin`, or `tee` and `broker`).
    pub fn admitted_key_origins(&self) -> Vec<KeyOrigin> {
        if self.tls_key_origin.is_empty() {
            vec![KeyOrigin::Tee, KeyOrigin::Broker]
        } else {
            self.tls_key_origin.clone()
        }
    }

    /// Requester side: appraises what an attested server states beyond its evidence, i.e.
    /// where its TLS key came from (`tls_key_origin`) and which model files it serves
    /// (`models`). Call it only with statements the evidence binds.
    pub fn appraise_served(
        &self,
        origin: KeyOrigin,
        served: &[ServedVersion<'_>],
    ) -> Result<(), PolicyError> {
        let origins = self.admitted_key_origins();
        if !origins.contains(&origin) {
            let names: Vec<&str> = origins.iter().map(|o| o.name()).collect();
            let why = if origin == KeyOrigin::Host {
                " (the host holds a copy of a key it gave the server, so it could answer in the server's place)"
            } else {
                ""
            };
            return Err(self.refuse(
                "tls_key_origin",
                format!(
                    "the server's TLS key origin is {origin}, not one of [{}]{why}",
                    names.join(", ")
                ),
            ));
        }
        for v in served {
            if v.shared_batches && !self.allow_shared_batches {
                return Err(self.refuse(
                    "allow_shared_batches",
                    format!(
                        "model {:?} version {} may batch requests with other requesters'",
                        v.name, v.version
                    ),
                ));
            }
            if v.operators.contains('+') && !self.allow_widened_operators {
                return Err(self.refuse(
                    "allow_widened_operators",
                    format!(
                        "model {:?} version {} runs under the widened operator policy {:?}",
                        v.name, v.version, v.operators
                    ),
                ));
            }
        }
        for (name, digests) in &self.models {
            let versions: Vec<&ServedVersion<'_>> =
                served.iter().filter(|s| s.name == name).collect();
            if versions.is_empty() {
                return Err(self.refuse(
                    "models",
                    format!("the server does not say it serves model {name:?}"),
                ));
            }
            for v in versions {
                let got = v.sha256.to_ascii_lowercase();
                if !digests.iter().any(|d| d.as_str() == got) {
                    let want: Vec<&str> = digests.iter().map(|d| d.as_str()).collect();
                    return Err(self.refuse(
                        "models",
                        format!(
                            "model {name:?} version {} is served from a file with SHA-256 {got}, not one of {want:?}",
                            v.version
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod served_tests {
    use super::*;

    fn served<'a>(name: &'a str, version: i64, sha256: &'a str) -> ServedVersion<'a> {
        ServedVersion {
            name,
            version,
            sha256,
            operators: "onnx",
            shared_batches: false,
        }
    }

    #[test]
    fn shared_batches_and_widened_operators_are_refused_when_the_policy_says() {
        let p = Policy::from_toml("allow_shared_batches = false").unwrap();
        let mut v = served("digits", 1, "ab");
        p.appraise_served(KeyOrigin::Tee, &[v]).unwrap();
        v.shared_batches = true;
        let e = p.appraise_served(KeyOrigin::Tee, &[v]).unwrap_err();
        assert_eq!(e.rule, "allow_shared_batches");
        Policy::from_toml("")
            .unwrap()
            .appraise_served(KeyOrigin::Tee, &[v])
            .unwrap();
        v.shared_batches = false;
        v.operators = "teeserve-tensorflow-compute-v1+PrintV2";
        let e = p.appraise_served(KeyOrigin::Tee, &[v]).unwrap_err();
        assert_eq!(e.rule, "allow_widened_operators");
        assert!(e.detail.contains("PrintV2"), "{e}");
        Policy::from_toml("allow_widened_operators = true")
            .unwrap()
            .appraise_served(KeyOrigin::Tee, &[v])
            .unwrap();
    }

    #[test]
    fn policy_hashes_need_the_log_key_and_are_normalised() {
        let e =
            Policy::from_toml(&format!("policy_sha256 = [\"{}\"]", "AB".repeat(32))).unwrap_err();
        assert!(e.to_string().contains("needs log_key"), "{e}");
        let p = Policy::from_toml(&format!(
            "log_key = \" k+00000000+AA \"\npolicy_sha256 = [\"{}\"]",
            "AB".repeat(32)
        ))
        .unwrap();
        assert_eq!(p.policy_sha256, vec!["ab".repeat(32)]);
        assert_eq!(p.log_key.as_deref(), Some("k+00000000+AA"));
        assert!(Policy::from_toml("log_key = \"k\"\npolicy_sha256 = [\"ab\"]").is_err());
    }

    #[test]
    fn a_host_given_key_is_refused_unless_the_policy_names_it() {
        let p = Policy::from_toml("").unwrap();
        p.appraise_served(KeyOrigin::Tee, &[]).unwrap();
        p.appraise_served(KeyOrigin::Broker, &[]).unwrap();
        let e = p.appraise_served(KeyOrigin::Host, &[]).unwrap_err();
        assert_eq!(e.rule, "tls_key_origin");
        let p = Policy::from_toml("tls_key_origin = [\"host\"]").unwrap();
        p.appraise_served(KeyOrigin::Host, &[]).unwrap();
        assert_eq!(
            p.appraise_served(KeyOrigin::Tee, &[]).unwrap_err().rule,
            "tls_key_origin"
        );
        assert!(Policy::from_toml("tls_key_origin = [\"disk\"]").is_err());
    }

    #[test]
    fn every_served_version_of_a_named_model_needs_an_admitted_digest() {
        let a = "ab".repeat(32);
        let b = "cd".repeat(32);
        let p = Policy::from_toml(&format!(
            "models = {{ digits = [\"{}\"] }}",
            a.to_uppercase()
        ))
        .unwrap();
        p.appraise_served(
            KeyOrigin::Tee,
            &[served("digits", 1, &a), served("other", 1, &b)],
        )
        .unwrap();
        let e = p
            .appraise_served(
                KeyOrigin::Tee,
                &[served("digits", 1, &a), served("digits", 2, &b)],
            )
            .unwrap_err();
        assert_eq!(e.rule, "models");
        assert!(e.detail.contains("version 2"), "{e}");
        let e = p
            .appraise_served(KeyOrigin::Tee, &[served("other", 1, &a)])
            .unwrap_err();
        assert!(e.detail.contains("does not say it serves"), "{e}");
        let e = Policy::from_toml("models = { digits = [\"abc\"] }").unwrap_err();
        assert!(e.to_string().contains("not a SHA-256 digest"), "{e}");
    }
}
