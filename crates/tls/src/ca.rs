//! A small CA and the server and client certificates it issues (`teeserve tls init`).

/// A CA and the certificates it issued, as PEM.
#[derive(Debug)]
pub struct IssuedCert {
    /// Certificate PEM.
    pub cert_pem: String,
    /// Private key PEM (PKCS#8).
    pub key_pem: zeroize::Zeroizing<String>,
}

/// Makes a self-signed CA.
pub fn make_ca(cn: &str) -> Result<IssuedCert, crate::TlsError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(issue_error)?;
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(issue_error)?;
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(3650);
    let cert = p.self_signed(&key).map_err(issue_error)?;
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
) -> Result<IssuedCert, crate::TlsError> {
    let ca_key = rcgen::KeyPair::from_pem(&ca.key_pem).map_err(issue_error)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.cert_pem, &ca_key).map_err(issue_error)?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(issue_error)?;
    let mut p = rcgen::CertificateParams::new(names.to_vec()).map_err(issue_error)?;
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.extended_key_usages = vec![if client {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    }];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(825);
    let cert = p.signed_by(&key, &issuer).map_err(issue_error)?;
    Ok(IssuedCert {
        cert_pem: cert.pem(),
        key_pem: zeroize::Zeroizing::new(key.serialize_pem()),
    })
}

fn issue_error(e: rcgen::Error) -> crate::TlsError {
    crate::TlsError::Issue(e.to_string())
}
