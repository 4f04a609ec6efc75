//! Ordinary TLS material: loading PEM certificates and keys, and making a small CA with server
//! and client certificates (`teeserve tls init`).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::KbsError;

fn cfg_err(path: &Path, reason: impl std::fmt::Display) -> KbsError {
    KbsError::Config {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Reads a PEM certificate chain.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, KbsError> {
    let pem = std::fs::read(path).map_err(|e| cfg_err(path, e))?;
    certs_from_pem(&pem).map_err(|e| cfg_err(path, e))
}

/// Parses a PEM certificate chain.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in PEM".into());
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, SEC1 or PKCS#1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, KbsError> {
    let pem = zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| cfg_err(path, e))?);
    key_from_pem(&pem).map_err(|e| cfg_err(path, e))
}

/// Parses a PEM private key.
pub fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| format!("bad PEM: {e}"))?
        .ok_or_else(|| "no private key in PEM".to_owned())
}

/// A root store holding the certificates of a PEM file.
pub fn roots_from_pem(pem: &[u8]) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs_from_pem(pem)? {
        roots.add(c).map_err(|e| e.to_string())?;
    }
    Ok(roots)
}

/// The ring crypto provider, used everywhere in teeserve.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA and the certificates it issued, as PEM.
#[derive(Debug)]
pub struct IssuedCert {
    /// Certificate PEM.
    pub cert_pem: String,
    /// Private key PEM (PKCS#8).
    pub key_pem: zeroize::Zeroizing<String>,
}

/// Makes a self-signed CA.
pub fn make_ca(cn: &str) -> Result<IssuedCert, String> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(3650);
    let cert = p.self_signed(&key).map_err(|e| e.to_string())?;
    Ok(IssuedCert {
        cert_pem: cert.pem(),
        key_pem: zeroize::Zeroizing::new(key.serialize_pem()),
    })
}

/// Issues a certificate for `names` (DNS names or IP addresses) signed by the CA.
pub fn issue(
    ca: &IssuedCert,
    cn: &str,
    names: &[String],
    client: bool,
) -> Result<IssuedCert, String> {
    let ca_key = rcgen::KeyPair::from_pem(&ca.key_pem).map_err(|e| e.to_string())?;
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&ca.cert_pem, &ca_key).map_err(|e| e.to_string())?;
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut p = rcgen::CertificateParams::new(names.to_vec()).map_err(|e| e.to_string())?;
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.extended_key_usages = vec![if client {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    }];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(825);
    let cert = p.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
    Ok(IssuedCert {
        cert_pem: cert.pem(),
        key_pem: zeroize::Zeroizing::new(key.serialize_pem()),
    })
}
