//! Making and parsing RA-TLS certificates.

use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, KeyPair, PublicKeyData,
};
use teeserve_attest::platform::Platform;
use teeserve_attest::quote::Quote;
use x509_parser::prelude::*;
use zeroize::Zeroizing;

use crate::binding::{claims_for, key_report_data, report_data_over, sha256};
use crate::cbor::{self, Item};
use crate::RaTlsError;

/// The legacy extension's OID as it appears on the wire: Gramine passes the bytes
/// `06 09 2A 86 48 86 F8 4D 8A 39 06` as OID *content*, so a DER parser reads the OID
/// 0.6.9.42.840.113741.1337.6 (Gramine `ra_tls.h`, NON_STANDARD_INTEL_SGX_QUOTE_OID).
pub const LEGACY_OID_DER: [u8; 11] = [
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x8a, 0x39, 0x06,
];
const LEGACY_OID_ARCS: [u64; 8] = [0, 6, 9, 42, 840, 113741, 1337, 6];
/// Content octets of OID 2.23.133.5.4.9 (TCG DICE tagged evidence).
pub const TCG_OID_DER: [u8; 6] = [0x67, 0x81, 0x05, 0x05, 0x04, 0x09];
const TCG_OID_ARCS: [u64; 6] = [2, 23, 133, 5, 4, 9];
/// CBOR tag of TEE-quote tagged evidence (`TCG_DICE_TAGGED_EVIDENCE_TEE_QUOTE_CBOR_TAG`).
pub const CBOR_TAG_TEE_QUOTE: u64 = 60000;
/// Gramine's `SGX_QUOTE_MAX_SIZE`: its verifier refuses larger extension values.
pub const MAX_EVIDENCE: usize = 8192 * 2 + 256;

/// Which evidence extension(s) a certificate carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceFormat {
    /// Gramine's legacy raw-quote extension (all Gramine versions).
    Legacy,
    /// The TCG DICE tagged-evidence extension (Gramine 1.8+).
    Standard,
    /// Both, as Gramine 1.8+ makes them.
    Both,
}

/// The certificate key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA P-256.
    P256,
    /// ECDSA P-384 (what Gramine 1.4+ makes).
    P384,
}

/// A fresh key and its RA-TLS certificate.
pub struct RaTlsIdentity {
    /// The certificate (DER).
    pub cert_der: Vec<u8>,
    /// The private key (PKCS#8 DER), zeroized on drop.
    pub key_pkcs8: Zeroizing<Vec<u8>>,
    /// DER SubjectPublicKeyInfo of the key.
    pub spki: Vec<u8>,
}

impl std::fmt::Debug for RaTlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RaTlsIdentity({} byte certificate)", self.cert_der.len())
    }
}

impl RaTlsIdentity {
    /// Makes a fresh key and a self-signed certificate whose evidence (from `platform`) binds it.
    pub fn generate(
        platform: &dyn Platform,
        format: EvidenceFormat,
        key_type: KeyType,
    ) -> Result<Self, RaTlsError> {
        Self::generate_with_validity(platform, format, key_type, 30 * 86_400)
    }

    /// As [`RaTlsIdentity::generate`], valid from an hour ago for `valid_secs`.
    pub fn generate_with_validity(
        platform: &dyn Platform,
        format: EvidenceFormat,
        key_type: KeyType,
        valid_secs: i64,
    ) -> Result<Self, RaTlsError> {
        let gen = |e: rcgen::Error| RaTlsError::Generate(e.to_string());
        let alg = match key_type {
            KeyType::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        };
        let key = KeyPair::generate_for(alg).map_err(gen)?;
        let spki = key.subject_public_key_info();
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "RATLS");
        dn.push(DnType::OrganizationName, "teeserve");
        params.distinguished_name = dn;
        let now = ::time::OffsetDateTime::now_utc();
        params.not_before = now - ::time::Duration::hours(1);
        params.not_after = now + ::time::Duration::seconds(valid_secs);
        if matches!(format, EvidenceFormat::Standard | EvidenceFormat::Both) {
            let claims = claims_for(&spki);
            let quote = platform.quote(&report_data_over(&claims))?;
            let mut v = Vec::new();
            cbor::tag(CBOR_TAG_TEE_QUOTE, &mut v);
            cbor::array(2, &mut v);
            cbor::bstr(&quote, &mut v);
            cbor::bstr(&claims, &mut v);
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(&TCG_OID_ARCS, v));
        }
        if matches!(format, EvidenceFormat::Legacy | EvidenceFormat::Both) {
            let quote = platform.quote(&key_report_data(&spki))?;
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(&LEGACY_OID_ARCS, quote));
        }
        let cert = params.self_signed(&key).map_err(gen)?;
        Ok(Self {
            cert_der: cert.der().to_vec(),
            key_pkcs8: Zeroizing::new(key.serialize_der()),
            spki,
        })
    }
}

/// The evidence found in an RA-TLS certificate.
#[derive(Debug, Clone)]
pub struct RaTlsEvidence {
    /// Which extension it came from (TCG DICE is used exclusively when present, as Gramine does).
    pub format: EvidenceFormat,
    /// The raw quote.
    pub quote: Vec<u8>,
    /// The certificate's SubjectPublicKeyInfo (DER).
    pub spki: Vec<u8>,
    /// True when the quote's report data binds the certificate's key.
    pub binding_ok: bool,
    /// Why the binding failed, when it did.
    pub binding_error: Option<String>,
}

/// Parses a certificate, extracts its evidence and checks the key binding (not the quote).
pub fn parse_cert(der: &[u8]) -> Result<RaTlsEvidence, RaTlsError> {
    let bad = |s: String| RaTlsError::Certificate(s);
    if der.len() > 64 * 1024 {
        return Err(bad(format!("{} bytes is too large", der.len())));
    }
    let (_, cert) =
        parse_x509_certificate(der).map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
    let spki = cert.public_key().raw.to_vec();
    let mut legacy = None;
    let mut tcg = None;
    for ext in cert.extensions() {
        let oid = ext.oid.as_bytes();
        if oid == TCG_OID_DER {
            tcg = Some(ext.value);
        } else if oid == &LEGACY_OID_DER[..] {
            legacy = Some(ext.value);
        }
        if (oid == TCG_OID_DER || oid == &LEGACY_OID_DER[..]) && ext.value.len() > MAX_EVIDENCE {
            return Err(bad(format!(
                "evidence extension of {} bytes is too large",
                ext.value.len()
            )));
        }
    }
    let quote_rd = |q: &[u8]| -> Result<[u8; 64], RaTlsError> {
        Quote::parse(q)
            .map(|p| *p.body.report_data())
            .map_err(|e| RaTlsError::Certificate(format!("the embedded quote does not parse: {e}")))
    };
    if let Some(v) = tcg {
        let (item, rest) = cbor::decode(v).map_err(|e| bad(format!("TCG evidence: {e}")))?;
        if !rest.is_empty() {
            return Err(bad("TCG evidence: trailing bytes".into()));
        }
        let (quote, claims) = match item {
            Item::Tag(CBOR_TAG_TEE_QUOTE, inner) => match *inner {
                Item::Array(a) if a.len() == 2 => match (&a[0], &a[1]) {
                    (Item::Bytes(q), Item::Bytes(c)) => (q.to_vec(), c.to_vec()),
                    _ => {
                        return Err(bad(
                            "TCG evidence: expected [bstr quote, bstr claims]".into()
                        ))
                    }
                },
                _ => return Err(bad("TCG evidence: expected a two-element array".into())),
            },
            _ => {
                return Err(bad(format!(
                    "TCG evidence: expected CBOR tag {CBOR_TAG_TEE_QUOTE}"
                )))
            }
        };
        let rd = quote_rd(&quote)?;
        let binding_error = check_claims(&claims, &spki, &rd);
        return Ok(RaTlsEvidence {
            format: EvidenceFormat::Standard,
            quote,
            spki,
            binding_ok: binding_error.is_none(),
            binding_error,
        });
    }
    let quote = legacy
        .ok_or_else(|| {
            bad(
                "no evidence extension (neither 2.23.133.5.4.9 nor Gramine's legacy quote OID)"
                    .into(),
            )
        })?
        .to_vec();
    let rd = quote_rd(&quote)?;
    let binding_error = (rd != key_report_data(&spki)).then(|| {
        "the quote's report data is not SHA-256 of the certificate's public key followed by zeros (the certificate was replayed with another key, or made for another key)".to_owned()
    });
    Ok(RaTlsEvidence {
        format: EvidenceFormat::Legacy,
        quote,
        spki,
        binding_ok: binding_error.is_none(),
        binding_error,
    })
}

fn check_claims(claims: &[u8], spki: &[u8], rd: &[u8; 64]) -> Option<String> {
    if *rd != report_data_over(claims) {
        return Some(
            "the quote's report data is not SHA-256 of the claims followed by zeros".into(),
        );
    }
    let Ok((Item::Map(entries), [])) = cbor::decode(claims) else {
        return Some("claims are not a CBOR map".into());
    };
    let entry = entries.iter().find_map(|(k, v)| match (k, v) {
        (Item::Text("pubkey-hash"), Item::Bytes(b)) => Some(*b),
        _ => None,
    });
    let Some(entry) = entry else {
        return Some("claims have no pubkey-hash".into());
    };
    let Ok((Item::Array(a), [])) = cbor::decode(entry) else {
        return Some("pubkey-hash is not [alg, hash]".into());
    };
    let (alg, hash) = match a.as_slice() {
        [Item::Uint(alg), Item::Bytes(h)] => (*alg, *h),
        _ => return Some("pubkey-hash is not [uint alg, bstr hash]".into()),
    };
    // IANA Named Information hash algorithm registry: 1 SHA-256, 7 SHA-384, 8 SHA-512.
    let want: Vec<u8> = match alg {
        1 => sha256(spki).to_vec(),
        7 => ring::digest::digest(&ring::digest::SHA384, spki)
            .as_ref()
            .to_vec(),
        8 => ring::digest::digest(&ring::digest::SHA512, spki)
            .as_ref()
            .to_vec(),
        _ => return Some(format!("pubkey-hash algorithm {alg} is not supported")),
    };
    if want != hash {
        return Some("pubkey-hash is not the hash of the certificate's public key (the certificate was replayed with another key)".into());
    }
    None
}
