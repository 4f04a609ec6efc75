//! The TEE side of the key broker's native API: connect with an RA-TLS client certificate and
//! fetch secrets (`GET /v1/secrets/{name}`) or this TEE's verdict (`GET /v1/verdict`).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use teeserve_ratls::key_release::{decode_proof_header, LOG_PROOF_HEADER};
use teeserve_ratls::RaTlsIdentity;
use zeroize::Zeroizing;

use crate::TlsError;

const MAX_SECRET: usize = 64 * 1024 * 1024;

/// Why a secret could not be fetched from the key broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker could not be reached (worth retrying: it may not be up yet).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The TLS configuration could not be made.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The TLS handshake with the broker failed.
    #[error("TLS: handshake with {addr}: {source}")]
    Handshake {
        /// The broker's address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// The broker refused the request.
    #[error("the key broker refused secret {secret:?}: {reason}")]
    Refused {
        /// The secret asked for.
        secret: String,
        /// The broker's reason (rule and detail).
        reason: String,
    },
    /// The broker's answer is not the protocol's.
    #[error("key broker protocol: {0}")]
    Protocol(String),
}

/// A connection to a key broker.
pub struct KbsClient {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    authority: String,
}

impl std::fmt::Debug for KbsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KbsClient({})", self.authority)
    }
}

/// A TLS client configuration that presents `identity` and trusts `ca_pem`.
fn client_config(
    ca_pem: &[u8],
    identity: &RaTlsIdentity,
) -> Result<rustls::ClientConfig, TlsError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_pkcs8.to_vec()));
    crate::client_config(
        ca_pem,
        vec![CertificateDer::from(identity.cert_der.clone())],
        key,
    )
}

impl KbsClient {
    /// Connects to the broker at `addr` (`host:port`), verifying it against `ca_pem`.
    pub async fn connect(
        addr: &str,
        ca_pem: &[u8],
        name: Option<&str>,
        identity: &RaTlsIdentity,
    ) -> Result<Self, BrokerError> {
        let config = Arc::new(client_config(ca_pem, identity)?);
        let sni = crate::server_name(addr, name)?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| BrokerError::Io {
                what: format!("cannot connect to the key broker at {addr}"),
                source: e,
            })?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(sni, tcp)
            .await
            .map_err(|e| BrokerError::Handshake {
                addr: addr.to_owned(),
                source: e,
            })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| BrokerError::Protocol(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            authority: addr.to_owned(),
        })
    }

    async fn get(
        &mut self,
        path: &str,
    ) -> Result<(u16, Zeroizing<Vec<u8>>, Option<String>), BrokerError> {
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, &self.authority)
            .body(Empty::new())
            .map_err(|e| BrokerError::Protocol(e.to_string()))?;
        self.sender
            .ready()
            .await
            .map_err(|e| BrokerError::Protocol(format!("connection closed: {e}")))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| BrokerError::Protocol(format!("GET {path}: {e}")))?;
        let status = resp.status().as_u16();
        let proof = match resp.headers().get(LOG_PROOF_HEADER) {
            Some(v) => Some(decode_proof_header(v.as_bytes()).map_err(BrokerError::Protocol)?),
            None => None,
        };
        let body = Limited::new(resp.into_body(), MAX_SECRET)
            .collect()
            .await
            .map_err(|e| BrokerError::Protocol(format!("GET {path}: {e}")))?
            .to_bytes();
        Ok((status, Zeroizing::new(body.to_vec()), proof))
    }

    /// Fetches a secret. A refusal carries the broker's reason (policy, rule, detail).
    pub async fn get_secret(&mut self, name: &str) -> Result<Zeroizing<Vec<u8>>, BrokerError> {
        Ok(self.get_secret_logged(name).await?.0)
    }

    /// Fetches a secret, and the inclusion proof of its grant in the broker's signed audit
    /// log (C2SP tlog-proof text) when the broker signs its log.
    pub async fn get_secret_logged(
        &mut self,
        name: &str,
    ) -> Result<(Zeroizing<Vec<u8>>, Option<String>), BrokerError> {
        let (status, body, proof) = self.get(&format!("/v1/secrets/{name}")).await?;
        if status == 200 {
            return Ok((body, proof));
        }
        let reason = match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) => {
                let rule = v.get("rule").and_then(|r| r.as_str()).unwrap_or("?");
                let detail = v
                    .get("detail")
                    .and_then(|r| r.as_str())
                    .or_else(|| v.get("error").and_then(|r| r.as_str()))
                    .unwrap_or("");
                match v.get("policy").and_then(|p| p.as_str()) {
                    Some(p) => format!("HTTP {status}: policy {p:?} rule {rule}: {detail}"),
                    None => format!("HTTP {status}: rule {rule}: {detail}"),
                }
            }
            Err(_) => format!("HTTP {status}"),
        };
        Err(BrokerError::Refused {
            secret: name.to_owned(),
            reason,
        })
    }

    /// How the broker appraised this connection's evidence.
    pub async fn verdict(&mut self) -> Result<serde_json::Value, BrokerError> {
        let (status, body, _) = self.get("/v1/verdict").await?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| BrokerError::Protocol(e.to_string()))?;
        if status != 200 {
            return Err(BrokerError::Refused {
                secret: "(verdict)".into(),
                reason: v.to_string(),
            });
        }
        Ok(v)
    }
}
