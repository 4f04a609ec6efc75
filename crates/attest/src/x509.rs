//! Owned summaries of X.509 certificates and CRLs, with signature checks through ring.

use x509_parser::prelude::*;

/// The largest PEM chain or CRL accepted.
pub const MAX_CERT_SIZE: usize = 64 * 1024;

/// A certificate, parsed once and kept with its DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cert {
    /// The DER bytes.
    pub der: Vec<u8>,
    /// Raw DER of the subject name.
    pub subject_raw: Vec<u8>,
    /// Raw DER of the issuer name.
    pub issuer_raw: Vec<u8>,
    /// The subject's common name (empty when absent).
    pub subject_cn: String,
    /// The issuer's common name.
    pub issuer_cn: String,
    /// Serial number, big-endian as encoded.
    pub serial: Vec<u8>,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    /// The raw public key bits (for EC: the uncompressed point).
    pub public_key: Vec<u8>,
    /// Content octets of the key's curve OID (EC keys).
    pub curve: Vec<u8>,
    /// What the issuer signed.
    pub signed: Signed,
    /// The value of Intel's SGX extension (PCK certificates), kept from the first parse.
    pub sgx_extension: Option<Vec<u8>>,
}

/// The signed part of a certificate or CRL, kept so signatures are checked without re-parsing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signed {
    /// The DER of the TBS structure.
    pub tbs: Vec<u8>,
    /// Content octets of the signature algorithm OID.
    pub alg: Vec<u8>,
    /// The signature bits.
    pub signature: Vec<u8>,
}

const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

impl Signed {
    /// Checks the signature with `issuer`'s key: ring directly for ECDSA (all of Intel's PKI),
    /// `None` for other algorithms (the caller falls back to x509-parser).
    fn verify_ecdsa(&self, issuer: &Cert) -> Option<bool> {
        use ring::signature as s;
        let alg: &dyn s::VerificationAlgorithm =
            match (self.alg.as_slice(), issuer.curve.as_slice()) {
                (ECDSA_SHA256, P256) => &s::ECDSA_P256_SHA256_ASN1,
                (ECDSA_SHA384, P256) => &s::ECDSA_P256_SHA384_ASN1,
                (ECDSA_SHA256, P384) => &s::ECDSA_P384_SHA256_ASN1,
                (ECDSA_SHA384, P384) => &s::ECDSA_P384_SHA384_ASN1,
                _ => return None,
            };
        Some(
            s::UnparsedPublicKey::new(alg, &issuer.public_key)
                .verify(&self.tbs, &self.signature)
                .is_ok(),
        )
    }
}

fn cn(name: &X509Name<'_>) -> String {
    name.iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or_default()
        .to_owned()
}

impl Cert {
    /// Parses one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        if der.len() > MAX_CERT_SIZE {
            return Err(format!("certificate of {} bytes is too large", der.len()));
        }
        let (rest, c) =
            parse_x509_certificate(der).map_err(|e| format!("not a certificate: {e}"))?;
        if !rest.is_empty() {
            return Err("trailing bytes after the certificate".into());
        }
        Ok(Cert {
            der: der.to_vec(),
            subject_raw: c.subject().as_raw().to_vec(),
            issuer_raw: c.issuer().as_raw().to_vec(),
            subject_cn: cn(c.subject()),
            issuer_cn: cn(c.issuer()),
            serial: c.raw_serial().to_vec(),
            not_before: c.validity().not_before.timestamp(),
            not_after: c.validity().not_after.timestamp(),
            spki: c.public_key().raw.to_vec(),
            public_key: c.public_key().subject_public_key.data.to_vec(),
            curve: c
                .public_key()
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.as_bytes().to_vec())
                .unwrap_or_default(),
            sgx_extension: {
                let want =
                    x509_parser::der_parser::oid::Oid::from(&crate::pck::SGX_EXTENSION_OID).ok();
                c.extensions()
                    .iter()
                    .find(|e| Some(&e.oid) == want.as_ref())
                    .map(|e| e.value.to_vec())
            },
            signed: Signed {
                tbs: c.tbs_certificate.as_ref().to_vec(),
                alg: c.signature_algorithm.algorithm.as_bytes().to_vec(),
                signature: c.signature_value.data.to_vec(),
            },
        })
    }

    /// Parses every certificate in a PEM text, in order.
    pub fn chain_from_pem(pem: &[u8]) -> Result<Vec<Self>, String> {
        if pem.len() > MAX_CERT_SIZE {
            return Err(format!("PEM chain of {} bytes is too large", pem.len()));
        }
        let mut out = Vec::new();
        for p in x509_parser::pem::Pem::iter_from_buffer(pem) {
            let p = p.map_err(|e| format!("bad PEM: {e}"))?;
            if p.label != "CERTIFICATE" {
                continue;
            }
            out.push(Cert::from_der(&p.contents)?);
            if out.len() > 8 {
                return Err("more than 8 certificates in a chain".into());
            }
        }
        if out.is_empty() {
            return Err("no certificate found in PEM".into());
        }
        Ok(out)
    }

    /// Checks that this certificate is signed by `issuer`.
    pub fn verify_by(&self, issuer: &Cert) -> bool {
        self.signed
            .verify_ecdsa(issuer)
            .unwrap_or_else(|| self.verify_signed_by(&issuer.spki))
    }

    /// Checks that this certificate is signed by `issuer_spki` (DER SubjectPublicKeyInfo).
    pub fn verify_signed_by(&self, issuer_spki: &[u8]) -> bool {
        let Ok((_, c)) = parse_x509_certificate(&self.der) else {
            return false;
        };
        let Ok((_, spki)) = SubjectPublicKeyInfo::from_der(issuer_spki) else {
            return false;
        };
        c.verify_signature(Some(&spki)).is_ok()
    }

    /// SHA-256 of the DER.
    pub fn fingerprint(&self) -> [u8; 32] {
        sha256(&self.der)
    }
}

/// A CRL, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl {
    /// The DER bytes.
    pub der: Vec<u8>,
    /// Raw DER of the issuer name.
    pub issuer_raw: Vec<u8>,
    /// Issuer common name.
    pub issuer_cn: String,
    /// thisUpdate.
    pub this_update: i64,
    /// nextUpdate (required here: Intel's CRLs always carry it).
    pub next_update: i64,
    /// Revoked serial numbers.
    pub revoked: Vec<Vec<u8>>,
    /// What the issuer signed.
    pub signed: Signed,
}

impl Crl {
    /// Parses a CRL given as DER, PEM or hex text.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > 4 * 1024 * 1024 {
            return Err("CRL larger than 4 MiB".into());
        }
        let der = normalise_crl(bytes);
        let (_, c) = parse_x509_crl(&der).map_err(|e| format!("not a CRL: {e}"))?;
        let next_update = c.next_update().ok_or("CRL has no nextUpdate")?.timestamp();
        Ok(Crl {
            issuer_raw: c.issuer().as_raw().to_vec(),
            issuer_cn: cn(c.issuer()),
            this_update: c.last_update().timestamp(),
            next_update,
            revoked: c
                .iter_revoked_certificates()
                .map(|r| r.raw_serial().to_vec())
                .collect(),
            signed: Signed {
                tbs: c.tbs_cert_list.as_ref().to_vec(),
                alg: c.signature_algorithm.algorithm.as_bytes().to_vec(),
                signature: c.signature_value.data.to_vec(),
            },
            der: der.clone(),
        })
    }

    /// Checks the CRL's signature with `issuer`'s key.
    pub fn verify_by(&self, issuer: &Cert) -> bool {
        self.signed
            .verify_ecdsa(issuer)
            .unwrap_or_else(|| self.verify_signed_by(&issuer.spki))
    }

    /// Checks the CRL's signature against an issuer's SubjectPublicKeyInfo.
    pub fn verify_signed_by(&self, issuer_spki: &[u8]) -> bool {
        let Ok((_, c)) = parse_x509_crl(&self.der) else {
            return false;
        };
        let Ok((_, spki)) = SubjectPublicKeyInfo::from_der(issuer_spki) else {
            return false;
        };
        c.verify_signature(&spki).is_ok()
    }

    /// True when the serial is listed.
    pub fn is_revoked(&self, serial: &[u8]) -> bool {
        let trim = |s: &[u8]| -> Vec<u8> {
            let n = s.iter().take_while(|&&b| b == 0).count();
            s[n.min(s.len().saturating_sub(1))..].to_vec()
        };
        let want = trim(serial);
        self.revoked.iter().any(|r| trim(r) == want)
    }
}

fn normalise_crl(bytes: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if trimmed.starts_with(b"-----BEGIN") {
        if let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(bytes) {
            return pem.contents;
        }
    }
    if !trimmed.is_empty() && trimmed.iter().all(u8::is_ascii_hexdigit) {
        if let Ok(d) = hex::decode(&trimmed) {
            return d;
        }
    }
    bytes.to_vec()
}

/// SHA-256 through ring.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Verifies a raw `r || s` ECDSA P-256 SHA-256 signature by a raw `x || y` or `04 || x || y` key.
pub fn verify_p256(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let key = if public_key.len() == 64 {
        let mut k = Vec::with_capacity(65);
        k.push(4);
        k.extend_from_slice(public_key);
        k
    } else {
        public_key.to_vec()
    };
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, key)
        .verify(message, signature)
        .is_ok()
}

/// Checks TLS handshake signatures (CertificateVerify) with ring's algorithms: what every
/// teeserve certificate verifier needs besides its own decision about the certificate.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeSignatures(rustls::crypto::WebPkiSupportedAlgorithms);

impl Default for HandshakeSignatures {
    fn default() -> Self {
        Self(rustls::crypto::ring::default_provider().signature_verification_algorithms)
    }
}

impl HandshakeSignatures {
    /// A TLS 1.2 handshake signature.
    pub fn tls12(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    /// A TLS 1.3 handshake signature.
    pub fn tls13(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    /// The schemes these checks support.
    pub fn schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}
