//! rustls configurations: the protocol versions and crypto provider every teeserve endpoint
//! uses, and the TLS server name of an address.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::danger::ClientCertVerifier;

use crate::TlsError;

/// The ring crypto provider, used everywhere in teeserve.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that trusts the CA certificates of `ca_pem` and presents `chain`
/// with `key` as its client certificate.
pub fn client_config(
    ca_pem: &[u8],
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ClientConfig, TlsError> {
    let roots = crate::roots_from_pem(ca_pem).map_err(|e| TlsError::Ca(e.to_string()))?;
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(TlsError::CertKey)
}

/// A server configuration (TLS 1.3 and 1.2) that presents `chain` with `key` and asks every
/// client for a certificate, which `client_verifier` decides on.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_verifier: Arc<dyn ClientCertVerifier>,
) -> Result<rustls::ServerConfig, TlsError> {
    rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain, key)
        .map_err(TlsError::CertKey)
}

/// The TLS server name to expect when connecting to `addr` (`host:port`, IPv6 hosts in
/// brackets): `override_name` when given, else the host.
pub fn server_name(
    addr: &str,
    override_name: Option<&str>,
) -> Result<ServerName<'static>, TlsError> {
    let host = match override_name {
        Some(n) => n.to_owned(),
        None => {
            let h = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
            h.trim_start_matches('[').trim_end_matches(']').to_owned()
        }
    };
    ServerName::try_from(host.clone()).map_err(|_| TlsError::ServerName(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_is_the_host_unless_overridden() {
        let name = |a, o| server_name(a, o).map(|n| n.to_str().into_owned());
        assert_eq!(name("kbs.example:8443", None).unwrap(), "kbs.example");
        assert_eq!(name("[::1]:8443", None).unwrap(), "::1");
        assert_eq!(name("127.0.0.1:1", Some("kbs")).unwrap(), "kbs");
        assert!(matches!(
            name("bad name:1", None),
            Err(TlsError::ServerName(n)) if n == "bad name"
        ));
    }
}
