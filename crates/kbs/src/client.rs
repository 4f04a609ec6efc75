//! The TEE side of the native API: connect with an RA-TLS client certificate and fetch secrets.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use teeserve_ratls::RaTlsIdentity;
use zeroize::Zeroizing;

use crate::KbsError;

const MAX_SECRET: usize = 64 * 1024 * 1024;

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
pub fn client_config(
    ca_pem: &[u8],
    identity: &RaTlsIdentity,
) -> Result<rustls::ClientConfig, KbsError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_pkcs8.to_vec()));
    Ok(teeserve_tls::client_config(
        ca_pem,
        vec![CertificateDer::from(identity.cert_der.clone())],
        key,
    )?)
}

/// Splits `host:port` and picks the TLS server name (`server_name` overrides the host).
pub fn server_name(
    addr: &str,
    override_name: Option<&str>,
) -> Result<ServerName<'static>, KbsError> {
    Ok(teeserve_tls::server_name(addr, override_name)?)
}

impl KbsClient {
    /// Connects to the broker at `addr` (`host:port`), verifying it against `ca_pem`.
    pub async fn connect(
        addr: &str,
        ca_pem: &[u8],
        name: Option<&str>,
        identity: &RaTlsIdentity,
    ) -> Result<Self, KbsError> {
        let config = Arc::new(client_config(ca_pem, identity)?);
        let sni = server_name(addr, name)?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| KbsError::Io {
                what: format!("cannot connect to the key broker at {addr}"),
                source: e,
            })?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(sni, tcp)
            .await
            .map_err(|e| KbsError::Tls(format!("handshake with {addr}: {e}")))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| KbsError::Protocol(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            authority: addr.to_owned(),
        })
    }

    async fn get(&mut self, path: &str) -> Result<(u16, Zeroizing<Vec<u8>>), KbsError> {
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, &self.authority)
            .body(Empty::new())
            .map_err(|e| KbsError::Protocol(e.to_string()))?;
        self.sender
            .ready()
            .await
            .map_err(|e| KbsError::Protocol(format!("connection closed: {e}")))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| KbsError::Protocol(format!("GET {path}: {e}")))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_SECRET)
            .collect()
            .await
            .map_err(|e| KbsError::Protocol(format!("GET {path}: {e}")))?
            .to_bytes();
        Ok((status, Zeroizing::new(body.to_vec())))
    }

    /// Fetches a secret. A refusal carries the broker's reason (policy, rule, detail).
    pub async fn get_secret(&mut self, name: &str) -> Result<Zeroizing<Vec<u8>>, KbsError> {
        let (status, body) = self.get(&format!("/v1/secrets/{name}")).await?;
        if status == 200 {
            return Ok(body);
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
        Err(KbsError::Refused {
            secret: name.to_owned(),
            reason,
        })
    }

    /// How the broker appraised this connection's evidence.
    pub async fn verdict(&mut self) -> Result<serde_json::Value, KbsError> {
        let (status, body) = self.get("/v1/verdict").await?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| KbsError::Protocol(e.to_string()))?;
        if status != 200 {
            return Err(KbsError::Refused {
                secret: "(verdict)".into(),
                reason: v.to_string(),
            });
        }
        Ok(v)
    }
}
