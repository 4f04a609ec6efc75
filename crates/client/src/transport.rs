//! A keep-alive REST connection to a teeserve (or TF Serving) endpoint over a caller-supplied
//! rustls configuration (so attested peers can be required), and the TLS helpers a requester's
//! connections share.

use crate::error::RequesterError;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Splits `host:port` into the host part (brackets removed).
pub fn host_of(addr: &str) -> String {
    let h = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    h.trim_start_matches('[').trim_end_matches(']').to_owned()
}

/// A verifier that delegates to another one and remembers the server's certificate.
#[derive(Debug)]
pub struct Capture {
    inner: Arc<dyn ServerCertVerifier>,
    /// The last end-entity certificate seen.
    pub cert: Mutex<Option<Vec<u8>>>,
}

impl Capture {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ServerCertVerifier>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            cert: Mutex::new(None),
        })
    }

    /// The captured certificate.
    pub fn captured(&self) -> Option<Vec<u8>> {
        self.cert.lock().ok().and_then(|c| c.clone())
    }
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let r = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        if let Ok(mut c) = self.cert.lock() {
            *c = Some(end_entity.to_vec());
        }
        Ok(r)
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client certificate chain and its private key, for mutual TLS.
pub type ClientIdentity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// A verifier that checks the server's certificate against a CA (PEM).
pub fn ca_verifier(ca_pem: &[u8]) -> Result<Arc<dyn ServerCertVerifier>, RequesterError> {
    let roots = teeserve_tls::roots_from_pem(ca_pem).map_err(RequesterError::tls)?;
    let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        teeserve_tls::provider(),
    )
    .build()
    .map_err(RequesterError::tls)?;
    Ok(v)
}

/// A TLS client configuration with this verifier, an optional client identity, and ALPN.
pub fn client_config(
    verifier: Arc<dyn ServerCertVerifier>,
    identity: Option<ClientIdentity>,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, RequesterError> {
    let b = rustls::ClientConfig::builder_with_provider(teeserve_tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(RequesterError::tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut c = match identity {
        Some((certs, key)) => b
            .with_client_auth_cert(certs, key)
            .map_err(RequesterError::tls)?,
        None => b.with_no_client_auth(),
    };
    c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(c)
}

/// Opens a TCP connection to `addr` and, with `tls`, a TLS session over it to `server_name`.
pub async fn connect_tls(
    addr: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    server_name: &str,
) -> std::io::Result<Box<dyn Io>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Box::new(tcp)),
        Some(c) => {
            let name = ServerName::try_from(server_name.to_owned())
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let s = tokio_rustls::TlsConnector::from(c)
                .connect(name, tcp)
                .await?;
            Ok(Box::new(s))
        }
    }
}

/// An async byte stream (TCP or TLS).
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Largest answer body [`RestClient::request`] reads.
pub const MAX_ANSWER: usize = 1 << 30;

/// A keep-alive HTTP/1.1 connection.
pub struct RestClient {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: String,
    last_headers: hyper::HeaderMap,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RestClient({})", self.authority)
    }
}

impl RestClient {
    /// Connects to `addr` over `tls` (None = plaintext).
    pub async fn connect(
        addr: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
        server_name: &str,
    ) -> Result<Self, RequesterError> {
        let io = connect_tls(addr, tls, server_name)
            .await
            .map_err(|e| RequesterError::connect(format!("cannot connect to {addr}: {e}")))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(RequesterError::connect)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            authority: addr.to_owned(),
            last_headers: hyper::HeaderMap::new(),
        })
    }

    /// The headers of the last answer (none before the first): `Retry-After` of a 429, say.
    pub fn last_headers(&self) -> &hyper::HeaderMap {
        &self.last_headers
    }

    /// Sends a request; returns the status and the body (at most [`MAX_ANSWER`] bytes).
    pub async fn request(
        &mut self,
        method: hyper::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), RequesterError> {
        self.request_within(method, path, body, MAX_ANSWER).await
    }

    /// [`RestClient::request`] reading at most `max_answer` bytes of the answer's body: a
    /// longer one is refused as it arrives, before more than that is held.
    pub async fn request_within(
        &mut self,
        method: hyper::Method,
        path: &str,
        body: Vec<u8>,
        max_answer: usize,
    ) -> Result<(u16, Vec<u8>), RequesterError> {
        self.request_with(method, path, body, &[], max_answer).await
    }

    /// [`RestClient::request_within`] with more request headers (`headers`: name, value).
    pub async fn request_with(
        &mut self,
        method: hyper::Method,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
        max_answer: usize,
    ) -> Result<(u16, Vec<u8>), RequesterError> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(RequesterError::connect)?;
        self.sender
            .ready()
            .await
            .map_err(|e| RequesterError::connect(format!("connection closed: {e}")))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(RequesterError::connect)?;
        let status = resp.status().as_u16();
        self.last_headers = resp.headers().clone();
        let body = Limited::new(resp.into_body(), max_answer)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    RequesterError::server(format!(
                        "{path} answered with a body of more than {max_answer} bytes"
                    ))
                } else {
                    RequesterError::connect(e)
                }
            })?
            .to_bytes()
            .to_vec();
        Ok((status, body))
    }
}
