//! RA-TLS certificates through the public API, on the simulated platform: made in Gramine's
//! legacy and standard (TCG DICE) formats, parsed back, and verified; and the certificates an
//! attacker can make (a genuine quote under another key, an edited extension, no evidence)
//! refused with the error that names the reason.
mod common;

use common::{now, policy, policy_for, tee, MRENCLAVE};
use rcgen::{CertificateParams, CustomExtension, KeyPair, PublicKeyData};
use teeserve_attest::platform::Platform;
use teeserve_attest::verify::SignedObject;
use teeserve_attest::{Quote, VerifyError};
use teeserve_ratls::{
    key_report_data, parse_cert, report_data_over, EvidenceFormat, KeyType, RaTlsError,
    RaTlsIdentity, CBOR_TAG_TEE_QUOTE, LEGACY_OID_DER, TCG_OID_DER,
};

/// Gramine's legacy OID as rcgen arcs: the bytes 06 09 2A 86 48 86 F8 4D 8A 39 06 read as OID
/// content (Gramine `ra_tls.h`).
const LEGACY_ARCS: [u64; 8] = [0, 6, 9, 42, 840, 113741, 1337, 6];
/// TCG DICE tagged evidence, 2.23.133.5.4.9.
const TCG_ARCS: [u64; 6] = [2, 23, 133, 5, 4, 9];

/// The value and criticality of the extension with OID content `oid`, if present.
fn extension(cert: &[u8], oid: &[u8]) -> Option<(Vec<u8>, bool)> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).unwrap();
    c.extensions()
        .iter()
        .find(|e| e.oid.as_bytes() == oid)
        .map(|e| (e.value.to_vec(), e.critical))
}

fn report_data_of(quote: &[u8]) -> [u8; 64] {
    *Quote::parse(quote).unwrap().body.report_data()
}

/// A self-signed certificate for `key` carrying the given extension values, as anyone can
/// build one without teeserve-ratls.
fn cert_with(key: &KeyPair, legacy: Option<Vec<u8>>, tcg: Option<Vec<u8>>) -> Vec<u8> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    if let Some(v) = tcg {
        p.custom_extensions
            .push(CustomExtension::from_oid_content(&TCG_ARCS, v));
    }
    if let Some(v) = legacy {
        p.custom_extensions
            .push(CustomExtension::from_oid_content(&LEGACY_ARCS, v));
    }
    p.self_signed(key).unwrap().der().to_vec()
}

/// Reads the standard extension's value the way its layout is written down (Gramine
/// `ra_tls_attest.c`, TCG DICE Attestation Architecture): tag 60000, then an array of two byte
/// strings, the quote and the claims; quotes take a 2-byte length, the claims a 1-byte one.
fn split_tcg_value(v: &[u8]) -> (&[u8], &[u8]) {
    assert_eq!(&v[..3], &[0xd9, 0xea, 0x60], "CBOR tag 60000");
    assert_eq!(v[3], 0x82, "array of two");
    assert_eq!(v[4], 0x59, "byte string, 2-byte length");
    let qlen = u16::from_be_bytes([v[5], v[6]]) as usize;
    let (quote, rest) = v[7..].split_at(qlen);
    assert_eq!(rest[0], 0x58, "byte string, 1-byte length");
    let claims = &rest[2..];
    assert_eq!(claims.len(), rest[1] as usize);
    (quote, claims)
}

#[test]
fn legacy_certificates_bind_their_key_and_verify() {
    let t = tee();
    for key_type in [KeyType::P256, KeyType::P384] {
        let id = RaTlsIdentity::generate(&t.platform, EvidenceFormat::Legacy, key_type).unwrap();
        assert!(extension(&id.cert_der, &TCG_OID_DER).is_none());
        let (value, critical) = extension(&id.cert_der, &LEGACY_OID_DER).unwrap();
        assert!(
            !critical,
            "Gramine's verifier accepts only non-critical extensions"
        );

        let ev = parse_cert(&id.cert_der).unwrap();
        assert_eq!(ev.format, EvidenceFormat::Legacy);
        assert!(ev.binding_ok, "{:?}", ev.binding_error);
        assert_eq!(ev.quote, value, "the value is the raw quote");
        assert_eq!(ev.spki, id.spki);
        // The report data is SHA-256(SubjectPublicKeyInfo) followed by 32 zero bytes.
        let rd = report_data_of(&ev.quote);
        assert_eq!(rd, key_report_data(&id.spki));
        assert_eq!(
            &rd[..32],
            ring::digest::digest(&ring::digest::SHA256, &id.spki).as_ref()
        );
        assert_eq!(rd[32..], [0u8; 32]);

        let v = t.appraiser.verify_cert(&id.cert_der, now()).unwrap();
        assert_eq!(v.sgx.as_ref().unwrap().mrenclave, hex::encode(MRENCLAVE));
        assert_eq!(v.report_data, hex::encode(rd));
        t.appraiser.admit(&id.cert_der, &policy(), now()).unwrap();
    }
}

#[test]
fn standard_certificates_bind_claims_that_name_the_key() {
    let t = tee();
    for key_type in [KeyType::P256, KeyType::P384] {
        let id = RaTlsIdentity::generate(&t.platform, EvidenceFormat::Standard, key_type).unwrap();
        assert!(extension(&id.cert_der, &LEGACY_OID_DER).is_none());
        let (value, critical) = extension(&id.cert_der, &TCG_OID_DER).unwrap();
        assert!(!critical);
        let (quote, claims) = split_tcg_value(&value);
        assert_eq!(
            u64::from(u16::from_be_bytes([0xea, 0x60])),
            CBOR_TAG_TEE_QUOTE
        );
        // claims = {"pubkey-hash": bstr([1, bstr(SHA-256(SPKI))])}
        let mut want = vec![0xa1, 0x6b];
        want.extend_from_slice(b"pubkey-hash");
        want.extend_from_slice(&[0x58, 0x24, 0x82, 0x01, 0x58, 0x20]);
        want.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, &id.spki).as_ref());
        assert_eq!(claims, &want[..]);
        // The quote binds the claims, not the key directly.
        assert_eq!(report_data_of(quote), report_data_over(claims));
        assert_ne!(report_data_of(quote), key_report_data(&id.spki));

        let ev = parse_cert(&id.cert_der).unwrap();
        assert_eq!(ev.format, EvidenceFormat::Standard);
        assert!(ev.binding_ok, "{:?}", ev.binding_error);
        assert_eq!(ev.quote, quote);
        t.appraiser.admit(&id.cert_der, &policy(), now()).unwrap();
    }
}

#[test]
fn with_both_extensions_the_standard_one_is_used() {
    let t = tee();
    let id = RaTlsIdentity::generate(&t.platform, EvidenceFormat::Both, KeyType::P384).unwrap();
    let (legacy, _) = extension(&id.cert_der, &LEGACY_OID_DER).unwrap();
    let (tcg, _) = extension(&id.cert_der, &TCG_OID_DER).unwrap();
    let ev = parse_cert(&id.cert_der).unwrap();
    assert_eq!(ev.format, EvidenceFormat::Standard);
    assert_eq!(ev.quote, split_tcg_value(&tcg).0);
    // Two quotes, each over its own report data.
    assert_ne!(legacy, ev.quote);
    assert_eq!(report_data_of(&legacy), key_report_data(&id.spki));
    t.appraiser.admit(&id.cert_der, &policy(), now()).unwrap();
}

#[test]
fn a_genuine_quote_under_another_key_is_refused() {
    let t = tee();
    let genuine =
        RaTlsIdentity::generate(&t.platform, EvidenceFormat::Both, KeyType::P256).unwrap();
    let (legacy, _) = extension(&genuine.cert_der, &LEGACY_OID_DER).unwrap();
    let (tcg, _) = extension(&genuine.cert_der, &TCG_OID_DER).unwrap();
    let thief = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    for (name, cert, reason) in [
        (
            "legacy",
            cert_with(&thief, Some(legacy), None),
            "not SHA-256 of the certificate's public key",
        ),
        (
            "standard",
            cert_with(&thief, None, Some(tcg)),
            "pubkey-hash is not the hash of the certificate's public key",
        ),
    ] {
        let ev = parse_cert(&cert).unwrap();
        assert!(!ev.binding_ok, "{name}");
        assert!(
            ev.binding_error.as_deref().unwrap().contains(reason),
            "{name}: {:?}",
            ev.binding_error
        );
        match t.appraiser.verify_cert(&cert, now()) {
            Err(RaTlsError::Binding(e)) => assert!(e.contains(reason), "{name}: {e}"),
            other => panic!("{name}: expected a binding error, got {other:?}"),
        }
    }
}

#[test]
fn an_edited_extension_is_refused() {
    let t = tee();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let spki = key.subject_public_key_info();
    let quote = t.platform.quote(&key_report_data(&spki)).unwrap();
    // The genuine certificate for this key verifies ...
    let good = cert_with(&key, Some(quote.clone()), None);
    t.appraiser.verify_cert(&good, now()).unwrap();
    // ... one with a byte of the quote's MRENCLAVE changed does not: the enclave report's
    // signature no longer holds (the binding still does: report data is untouched).
    let mut edited = quote.clone();
    edited[48 + 64] ^= 1;
    let cert = cert_with(&key, Some(edited), None);
    assert!(parse_cert(&cert).unwrap().binding_ok);
    assert!(matches!(
        t.appraiser.verify_cert(&cert, now()),
        Err(RaTlsError::Verify(VerifyError::Signature(
            SignedObject::IsvReport
        )))
    ));
    // A changed report data byte breaks the binding first.
    let mut edited = quote.clone();
    edited[48 + 320] ^= 1;
    let cert = cert_with(&key, Some(edited), None);
    assert!(matches!(
        t.appraiser.verify_cert(&cert, now()),
        Err(RaTlsError::Binding(_))
    ));
    // Standard format: claims edited after quoting no longer match the report data.
    let genuine =
        RaTlsIdentity::generate(&t.platform, EvidenceFormat::Standard, KeyType::P256).unwrap();
    let (mut tcg, _) = extension(&genuine.cert_der, &TCG_OID_DER).unwrap();
    let last = tcg.len() - 1;
    tcg[last] ^= 1;
    let key = KeyPair::try_from(genuine.key_pkcs8.as_slice()).unwrap();
    let cert = cert_with(&key, None, Some(tcg.clone()));
    match t.appraiser.verify_cert(&cert, now()) {
        Err(RaTlsError::Binding(e)) => assert!(e.contains("SHA-256 of the claims"), "{e}"),
        other => panic!("expected a binding error, got {other:?}"),
    }
    // A value that is not the tagged evidence at all, or cut short, is a malformed certificate.
    for bad in [&tcg[1..], &tcg[..tcg.len() - 10]] {
        let cert = cert_with(&key, None, Some(bad.to_vec()));
        assert!(matches!(parse_cert(&cert), Err(RaTlsError::Certificate(_))));
        assert!(matches!(
            t.appraiser.verify_cert(&cert, now()),
            Err(RaTlsError::Certificate(_))
        ));
    }
}

#[test]
fn a_certificate_without_evidence_is_refused() {
    let t = tee();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = cert_with(&key, None, None);
    match parse_cert(&cert) {
        Err(RaTlsError::Certificate(e)) => assert!(e.contains("no evidence extension"), "{e}"),
        other => panic!("expected a certificate error, got {other:?}"),
    }
    assert!(matches!(
        t.appraiser.verify_cert(&cert, now()),
        Err(RaTlsError::Certificate(_))
    ));
    assert!(matches!(
        parse_cert(b"not a certificate"),
        Err(RaTlsError::Certificate(_))
    ));
}

#[test]
fn evidence_is_refused_by_another_root_or_another_policy() {
    let t = tee();
    let id = RaTlsIdentity::generate(&t.platform, EvidenceFormat::Both, KeyType::P256).unwrap();
    // Another simulated platform's root does not vouch for this one's quotes.
    let other = tee();
    assert!(matches!(
        other.appraiser.verify_cert(&id.cert_der, now()),
        Err(RaTlsError::Verify(VerifyError::UntrustedRoot { .. }))
    ));
    // A policy for another enclave refuses, naming the rule.
    match t.appraiser.admit(&id.cert_der, &policy_for([0; 32]), now()) {
        Err(RaTlsError::Policy(p)) => assert_eq!(p.rule, "mrenclave"),
        other => panic!("expected a policy refusal, got {other:?}"),
    }
    // Simulated evidence is refused unless the policy says otherwise.
    let mut strict = policy();
    strict.allow_simulated = false;
    assert!(matches!(
        t.appraiser.admit(&id.cert_der, &strict, now()),
        Err(RaTlsError::Policy(_))
    ));
}

/// Certificates of every evidence format and key type parse back with their evidence; with
/// `TEESERVE_FUZZ_SEEDS=DIR` they are also written there, as seeds for the `ratls_cert` fuzz
/// target (a fuzzer that starts from valid certificates reaches the extension and CBOR
/// parsers, which random bytes seldom do).
#[test]
fn every_format_parses_and_seeds_the_fuzzer() {
    let t = tee();
    let seeds = std::env::var_os("TEESERVE_FUZZ_SEEDS").map(std::path::PathBuf::from);
    for format in [
        EvidenceFormat::Legacy,
        EvidenceFormat::Standard,
        EvidenceFormat::Both,
    ] {
        for key_type in [KeyType::P256, KeyType::P384] {
            let id = RaTlsIdentity::generate(&t.platform, format, key_type).unwrap();
            let parsed = parse_cert(&id.cert_der).unwrap();
            assert_eq!(parsed.spki, id.spki, "{format:?} {key_type:?}");
            assert!(parsed.binding_ok, "{format:?} {key_type:?}");
            if let Some(dir) = &seeds {
                std::fs::create_dir_all(dir).unwrap();
                let name = format!("{format:?}-{key_type:?}.der").to_lowercase();
                std::fs::write(dir.join(name), &id.cert_der).unwrap();
            }
        }
    }
}
