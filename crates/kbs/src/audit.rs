//! The audit log: one JSON line per decision, appended and flushed to disk before a secret is
//! sent. Secrets never appear in it.
//!
//! Grants and refusals take different paths. A grant's line is written and synced to disk
//! before the secret leaves, every time. Refusals are cheap for anyone to cause, so they are
//! aggregated: the first refusal of a kind (same peer address, port, rule, policy, secret and
//! measurements) is written at once, further identical ones are only counted and written as one
//! line with `repeated` (and `throttled`, those answered "too many requests") when the summary
//! interval ends. Refusal lines are not synced on their own (the next grant's sync carries
//! them), so a flood of refusals never puts a grant behind a queue of disk syncs.
//!
//! Besides decisions, the log records the broker's own events (`start`, `reload`,
//! `reload_rejected`, `stop`) with the SHA-256 of the configuration file as loaded. When the
//! log is signed, every line is a leaf of its Merkle tree and each append is followed by a
//! signed checkpoint (`signed_log.rs`); a grant's answer carries the inclusion proof of its
//! line.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Condvar, Mutex};

use serde::Serialize;
use teeserve_attest::Verdict;
use teeserve_ratls::tlog::note::{SigningKey, VerifierKey};

use crate::signed_log::{LogFiles, Opened};

/// One decision.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AuditRecord {
    /// RFC 3339 time.
    pub(crate) time: String,
    /// The peer's address.
    pub(crate) peer: String,
    /// `native` or `gramine`.
    pub(crate) port: &'static str,
    /// `sgx` or `tdx`, when evidence verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tee: Option<String>,
    /// Measurements that identify the peer (MRENCLAVE/MRSIGNER or MRTD).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) measurements: Option<serde_json::Value>,
    /// The TCB status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tcb_status: Option<String>,
    /// The policy that decided (when one did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) policy: Option<String>,
    /// The secret asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) secret: Option<String>,
    /// `granted` or `refused`.
    pub(crate) decision: &'static str,
    /// On a grant: SHA-256 (hex) of the broker's configuration file as loaded, the policy the
    /// grant was made under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) policy_sha256: Option<String>,
    /// On a grant: SHA-256 (hex) of the DER SubjectPublicKeyInfo of the RA-TLS certificate the
    /// peer presented, the key the secret went to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) peer_key_sha256: Option<String>,
    /// The rule that refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rule: Option<String>,
    /// Why it refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) detail: Option<String>,
    /// On a summary line: how many refusals like this one were counted, not written, since
    /// the previous line for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) repeated: Option<u64>,
    /// On a summary line: how many of `repeated` were answered "too many requests".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) throttled: Option<u64>,
    /// On an overflow line: refusals that could not be told apart from others (too many kinds
    /// in one interval) and were only counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dropped: Option<u64>,
}

impl AuditRecord {
    /// A record for `peer` with what the verdict says.
    pub(crate) fn new(peer: &str, port: &'static str, verdict: Option<&Verdict>) -> Self {
        let measurements = verdict.map(|v| match (&v.sgx, &v.tdx) {
            (Some(s), _) => serde_json::json!({"mrenclave": s.mrenclave, "mrsigner": s.mrsigner, "isv_prod_id": s.isv_prod_id, "isv_svn": s.isv_svn}),
            (_, Some(t)) => serde_json::json!({"mrtd": t.mrtd, "rtmr": t.rtmr}),
            _ => serde_json::Value::Null,
        });
        Self {
            time: teeserve_attest::collateral::format_time(
                time::OffsetDateTime::now_utc().unix_timestamp(),
            ),
            peer: peer.to_owned(),
            port,
            tee: verdict.map(|v| v.tee.to_string()),
            measurements,
            tcb_status: verdict.map(|v| v.tcb_status.to_string()),
            policy: None,
            secret: None,
            decision: "refused",
            policy_sha256: None,
            peer_key_sha256: None,
            rule: None,
            detail: None,
            repeated: None,
            throttled: None,
            dropped: None,
        }
    }
}

/// Kinds of refusal tracked in one summary interval. Beyond it, refusals are counted in one
/// overflow line, so a peer varying the names it asks for cannot grow the log or the memory.
const MAX_KINDS: usize = 256;

/// What makes two refusals "the same" for aggregation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Kind {
    peer: IpAddr,
    port: &'static str,
    rule: Option<String>,
    policy: Option<String>,
    secret: Option<String>,
    measurements: String,
}

#[derive(Debug)]
struct Counted {
    /// The latest refusal of this kind (its time and peer port are the summary's).
    last: AuditRecord,
    repeated: u64,
    throttled: u64,
}

#[derive(Debug, Default)]
struct Refusals {
    kinds: HashMap<Kind, Counted>,
    dropped: u64,
}

/// Appends written and synced, counted, so that concurrent grants share disk syncs.
#[derive(Debug, Default)]
struct Syncs {
    /// Appends written (each numbered in the order written).
    written: u64,
    /// Appends known to be on disk.
    synced: u64,
    /// Whether a sync is under way.
    syncing: bool,
}

/// Syncs the files at once, each on its own thread: the log and its checkpoints then cost
/// about one disk sync together, not one each.
fn sync_all(files: &[std::sync::Arc<std::fs::File>]) -> std::io::Result<()> {
    let Some((first, rest)) = files.split_first() else {
        return Ok(());
    };
    std::thread::scope(|s| {
        let others: Vec<_> = rest
            .iter()
            .map(|f| s.spawn(move || f.sync_data()))
            .collect();
        let mut r = first.sync_data();
        for h in others {
            let o = h
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("audit log sync panicked")));
            r = r.and(o);
        }
        r
    })
}

/// An append-only audit log (or none).
#[derive(Debug)]
pub(crate) struct AuditLog {
    files: Mutex<Option<LogFiles>>,
    refusals: Mutex<Refusals>,
    syncs: Mutex<Syncs>,
    synced: Condvar,
}

impl AuditLog {
    /// Opens (creating) the log for appending, signed with `key` when given; what was found
    /// in it when it exists.
    pub(crate) fn open(
        path: Option<&Path>,
        key: Option<SigningKey>,
    ) -> Result<(Self, Option<Opened>), String> {
        let (files, opened) = match path {
            Some(p) => {
                let (f, o) = LogFiles::open(p, key)?;
                (Some(f), Some(o))
            }
            None => (None, None),
        };
        Ok((
            Self {
                files: Mutex::new(files),
                refusals: Mutex::new(Refusals::default()),
                syncs: Mutex::new(Syncs::default()),
                synced: Condvar::new(),
            },
            opened,
        ))
    }

    /// The verifier key of a signed log.
    pub(crate) fn verifier(&self) -> Option<VerifierKey> {
        self.files
            .lock()
            .ok()
            .and_then(|g| g.as_ref().and_then(LogFiles::verifier))
    }

    /// Appends a record and syncs it to disk; returns its inclusion proof when the log is
    /// signed. An error means the decision must not take effect. This is the path of grants.
    pub(crate) fn record(&self, r: &AuditRecord) -> std::io::Result<Option<String>> {
        let line = serde_json::to_string(r).map_err(std::io::Error::other)?;
        tracing::info!(target: "teeserve_kbs::audit", "{line}");
        self.append(&[line], true)
    }

    /// Appends one of the broker's own events, synced when `sync`.
    pub(crate) fn event(&self, v: &serde_json::Value, sync: bool) -> std::io::Result<()> {
        let line = v.to_string();
        tracing::info!(target: "teeserve_kbs::audit", "{line}");
        self.append(&[line], sync).map(|_| ())
    }

    /// Appends lines (each with its checkpoint when signed). With `sync`, returns once they
    /// are on disk: the files are synced after the lock is released, and one sync covers every
    /// append written before it started, so concurrent grants share syncs (group commit)
    /// instead of queueing for one each.
    fn append(&self, lines: &[String], sync: bool) -> std::io::Result<Option<String>> {
        let poisoned = || std::io::Error::other("audit log lock poisoned");
        let (proof, handles, seq) = {
            let mut guard = self.files.lock().map_err(|_| poisoned())?;
            let Some(files) = guard.as_mut() else {
                return Ok(None);
            };
            let proof = files.append(lines)?;
            // Numbered under the files' lock: every append numbered up to n is written.
            let mut s = self.syncs.lock().map_err(|_| poisoned())?;
            s.written += 1;
            (proof, files.handles(), s.written)
        };
        if sync {
            let mut s = self.syncs.lock().map_err(|_| poisoned())?;
            while s.synced < seq {
                if s.syncing {
                    s = self.synced.wait(s).map_err(|_| poisoned())?;
                    continue;
                }
                s.syncing = true;
                let target = s.written;
                drop(s);
                let r = sync_all(&handles);
                s = self.syncs.lock().map_err(|_| poisoned())?;
                s.syncing = false;
                if r.is_ok() {
                    s.synced = s.synced.max(target);
                }
                self.synced.notify_all();
                r?;
            }
        }
        Ok(proof)
    }

    /// Records a refusal of a peer at `peer`: written at once when it is the first of its kind
    /// in this summary interval and not `throttled`, otherwise counted for the summary line
    /// ([`AuditLog::flush_refusals`]). Not synced to disk on its own.
    pub(crate) fn refusal(
        &self,
        peer: IpAddr,
        r: AuditRecord,
        throttled: bool,
    ) -> std::io::Result<()> {
        let kind = Kind {
            peer,
            port: r.port,
            rule: r.rule.clone(),
            policy: r.policy.clone(),
            secret: r.secret.clone(),
            measurements: r
                .measurements
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
        };
        let write_now = {
            let mut agg = self
                .refusals
                .lock()
                .map_err(|_| std::io::Error::other("audit log lock poisoned"))?;
            let full = agg.kinds.len() >= MAX_KINDS;
            match agg.kinds.get_mut(&kind) {
                Some(c) => {
                    c.repeated += 1;
                    c.throttled += u64::from(throttled);
                    c.last = r;
                    None
                }
                None if full => {
                    agg.dropped += 1;
                    None
                }
                None => {
                    let counted = u64::from(throttled);
                    agg.kinds.insert(
                        kind,
                        Counted {
                            last: r.clone(),
                            repeated: counted,
                            throttled: counted,
                        },
                    );
                    (!throttled).then_some(r)
                }
            }
        };
        match write_now {
            Some(r) => {
                let line = serde_json::to_string(&r).map_err(std::io::Error::other)?;
                tracing::info!(target: "teeserve_kbs::audit", "{line}");
                self.append(&[line], false).map(|_| ())
            }
            None => Ok(()),
        }
    }

    /// Writes one summary line for each kind of refusal counted since the last call (and one
    /// for refusals beyond the kinds tracked), and starts a new interval.
    pub(crate) fn flush_refusals(&self) -> std::io::Result<()> {
        let taken = match self.refusals.lock() {
            Ok(mut agg) => std::mem::take(&mut *agg),
            Err(_) => return Err(std::io::Error::other("audit log lock poisoned")),
        };
        let now = teeserve_attest::collateral::format_time(
            time::OffsetDateTime::now_utc().unix_timestamp(),
        );
        let mut out = Vec::new();
        for (_, c) in taken.kinds {
            if c.repeated == 0 {
                continue;
            }
            let mut r = c.last;
            r.time = now.clone();
            r.repeated = Some(c.repeated);
            r.throttled = Some(c.throttled);
            out.push(serde_json::to_string(&r).map_err(std::io::Error::other)?);
        }
        if taken.dropped > 0 {
            let r = serde_json::json!({
                "time": now,
                "decision": "refused",
                "rule": "audit_overflow",
                "detail": format!("more than {MAX_KINDS} kinds of refusal in one interval; these were only counted"),
                "dropped": taken.dropped,
            });
            out.push(r.to_string());
        }
        if out.is_empty() {
            return Ok(());
        }
        for line in &out {
            tracing::info!(target: "teeserve_kbs::audit", "{line}");
        }
        self.append(&out, false).map(|_| ())
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        // A reload replaces the log; what was counted under the old one is still written.
        if let Err(e) = self.flush_refusals() {
            tracing::error!("audit log: {e}");
        }
    }
}
