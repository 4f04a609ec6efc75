//! A client for the PCCS / Intel PCS v4 API that assembles a collateral bundle for a quote.
//!
//! API facts: Intel PCCS `routes/index.js` and the PCS v4 documentation. Issuer chains arrive
//! URL-encoded in response headers (`SGX-PCK-CRL-Issuer-Chain`, `TCB-Info-Issuer-Chain`,
//! `SGX-Enclave-Identity-Issuer-Chain`); PCCS serves the root CA CRL as hex text at `rootcacrl`;
//! TDX TCB Info and QE identity live under `/tdx/` instead of `/sgx/`.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use super::bundle::{Collateral, CollateralError};
use crate::pck::SgxExtension;
use crate::quote::{Quote, Tee};
use crate::x509::Cert;

const MAX_RESPONSE: usize = 4 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(30);

/// A PCCS endpoint.
#[derive(Clone)]
pub struct PccsClient {
    https: bool,
    host: String,
    port: u16,
    base_path: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for PccsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PccsClient({})", self.url(""))
    }
}

/// One HTTP response.
struct Response {
    status: u16,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
}

impl PccsClient {
    /// A client for `url` (the v4 base, e.g. `https://host:8081/sgx/certification/v4/`).
    /// For https, `ca_pem` is the CA that signs the PCCS's certificate.
    pub fn new(url: &str, ca_pem: Option<&[u8]>) -> Result<Self, CollateralError> {
        Self::build(url, ca_pem, false)
    }

    /// A client that accepts any TLS certificate from the PCCS (`use_secure_cert = false` in
    /// sgx_default_qcnl.conf). The collateral itself is still verified against the root.
    pub fn new_insecure(url: &str) -> Result<Self, CollateralError> {
        Self::build(url, None, true)
    }

    /// Reads `pccs_url` and `use_secure_cert` from an sgx_default_qcnl.conf (JSON, or the
    /// older `key=value` lines).
    pub fn from_qcnl_conf(text: &str, ca_pem: Option<&[u8]>) -> Result<Self, CollateralError> {
        let bad = |r: &str| CollateralError::field("sgx_default_qcnl.conf", r.to_owned());
        let (url, secure) =
            match serde_json::from_str::<serde_json::Value>(&strip_json_comments(text)) {
                Ok(v) => (
                    v.get("pccs_url")
                        .and_then(|u| u.as_str())
                        .map(str::to_owned),
                    v.get("use_secure_cert")
                        .and_then(|u| u.as_bool())
                        .unwrap_or(true),
                ),
                Err(_) => {
                    let mut url = None;
                    let mut secure = true;
                    for line in text.lines() {
                        let line = line.trim();
                        if let Some((k, v)) = line.split_once('=') {
                            match k.trim().to_ascii_uppercase().as_str() {
                                "PCCS_URL" => url = Some(v.trim().to_owned()),
                                "USE_SECURE_CERT" => secure = v.trim().eq_ignore_ascii_case("true"),
                                _ => {}
                            }
                        }
                    }
                    (url, secure)
                }
            };
        let url = url.ok_or_else(|| bad("no pccs_url"))?;
        Self::build(&url, ca_pem, !secure)
    }

    fn build(url: &str, ca_pem: Option<&[u8]>, insecure: bool) -> Result<Self, CollateralError> {
        let bad = |r: &str| CollateralError::Fetch {
            url: url.to_owned(),
            reason: r.to_owned(),
        };
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("the URL must start with http:// or https://"));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h.to_owned(), p.parse::<u16>().map_err(|_| bad("bad port"))?)
            }
            _ => (authority.to_owned(), if https { 443 } else { 80 }),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let mut base_path = format!("/{path}");
        if !base_path.ends_with('/') {
            base_path.push('/');
        }
        let tls = if https {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| bad(&e.to_string()))?;
            let config = if insecure {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyServerCert::default()))
                    .with_no_client_auth()
            } else {
                let ca = ca_pem.ok_or_else(|| {
                    bad("an https PCCS needs the CA of its certificate (--pccs-ca)")
                })?;
                let mut roots = rustls::RootCertStore::empty();
                for c in Cert::chain_from_pem(ca).map_err(|e| bad(&e))? {
                    roots
                        .add(rustls::pki_types::CertificateDer::from(c.der))
                        .map_err(|e| bad(&e.to_string()))?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            };
            Some(Arc::new(config))
        } else {
            None
        };
        Ok(Self {
            https,
            host,
            port,
            base_path,
            tls,
        })
    }

    fn url(&self, path_and_query: &str) -> String {
        format!(
            "{}://{}:{}{}{}",
            if self.https { "https" } else { "http" },
            self.host,
            self.port,
            self.base_path,
            path_and_query
        )
    }

    async fn get(&self, path: &str) -> Result<Response, CollateralError> {
        self.get_abs(&format!("{}{}", self.base_path, path)).await
    }

    async fn get_abs(&self, full_path: &str) -> Result<Response, CollateralError> {
        let url = format!(
            "{}://{}:{}{}",
            if self.https { "https" } else { "http" },
            self.host,
            self.port,
            full_path
        );
        let fail = |r: String| CollateralError::Fetch {
            url: url.clone(),
            reason: r,
        };
        let fut = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| fail(format!("connect: {e}")))?;
            let req = hyper::Request::get(full_path)
                .header(hyper::header::HOST, format!("{}:{}", self.host, self.port))
                .header(hyper::header::USER_AGENT, "teeserve")
                .body(Empty::<bytes::Bytes>::new())
                .map_err(|e| fail(e.to_string()))?;
            let resp = if let Some(tls) = &self.tls {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| fail(e.to_string()))?;
                let stream = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| fail(format!("TLS: {e}")))?;
                send(TokioIo::new(stream), req).await
            } else {
                send(TokioIo::new(tcp), req).await
            }
            .map_err(fail)?;
            Ok(resp)
        };
        let resp: Response = tokio::time::timeout(TIMEOUT, fut)
            .await
            .map_err(|_| fail("timed out".into()))??;
        if resp.status != 200 {
            return Err(fail(format!(
                "HTTP {}: {}",
                resp.status,
                String::from_utf8_lossy(&resp.body[..resp.body.len().min(200)])
            )));
        }
        Ok(resp)
    }

    /// Fetches the collateral `quote` needs (async).
    pub async fn fetch(&self, quote: &Quote) -> Result<Collateral, CollateralError> {
        let (ca, fmspc) = platform_of(quote)?;
        let tee_prefix = match quote.tee() {
            Tee::Sgx => "",
            Tee::Tdx => "tdx",
        };
        self.fetch_parts(ca, &fmspc, tee_prefix).await
    }

    async fn fetch_parts(
        &self,
        ca: &str,
        fmspc: &str,
        tee: &str,
    ) -> Result<Collateral, CollateralError> {
        // TCB Info and QE identity of TDX live under /tdx/ instead of /sgx/ (as QCNL does it).
        let tee_base = if tee == "tdx" {
            self.base_path.replacen("/sgx/", "/tdx/", 1)
        } else {
            self.base_path.clone()
        };
        let tee_path = |p: &str| format!("{tee_base}{p}");
        let pck_crl = self.get(&format!("pckcrl?ca={ca}&encoding=der")).await?;
        let root_crl = self.get("rootcacrl").await?;
        let tcb = self
            .get_abs(&tee_path(&format!("tcb?fmspc={fmspc}")))
            .await?;
        let qe = self.get_abs(&tee_path("qe/identity")).await?;

        #[derive(Deserialize)]
        struct TcbBody<'a> {
            #[serde(rename = "tcbInfo", borrow)]
            tcb_info: &'a serde_json::value::RawValue,
            signature: String,
        }
        #[derive(Deserialize)]
        struct QeBody<'a> {
            #[serde(rename = "enclaveIdentity", borrow)]
            identity: &'a serde_json::value::RawValue,
            signature: String,
        }
        let tcb_body: TcbBody<'_> = serde_json::from_slice(&tcb.body)
            .map_err(|e| CollateralError::field("PCCS tcb response", e.to_string()))?;
        let qe_body: QeBody<'_> = serde_json::from_slice(&qe.body)
            .map_err(|e| CollateralError::field("PCCS qe/identity response", e.to_string()))?;
        let hexsig = |s: &str, f: &str| {
            hex::decode(s).map_err(|_| CollateralError::field(f, "signature is not hex"))
        };
        let root_ca_crl = {
            let text = String::from_utf8_lossy(&root_crl.body).trim().to_owned();
            hex::decode(&text).unwrap_or(root_crl.body)
        };
        Ok(Collateral {
            pck_crl_issuer_chain: header_chain(&pck_crl.headers, &["SGX-PCK-CRL-Issuer-Chain"])?,
            root_ca_crl,
            pck_crl: crate::x509::Crl::parse(&pck_crl.body)
                .map(|c| c.der)
                .map_err(|e| CollateralError::field("PCCS pckcrl response", e))?,
            tcb_info_issuer_chain: header_chain(
                &tcb.headers,
                &["TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"],
            )?,
            tcb_info: tcb_body.tcb_info.get().to_owned(),
            tcb_info_signature: hexsig(&tcb_body.signature, "tcb signature")?,
            qe_identity_issuer_chain: header_chain(
                &qe.headers,
                &["SGX-Enclave-Identity-Issuer-Chain"],
            )?,
            qe_identity: qe_body.identity.get().to_owned(),
            qe_identity_signature: hexsig(&qe_body.signature, "qe/identity signature")?,
        })
    }

    /// Fetches the collateral `quote` needs, blocking (not for use inside an async runtime).
    pub fn fetch_for_quote(&self, quote: &Quote) -> Result<Collateral, CollateralError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CollateralError::Fetch {
                url: self.url(""),
                reason: e.to_string(),
            })?;
        rt.block_on(self.fetch(quote))
    }
}

async fn send<T>(
    io: TokioIo<T>,
    req: hyper::Request<Empty<bytes::Bytes>>,
) -> Result<Response, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = Limited::new(resp.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes()
        .to_vec();
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn header_chain(h: &hyper::HeaderMap, names: &[&str]) -> Result<String, CollateralError> {
    for n in names {
        if let Some(v) = h.get(*n) {
            let raw = v
                .to_str()
                .map_err(|_| CollateralError::field(*n, "not ASCII"))?;
            return Ok(percent_decode(raw));
        }
    }
    Err(CollateralError::field(names[0], "response header missing"))
}

/// The PCK CA type (`platform` or `processor`, from the PCK certificate's issuer) and the FMSPC
/// (upper-case hex, from its SGX extension) that select a quote's collateral.
pub fn platform_of(quote: &Quote) -> Result<(&'static str, String), CollateralError> {
    let chain = Cert::chain_from_pem(&quote.pck_chain_pem)
        .map_err(|e| CollateralError::field("quote PCK chain", e))?;
    let leaf = chain
        .first()
        .ok_or_else(|| CollateralError::field("quote PCK chain", "empty"))?;
    let ext = leaf
        .sgx_extension
        .as_deref()
        .ok_or_else(|| CollateralError::field("quote PCK certificate", "no SGX extension"))?;
    let ext = SgxExtension::parse(ext)
        .map_err(|e| CollateralError::field("quote PCK certificate", e.to_string()))?;
    let ca = if leaf.issuer_cn.contains("Processor") {
        "processor"
    } else {
        "platform"
    };
    Ok((ca, hex::encode_upper(ext.fmspc)))
}

/// Decodes %XX escapes (issuer chains are URL-encoded PEM).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes a string for a header as PCCS does (every byte outside unreserved characters).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn strip_json_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A server-certificate verifier that accepts any certificate but still checks the handshake
/// signatures: for peers whose trust comes from elsewhere (collateral verified against the root,
/// or an attestation checked after the handshake).
#[derive(Debug, Default)]
pub struct AnyServerCert(crate::x509::HandshakeSignatures);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_round_trip() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIC+/=\n-----END CERTIFICATE-----\n";
        assert_eq!(percent_decode(&percent_encode(pem)), pem);
    }

    #[test]
    fn qcnl_conf_json_and_lines() {
        let c = PccsClient::from_qcnl_conf(r#"{"pccs_url": "http://127.0.0.1:8081/sgx/certification/v4/", "use_secure_cert": false}"#, None).unwrap();
        assert_eq!(
            c.url("tcb"),
            "http://127.0.0.1:8081/sgx/certification/v4/tcb"
        );
        let c = PccsClient::from_qcnl_conf(
            "PCCS_URL=http://h:1/sgx/certification/v4/\nUSE_SECURE_CERT=FALSE\n",
            None,
        )
        .unwrap();
        assert_eq!(c.port, 1);
    }
}
