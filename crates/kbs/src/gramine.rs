//! Gramine's secret-provisioning protocol (Gramine `tools/sgx/ra-tls/secret_prov_*.c`): after a
//! mutual TLS handshake in which the enclave presents its RA-TLS certificate, the enclave sends
//! the 35 bytes of [`REQUEST`]; the server answers with the 37 bytes of [`RESPONSE`], a 4-byte
//! big-endian length, and the secret.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

use crate::audit::AuditRecord;
use crate::broker::{decide, Conn, KeyBroker};

/// `SECRET_PROVISION_RA_TLS_REQUEST_V1` with its terminating NUL.
pub(crate) const REQUEST: &[u8; 35] = b"SECRET_PROVISION_RA_TLS_REQUEST_V1\0";
/// `SECRET_PROVISION_RA_TLS_RESPONSE_V1:` with its terminating NUL.
pub(crate) const RESPONSE: &[u8; 37] = b"SECRET_PROVISION_RA_TLS_RESPONSE_V1:\0";

pub(crate) async fn serve<S>(
    mut tls: S,
    conn: Arc<Conn>,
    broker: Arc<KeyBroker>,
    timeout_secs: u64,
) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut req = [0u8; 35];
    tokio::time::timeout(Duration::from_secs(timeout_secs), tls.read_exact(&mut req))
        .await
        .map_err(|_| "request timed out".to_owned())?
        .map_err(|e| format!("reading the request: {e}"))?;
    // Decided under the configuration in force now, not the one of the handshake.
    let (loaded, verdict) = conn.appraise(&broker).await?;
    let peer = conn.peer;
    let mut rec = AuditRecord::new(&peer.to_string(), "gramine", verdict.as_ref().as_ref().ok());
    if &req != REQUEST {
        rec.rule = Some("protocol".into());
        rec.detail = Some("the first 35 bytes are not SECRET_PROVISION_RA_TLS_REQUEST_V1".into());
        broker.audit_refusal(peer, rec, &loaded.config.limits);
        return Err("bad request magic".into());
    }
    let decision = match verdict.as_ref() {
        Ok(v) => decide(&loaded, v, None),
        Err(r) => Err(r.clone()),
    };
    match decision {
        Ok((policy, name, secret)) => {
            rec.decision = "granted";
            rec.policy = Some(policy.name.clone());
            rec.secret = Some(name);
            rec.policy_sha256 = Some(loaded.policy_sha256.clone());
            rec.peer_key_sha256 = conn.key_sha256.clone();
            // Gramine's protocol has no place for the log proof; the grant is logged all the same.
            broker
                .audit_grant(rec)
                .await
                .map_err(|e| format!("audit log: {e}; not releasing"))?;
            let len = u32::try_from(secret.0.len()).map_err(|_| "secret too large".to_owned())?;
            let mut msg = Zeroizing::new(Vec::with_capacity(41 + secret.0.len()));
            msg.extend_from_slice(RESPONSE);
            msg.extend_from_slice(&len.to_be_bytes());
            msg.extend_from_slice(&secret.0);
            tls.write_all(&msg).await.map_err(|e| e.to_string())?;
            let _ = tls.shutdown().await;
            Ok(())
        }
        Err(r) => {
            rec.policy = r.policy;
            rec.rule = Some(r.rule);
            rec.detail = Some(r.detail);
            // The protocol has no refusal message: the connection is closed either way.
            broker.audit_refusal(peer, rec, &loaded.config.limits);
            let _ = tls.shutdown().await;
            Err("refused".into())
        }
    }
}
