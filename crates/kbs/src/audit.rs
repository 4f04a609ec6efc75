//! The audit log: one JSON line per decision, appended and flushed to disk before a secret is
//! sent. Secrets never appear in it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use teeserve_attest::Verdict;

/// One decision.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// RFC 3339 time.
    pub time: String,
    /// The peer's address.
    pub peer: String,
    /// `native` or `gramine`.
    pub port: &'static str,
    /// `sgx` or `tdx`, when evidence verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tee: Option<String>,
    /// Measurements that identify the peer (MRENCLAVE/MRSIGNER or MRTD).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measurements: Option<serde_json::Value>,
    /// The TCB status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcb_status: Option<String>,
    /// The policy that decided (when one did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The secret asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// `granted` or `refused`.
    pub decision: &'static str,
    /// The rule that refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why it refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditRecord {
    /// A record for `peer` with what the verdict says.
    pub fn new(peer: &str, port: &'static str, verdict: Option<&Verdict>) -> Self {
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
            rule: None,
            detail: None,
        }
    }
}

/// An append-only audit log (or none).
#[derive(Debug)]
pub struct AuditLog {
    path: Option<PathBuf>,
    file: Mutex<Option<std::fs::File>>,
}

impl AuditLog {
    /// Opens (creating) the log for appending.
    pub fn open(path: Option<&Path>) -> std::io::Result<Self> {
        let file = match path {
            Some(p) => {
                let mut o = std::fs::OpenOptions::new();
                o.create(true).append(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    o.mode(0o600);
                }
                Some(o.open(p)?)
            }
            None => None,
        };
        Ok(Self {
            path: path.map(Path::to_owned),
            file: Mutex::new(file),
        })
    }

    /// Appends a record and flushes it to disk. An error means the decision must not take effect.
    pub fn record(&self, r: &AuditRecord) -> std::io::Result<()> {
        let line = serde_json::to_string(r).map_err(std::io::Error::other)? + "\n";
        tracing::info!(target: "teeserve_kbs::audit", "{}", line.trim_end());
        let mut guard = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("audit log lock poisoned"))?;
        if let Some(f) = guard.as_mut() {
            f.write_all(line.as_bytes())?;
            f.flush()?;
            f.sync_data()?;
        }
        Ok(())
    }

    /// The log's path.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}
