//! The key broker's decisions, apart from any protocol: the [`KeyBroker`] (the configuration in
//! force with its policies and secrets, the audit log, the throttle on refusals), the appraisal
//! of a connected peer's RA-TLS certificate ([`Conn`]), and the choice of the secret a peer
//! receives ([`decide`], [`decide_native`]). The native HTTPS API (`server.rs`) and Gramine's
//! secret-provisioning protocol (`gramine.rs`) both answer through it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use teeserve_attest::{Policy, Verdict, VerifyError};
use teeserve_ratls::RaTlsError;

use crate::audit::{AuditLog, AuditRecord};
use crate::config::{Limits, Loaded, Secret};
use crate::signed_log::Opened;
use crate::throttle::RefusalLimiter;
use crate::KbsError;

/// Why a peer was refused: the rule and the detail.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Refusal {
    /// The policy that decided, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) policy: Option<String>,
    /// The rule that failed.
    pub(crate) rule: String,
    /// What failed it.
    pub(crate) detail: String,
}

/// The key broker: the configuration in force (policies, secrets, the appraiser), the audit
/// log and the refusal throttle, shared by every connection; the configuration and the audit
/// log are swapped whole on reload.
#[derive(Debug)]
pub struct KeyBroker {
    loaded: RwLock<Arc<Loaded>>,
    audit: RwLock<Arc<AuditLog>>,
    limiter: RefusalLimiter,
    config_path: PathBuf,
}

fn open_audit(loaded: &Loaded) -> Result<(AuditLog, Option<Opened>), KbsError> {
    let key = loaded
        .log_key
        .as_ref()
        .map(|k| k.signing_key())
        .transpose()
        .map_err(|reason| KbsError::Config {
            path: "log.signing_key".into(),
            reason,
        })?;
    AuditLog::open(loaded.config.audit_log.as_deref(), key).map_err(|reason| KbsError::Config {
        path: loaded
            .config
            .audit_log
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        reason,
    })
}

fn now() -> String {
    teeserve_attest::collateral::format_time(time::OffsetDateTime::now_utc().unix_timestamp())
}

/// An event line: what the broker runs under from now on (`start`, `reload`).
fn policy_event(
    event: &str,
    config: &Path,
    loaded: &Loaded,
    log: Option<(&AuditLog, Option<Opened>)>,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "time": now(),
        "event": event,
        "config": config.display().to_string(),
        "policy_sha256": loaded.policy_sha256,
        "policies": loaded.config.policies.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
    });
    if let Some((audit, opened)) = log {
        if let Some(k) = audit.verifier() {
            v["log_key"] = k.to_string().into();
        }
        if let Some(o) = opened {
            v["entries_before"] = o.entries.into();
            if o.uncovered > 0 {
                v["entries_without_checkpoint"] = o.uncovered.into();
            }
        }
    }
    v
}

impl KeyBroker {
    /// Loads the configuration at `config_path`, opens its audit log, and logs the start.
    pub(crate) fn load(config_path: &Path) -> Result<Self, KbsError> {
        let loaded = Loaded::load(config_path)?;
        let (audit, opened) = open_audit(&loaded)?;
        match (&loaded.config.audit_log, &loaded.log_key) {
            (Some(_), None) => tracing::warn!(
                "the audit log is not signed (no [log] table in {}): whoever can write it can change it unnoticed; `teeserve kbs log keygen` makes a key",
                config_path.display()
            ),
            (None, _) => tracing::warn!(
                "no audit_log in {}: decisions go to this output only, and no log is signed",
                config_path.display()
            ),
            (Some(_), Some(_)) => {}
        }
        if let Some(o) = opened.filter(|o| o.uncovered > 0 && loaded.log_key.is_some()) {
            tracing::warn!(
                "the audit log has {} entries after its latest checkpoint (a broker stopped between an entry and its checkpoint, a log not signed before, or lines appended by someone else); the next checkpoint covers them, and the start entry says how many",
                o.uncovered
            );
        }
        let start = policy_event("start", config_path, &loaded, Some((&audit, opened)));
        audit.event(&start, true).map_err(|e| KbsError::Io {
            what: "writing the audit log".into(),
            source: e,
        })?;
        Ok(Self {
            loaded: RwLock::new(Arc::new(loaded)),
            audit: RwLock::new(Arc::new(audit)),
            limiter: RefusalLimiter::new(),
            config_path: config_path.to_owned(),
        })
    }

    /// The current configuration.
    pub(crate) fn current(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn audit(&self) -> Arc<AuditLog> {
        self.audit
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Writes a grant's audit line and syncs it, off the async threads; returns the line's
    /// inclusion proof when the log is signed. An error means the secret must not be sent.
    pub(crate) async fn audit_grant(&self, r: AuditRecord) -> std::io::Result<Option<String>> {
        let audit = self.audit();
        tokio::task::spawn_blocking(move || audit.record(&r))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Records a refusal of `peer` (aggregated, see [`AuditLog::refusal`]); returns false when
    /// the peer is over its rate of refusals and should be told to slow down.
    pub(crate) fn audit_refusal(&self, peer: SocketAddr, r: AuditRecord, limits: &Limits) -> bool {
        let allowed = self
            .limiter
            .allow(peer.ip(), limits.refusals_per_sec, Instant::now());
        if let Err(e) = self.audit().refusal(peer.ip(), r, !allowed) {
            tracing::error!("audit log: {e}");
        }
        allowed
    }

    /// Writes the summary lines of refusals counted since the last summary.
    pub fn flush_refusals(&self) -> std::io::Result<()> {
        self.audit().flush_refusals()
    }

    /// Re-reads the configuration; a broken one is rejected (and logged) and the old one
    /// stays. The audit log stays open unless its path or signing key changed.
    pub fn reload(&self) -> Result<(), KbsError> {
        let new = match Loaded::load(&self.config_path) {
            Ok(n) => n,
            Err(e) => {
                let v = serde_json::json!({
                    "time": now(),
                    "event": "reload_rejected",
                    "config": self.config_path.display().to_string(),
                    "detail": e.to_string(),
                });
                if let Err(e) = self.audit().event(&v, true) {
                    tracing::error!("audit log: {e}");
                }
                return Err(e);
            }
        };
        let old = self.current();
        let same_log = old.config.audit_log == new.config.audit_log
            && old.log_key.as_ref().map(|k| &k.verifier)
                == new.log_key.as_ref().map(|k| &k.verifier);
        let (audit, opened) = if same_log {
            (self.audit(), None)
        } else {
            let (a, o) = open_audit(&new)?;
            (Arc::new(a), o)
        };
        let event = policy_event("reload", &self.config_path, &new, Some((&audit, opened)));
        audit.event(&event, true).map_err(|e| KbsError::Io {
            what: "writing the audit log".into(),
            source: e,
        })?;
        if let Ok(mut g) = self.audit.write() {
            *g = audit;
        }
        if let Ok(mut g) = self.loaded.write() {
            *g = Arc::new(new);
        }
        Ok(())
    }

    /// Logs the broker's stop (after the refusals counted so far), synced.
    pub fn stop(&self) -> std::io::Result<()> {
        let audit = self.audit();
        audit.flush_refusals()?;
        audit.event(&serde_json::json!({"time": now(), "event": "stop"}), true)
    }
}

/// Maps a verification failure to the rule it breaks.
pub(crate) fn refusal_of(e: &RaTlsError) -> Refusal {
    let rule = match e {
        RaTlsError::Certificate(_) => "ratls_certificate",
        RaTlsError::Binding(_) => "ratls_binding",
        RaTlsError::Verify(VerifyError::Expired { .. } | VerifyError::NotYetValid { .. }) => {
            "collateral_validity"
        }
        RaTlsError::Verify(VerifyError::Revoked { .. }) => "revocation",
        RaTlsError::Verify(VerifyError::UntrustedRoot { .. }) => "root",
        RaTlsError::Verify(VerifyError::TcbRevoked(_)) => "tcb_status",
        RaTlsError::Verify(_) => "evidence",
        RaTlsError::Collateral(_) => "collateral",
        RaTlsError::Policy(p) => {
            return Refusal {
                policy: Some(p.policy.clone()),
                rule: p.rule.into(),
                detail: p.detail.clone(),
            }
        }
        RaTlsError::Platform(_) | RaTlsError::Generate(_) => "evidence",
    };
    Refusal {
        policy: None,
        rule: rule.into(),
        detail: e.to_string(),
    }
}

/// Decides whether a peer with this verdict gets `secret`, using the policies that name it
/// (`gramine` selects the policies' `gramine_secret` instead).
pub(crate) fn decide<'a>(
    loaded: &'a Loaded,
    verdict: &Verdict,
    secret: Option<&str>,
) -> Result<(&'a Policy, String, Secret), Refusal> {
    let mut first_refusal = None;
    for p in &loaded.config.policies {
        let name = match secret {
            Some(s) if p.secrets.iter().any(|x| x == s) => s.to_owned(),
            None => match &p.gramine_secret {
                Some(g) => g.clone(),
                None => continue,
            },
            _ => continue,
        };
        match p.appraise(verdict) {
            Ok(()) => {
                if let Some(sec) = loaded.secrets.get(&name) {
                    return Ok((p, name, sec.clone()));
                }
            }
            Err(e) => {
                first_refusal.get_or_insert(Refusal {
                    policy: Some(e.policy.clone()),
                    rule: e.rule.into(),
                    detail: e.detail.clone(),
                });
            }
        }
    }
    Err(first_refusal.unwrap_or(Refusal {
        policy: None,
        rule: "secrets".into(),
        detail: match secret {
            Some(s) => format!("no policy lists secret {s:?}"),
            None => "no policy sets gramine_secret".into(),
        },
    }))
}

/// Rules whose policy detail names the policy's expected measurements. A refused peer is told
/// the rule, not the values that would have admitted it (the audit log keeps them).
const MEASUREMENT_RULES: &[&str] = &[
    "mrenclave",
    "mrsigner",
    "isv_prod_id",
    "min_isv_svn",
    "mrtd",
    "rtmr",
    "mrconfigid",
];

impl Refusal {
    /// What the refused peer is told: the rule and policy, and the detail unless it would echo
    /// the policy's measurements.
    pub(crate) fn for_peer(&self) -> serde_json::Value {
        let detail = if MEASUREMENT_RULES.contains(&self.rule.as_str()) {
            format!(
                "the evidence does not match the policy's {} (the broker's audit log has the values)",
                self.rule
            )
        } else {
            self.detail.clone()
        };
        serde_json::json!({
            "error": "secret refused",
            "policy": self.policy,
            "rule": self.rule,
            "detail": detail,
        })
    }
}

/// How the native API answers a request for a secret.
#[derive(Debug)]
pub(crate) enum Decision<'a> {
    /// Release the secret.
    Granted {
        /// The policy that admitted the peer.
        policy: &'a Policy,
        /// The secret.
        secret: Secret,
    },
    /// The peer is admitted by some policy, and the name is not a secret of this broker.
    Unknown,
    /// Refused.
    Refused(Refusal),
}

/// Decides a native-API request for `name`. A peer that no policy admits gets the same refusal
/// whatever name it asks for, so it cannot learn which secrets exist; a peer that some policy
/// admits (the owner's own TEE) is told which rule refused this name, or that it is unknown.
pub(crate) fn decide_native<'a>(
    loaded: &'a Loaded,
    verdict: &Result<Verdict, Refusal>,
    name: &str,
) -> Decision<'a> {
    let v = match verdict {
        Ok(v) => v,
        Err(r) => return Decision::Refused(r.clone()),
    };
    let refusal = match decide(loaded, v, Some(name)) {
        Ok((policy, _, secret)) => return Decision::Granted { policy, secret },
        Err(r) => r,
    };
    let mut first = None;
    for p in &loaded.config.policies {
        match p.appraise(v) {
            Ok(()) if loaded.secrets.contains_key(name) => return Decision::Refused(refusal),
            Ok(()) => return Decision::Unknown,
            Err(e) => {
                first.get_or_insert(Refusal {
                    policy: Some(e.policy.clone()),
                    rule: e.rule.into(),
                    detail: e.detail.clone(),
                });
            }
        }
    }
    Decision::Refused(first.unwrap_or(Refusal {
        policy: None,
        rule: "secrets".into(),
        detail: "no policy is configured".into(),
    }))
}

/// A verdict is re-checked after this long even when the configuration did not change, so a
/// long keep-alive connection does not outlive its collateral's validity by much.
const VERDICT_TTL: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Appraisal {
    /// The configuration the verdict was made under.
    loaded: Arc<Loaded>,
    verdict: Arc<Result<Verdict, Refusal>>,
    made: Instant,
}

/// One connection: its peer, the certificate it presented, and the latest appraisal of it.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) peer: SocketAddr,
    /// SHA-256 (hex) of the certificate's SubjectPublicKeyInfo: the key a grant goes to.
    pub(crate) key_sha256: Option<String>,
    cert: Arc<Vec<u8>>,
    appraisal: tokio::sync::Mutex<Option<Appraisal>>,
}

impl Conn {
    /// A connection from `peer`, which presented `cert` (DER), not yet appraised.
    pub(crate) fn new(peer: SocketAddr, cert: Vec<u8>) -> Self {
        Self {
            peer,
            key_sha256: teeserve_ratls::spki_of(&cert)
                .ok()
                .map(|spki| teeserve_ratls::tlog::sha256_hex(&spki)),
            cert: Arc::new(cert),
            appraisal: tokio::sync::Mutex::new(None),
        }
    }

    /// The configuration in force now and this peer's verdict under it. The certificate is
    /// verified again when the configuration changed since the last request (a reload may
    /// change the root, the collateral or the policies) or the verdict is old.
    pub(crate) async fn appraise(
        &self,
        broker: &KeyBroker,
    ) -> Result<(Arc<Loaded>, Arc<Result<Verdict, Refusal>>), String> {
        let loaded = broker.current();
        let mut guard = self.appraisal.lock().await;
        if let Some(a) = guard.as_ref() {
            if Arc::ptr_eq(&a.loaded, &loaded) && a.made.elapsed() < VERDICT_TTL {
                return Ok((loaded, a.verdict.clone()));
            }
        }
        let appraiser = loaded.appraiser.clone();
        let cert = self.cert.clone();
        let verdict: Result<Verdict, RaTlsError> = tokio::task::spawn_blocking(move || {
            appraiser.verify_cert(&cert, time::OffsetDateTime::now_utc().unix_timestamp())
        })
        .await
        .map_err(|e| e.to_string())?;
        let verdict = Arc::new(verdict.map_err(|e| refusal_of(&e)));
        *guard = Some(Appraisal {
            loaded: loaded.clone(),
            verdict: verdict.clone(),
            made: Instant::now(),
        });
        Ok((loaded, verdict))
    }
}
