//! Negative cases, each with its expected specific error: mutations of the real vectors, and
//! re-signed collateral from a test PKI shaped like Intel's (the simulated platform).
mod common;
use common::*;
use serde_json::Value;
use teeserve_attest::quote::QuoteError;
use teeserve_attest::sim::{self, SimOptions, SimPlatform};
use teeserve_attest::verify::SignedObject;
use teeserve_attest::{Collateral, Quote, TcbStatus, TrustAnchor, Verifier, VerifyError};

const SGX: &str = "sgx-v3-dcapqvl";
const SGX_AT: i64 = 1751000000;
const TDX: &str = "tdx-v4-dcapqvl";

fn verify_sgx(q: &[u8], c: &Collateral) -> Result<teeserve_attest::Verdict, VerifyError> {
    Verifier::default().verify(q, c, SGX_AT)
}

fn mutate(q: &[u8], off: usize) -> Vec<u8> {
    let mut m = q.to_vec();
    m[off] ^= 0x01;
    m
}

fn sig_err(r: Result<teeserve_attest::Verdict, VerifyError>) -> SignedObject {
    match r {
        Err(VerifyError::Signature(s)) => s,
        other => panic!("expected a signature error, got {other:?}"),
    }
}

// ---- quote structure ----

#[test]
fn truncation_at_every_structural_boundary_names_the_field() {
    let q = quote(SGX);
    let parsed = Quote::parse(&q).unwrap();
    let auth = parsed.qe_auth_data.len();
    let cases = [
        (0, "header.version"),
        (30, "header.user_data"),
        (48 + 100, "report body"),
        (432, "signature_data_len"),
        (436 + 10, "signature data"),
    ];
    for (len, field) in cases {
        match Quote::parse(&q[..len]) {
            Err(QuoteError::Truncated { field: f, .. }) => assert_eq!(f, field, "at {len}"),
            other => panic!("at {len}: {other:?}"),
        }
    }
    // Inside the signature data: shorten the declared length too, so each inner field is cut.
    let sig_start = 436;
    for (rel, field) in [
        (63, "signature data.isv_signature"),
        (64 + 63, "signature data.attestation_key"),
        (128 + 383, "qe_report"),
        (512 + 63, "qe_report_signature"),
        (576 + 1, "qe_auth_data size"),
        (578 + auth - 1, "qe_auth_data"),
        (578 + auth + 1, "certification data type"),
        (580 + auth + 3, "certification data size"),
        (584 + auth + 10, "certification data (PCK chain)"),
    ] {
        let mut m = q[..sig_start + rel].to_vec();
        m[432..436].copy_from_slice(&(rel as u32).to_le_bytes());
        match Quote::parse(&m) {
            Err(QuoteError::Truncated { field: f, .. }) => assert_eq!(f, field, "at +{rel}"),
            other => panic!("at +{rel}: {other:?}"),
        }
    }
}

#[test]
fn header_fields_are_checked() {
    let q = quote(SGX);
    let mut m = q.clone();
    m[0] = 2;
    assert!(matches!(Quote::parse(&m), Err(QuoteError::Version(2))));
    m[0] = 6;
    assert!(matches!(Quote::parse(&m), Err(QuoteError::Version(6))));
    let mut m = q.clone();
    m[2] = 3;
    assert!(matches!(Quote::parse(&m), Err(QuoteError::KeyType(3))));
    let mut m = q.clone();
    m[4] = 0x81;
    assert!(matches!(
        Quote::parse(&m),
        Err(QuoteError::TeeType {
            version: 3,
            tee_type: 0x81
        })
    ));
    let mut m = q.clone();
    m[12] ^= 0xff;
    assert!(matches!(Quote::parse(&m), Err(QuoteError::VendorId(_))));
    assert!(matches!(
        Quote::parse(&vec![0u8; 70_000]),
        Err(QuoteError::TooLarge(_))
    ));
}

#[test]
fn certification_data_types_are_checked() {
    let q = quote(SGX);
    let p = Quote::parse(&q).unwrap();
    let type_at = 436 + 578 + p.qe_auth_data.len();
    let mut m = q.clone();
    m[type_at] = 4;
    assert!(matches!(
        Quote::parse(&m),
        Err(QuoteError::CertDataType {
            got: 4,
            expected: 5,
            ..
        })
    ));
    // TDX v4: the outer certification data must be type 6.
    let t = quote(TDX);
    let mut m = t.clone();
    m[636 + 128] = 5;
    assert!(matches!(
        Quote::parse(&m),
        Err(QuoteError::CertDataType {
            got: 5,
            expected: 6,
            ..
        })
    ));
    // v5 body type.
    let v5 = quote("tdx-v5-dcapqvl");
    let mut m = v5.clone();
    m[48] = 9;
    assert!(matches!(
        Quote::parse(&m),
        Err(QuoteError::BodyType { body_type: 9, .. })
    ));
}

// ---- signatures over the quote ----

#[test]
fn every_quote_signature_and_signed_field_class_is_checked() {
    let q = quote(SGX);
    let c = collateral(SGX);
    assert_eq!(
        sig_err(verify_sgx(&mutate(&q, 436), &c)),
        SignedObject::IsvReport,
        "ISV signature"
    );
    assert_eq!(
        sig_err(verify_sgx(&mutate(&q, 48 + 64), &c)),
        SignedObject::IsvReport,
        "MRENCLAVE"
    );
    assert_eq!(
        sig_err(verify_sgx(&mutate(&q, 48 + 320), &c)),
        SignedObject::IsvReport,
        "report data"
    );
    assert_eq!(
        sig_err(verify_sgx(&mutate(&q, 30), &c)),
        SignedObject::IsvReport,
        "header user data"
    );
    assert_eq!(
        sig_err(verify_sgx(&mutate(&q, 436 + 128 + 128), &c)),
        SignedObject::QeReport,
        "QE MRSIGNER"
    );
    assert_eq!(
        sig_err(verify_sgx(&mutate(&q, 436 + 512), &c)),
        SignedObject::QeReport,
        "QE report signature"
    );
    assert!(
        matches!(
            verify_sgx(&mutate(&q, 436 + 64), &c),
            Err(VerifyError::QeReportData)
        ),
        "attestation key"
    );
    assert!(
        matches!(
            verify_sgx(&mutate(&q, 436 + 578), &c),
            Err(VerifyError::QeReportData)
        ),
        "QE auth data"
    );
    for (name, at) in [(TDX, 1751000000), ("tdx-v4-automata-padded", 1739419232)] {
        let t = quote(name);
        let r = Verifier::default().verify(&mutate(&t, 48 + 136), &collateral(name), at);
        assert_eq!(sig_err(r), SignedObject::IsvReport, "{name} MRTD");
    }
}

#[test]
fn a_tampered_pck_certificate_fails() {
    let q = quote(SGX);
    let p = Quote::parse(&q).unwrap();
    let pem = String::from_utf8(p.pck_chain_pem.clone()).unwrap();
    let cert_start = q
        .windows(5)
        .position(|w| w == b"MIIE8")
        .or_else(|| q.windows(4).position(|w| w == b"MIIE"))
        .unwrap();
    let _ = pem;
    // Change one base64 character deep in the leaf (its signature).
    let at = cert_start + 1500;
    let mut m = q.clone();
    m[at] = if m[at] == b'A' { b'B' } else { b'A' };
    match verify_sgx(&m, &collateral(SGX)) {
        Err(VerifyError::Signature(SignedObject::PckCert))
        | Err(VerifyError::Certificate { .. }) => {}
        other => panic!("{other:?}"),
    }
}

// ---- signed collateral ----

fn flip_hex(s: &[u8], i: usize) -> Vec<u8> {
    let mut v = s.to_vec();
    v[i] ^= 1;
    v
}

#[test]
fn every_collateral_signature_is_checked() {
    let q = quote(SGX);
    let base = collateral(SGX);
    let mut c = base.clone();
    c.tcb_info = c.tcb_info.replacen(
        "\"tcbEvaluationDataNumber\":17",
        "\"tcbEvaluationDataNumber\":18",
        1,
    );
    assert_ne!(c.tcb_info, base.tcb_info);
    assert_eq!(
        sig_err(verify_sgx(&q, &c)),
        SignedObject::TcbInfo,
        "tcb_info field"
    );
    let mut c = base.clone();
    c.tcb_info_signature = flip_hex(&c.tcb_info_signature, 10);
    assert_eq!(
        sig_err(verify_sgx(&q, &c)),
        SignedObject::TcbInfo,
        "tcb_info_signature"
    );
    let mut c = base.clone();
    c.qe_identity = c
        .qe_identity
        .replacen("\"isvprodid\":1", "\"isvprodid\":2", 1);
    assert_ne!(c.qe_identity, base.qe_identity);
    assert_eq!(
        sig_err(verify_sgx(&q, &c)),
        SignedObject::QeIdentity,
        "qe_identity field"
    );
    let mut c = base.clone();
    c.qe_identity_signature = flip_hex(&c.qe_identity_signature, 40);
    assert_eq!(
        sig_err(verify_sgx(&q, &c)),
        SignedObject::QeIdentity,
        "qe_identity_signature"
    );
    let mut c = base.clone();
    let n = c.root_ca_crl.len();
    c.root_ca_crl = flip_hex(&c.root_ca_crl, n - 5);
    assert_eq!(
        sig_err(verify_sgx(&q, &c)),
        SignedObject::RootCaCrl,
        "root_ca_crl"
    );
    let mut c = base.clone();
    let n = c.pck_crl.len();
    c.pck_crl = flip_hex(&c.pck_crl, n - 5);
    assert_eq!(sig_err(verify_sgx(&q, &c)), SignedObject::PckCrl, "pck_crl");
    // The TCB Info signed by the right key but presented with another chain.
    let mut c = base.clone();
    c.tcb_info_issuer_chain = c.pck_crl_issuer_chain.clone();
    assert_eq!(
        sig_err(verify_sgx(&q, &c)),
        SignedObject::TcbInfo,
        "wrong signer"
    );
}

#[test]
fn collateral_for_the_other_tee_is_refused() {
    let r = verify_sgx(&quote(SGX), &collateral(TDX));
    assert!(matches!(r, Err(VerifyError::TcbInfoMismatch(_))), "{r:?}");
    let r = Verifier::default().verify(&quote(TDX), &collateral(SGX), 1751000000);
    assert!(matches!(r, Err(VerifyError::TcbInfoMismatch(_))), "{r:?}");
}

#[test]
fn a_foreign_root_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    sim::init(&tmp.path().join("s"), &SimOptions::default()).unwrap();
    let other =
        TrustAnchor::from_pem(&std::fs::read(tmp.path().join("s/root.pem")).unwrap()).unwrap();
    let r = Verifier::new(other).verify(&quote(SGX), &collateral(SGX), SGX_AT);
    assert!(
        matches!(
            r,
            Err(VerifyError::UntrustedRoot {
                simulated: false,
                ..
            })
        ),
        "{r:?}"
    );
}

#[test]
fn malformed_bundles_name_the_problem() {
    assert!(matches!(
        Collateral::from_json(b"{}"),
        Err(teeserve_attest::collateral::CollateralError::Bundle(_))
    ));
    let mut c = collateral(SGX);
    c.tcb_info = "not json".into();
    let r = Verifier::default().verify(&quote(SGX), &c, SGX_AT);
    assert!(r.is_err());
}

// ---- re-signed collateral from the simulated (Intel-shaped) PKI ----

struct Pki {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    quote: Vec<u8>,
    coll: Collateral,
    verifier: Verifier,
    now: i64,
}

fn pki(o: SimOptions) -> Pki {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sim");
    let now = o.now;
    sim::init(&dir, &o).unwrap();
    let p = SimPlatform::open(&dir, [0x42; 32]).unwrap();
    let quote = p.quote(&[1u8; 64]).unwrap();
    let coll = Collateral::from_json(&std::fs::read(dir.join("collateral.json")).unwrap()).unwrap();
    let verifier = Verifier::new(
        TrustAnchor::from_pem(&std::fs::read(dir.join("root.pem")).unwrap()).unwrap(),
    );
    Pki {
        _tmp: tmp,
        dir,
        quote,
        coll,
        verifier,
        now,
    }
}

impl Pki {
    fn verify(&self, c: &Collateral) -> Result<teeserve_attest::Verdict, VerifyError> {
        self.verifier.verify(&self.quote, c, self.now)
    }

    fn with_tcb(&self, f: impl FnOnce(&mut Value)) -> Collateral {
        let mut v: Value = serde_json::from_str(&self.coll.tcb_info).unwrap();
        f(&mut v);
        let mut c = self.coll.clone();
        c.tcb_info = v.to_string();
        c.tcb_info_signature = sim::sign_json(&self.dir, &c.tcb_info).unwrap();
        c
    }

    fn with_qe(&self, f: impl FnOnce(&mut Value)) -> Collateral {
        let mut v: Value = serde_json::from_str(&self.coll.qe_identity).unwrap();
        f(&mut v);
        let mut c = self.coll.clone();
        c.qe_identity = v.to_string();
        c.qe_identity_signature = sim::sign_json(&self.dir, &c.qe_identity).unwrap();
        c
    }
}

#[test]
fn the_simulated_pki_verifies_untouched() {
    let p = pki(SimOptions::default());
    assert_eq!(p.verify(&p.coll).unwrap().tcb_status, TcbStatus::UpToDate);
}

#[test]
fn fmspc_and_pceid_mismatch() {
    let p = pki(SimOptions::default());
    let r = p.verify(&p.with_tcb(|v| v["fmspc"] = "00A067110000".into()));
    assert!(matches!(r, Err(VerifyError::FmspcMismatch { .. })), "{r:?}");
    let r = p.verify(&p.with_tcb(|v| v["pceId"] = "0100".into()));
    assert!(matches!(r, Err(VerifyError::PceIdMismatch { .. })), "{r:?}");
}

#[test]
fn qe_identity_mismatch_per_field() {
    let p = pki(SimOptions::default());
    for (field, key, value) in [
        ("MRSIGNER", "mrsigner", Value::from("00".repeat(32))),
        ("ISVPRODID", "isvprodid", Value::from(2)),
        ("MISCSELECT", "miscselect", Value::from("01000000")),
        (
            "ATTRIBUTES",
            "attributes",
            Value::from("13000000000000000000000000000000"),
        ),
        ("identity id", "id", Value::from("TD_QE")),
    ] {
        let r = p.verify(&p.with_qe(|v| v[key] = value));
        match r {
            Err(VerifyError::QeIdentityMismatch { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn duplicate_empty_and_unmatched_tcb_levels() {
    let p = pki(SimOptions::default());
    let r = p.verify(&p.with_tcb(|v| {
        let first = v["tcbLevels"][0].clone();
        v["tcbLevels"].as_array_mut().unwrap().push(first);
    }));
    assert!(
        matches!(&r, Err(VerifyError::Collateral(e)) if e.to_string().contains("duplicates")),
        "{r:?}"
    );
    let r = p.verify(&p.with_tcb(|v| v["tcbLevels"] = Value::Array(vec![])));
    assert!(
        matches!(&r, Err(VerifyError::Collateral(e)) if e.to_string().contains("is empty")),
        "{r:?}"
    );
    let r = p.verify(&p.with_tcb(|v| {
        for l in v["tcbLevels"].as_array_mut().unwrap() {
            l["tcb"]["pcesvn"] = 200.into();
        }
    }));
    assert!(matches!(r, Err(VerifyError::TcbNotSupported(_))), "{r:?}");
    let r = p.verify(&p.with_qe(|v| v["tcbLevels"][0]["tcb"]["isvsvn"] = 99.into()));
    assert!(matches!(r, Err(VerifyError::TcbNotSupported(_))), "{r:?}");
    let r = p.verify(&p.with_tcb(|v| v["version"] = 4.into()));
    assert!(matches!(r, Err(VerifyError::Collateral(_))), "{r:?}");
    let r = p.verify(&p.with_tcb(|v| v["id"] = "TDX".into()));
    assert!(r.is_err(), "{r:?}");
}

#[test]
fn statuses_converge_as_intel_qvl_does() {
    let p = pki(SimOptions::default());
    let r = p.verify(&p.with_tcb(|v| v["tcbLevels"][0]["tcbStatus"] = "Revoked".into()));
    assert!(matches!(r, Err(VerifyError::TcbRevoked(_))), "{r:?}");
    // QE OutOfDate with a platform that needs configuration: Intel gives
    // OutOfDateConfigurationNeeded (dcap-qvl's max-severity rule would give OutOfDate).
    let c = p.with_tcb(|v| v["tcbLevels"][0]["tcbStatus"] = "ConfigurationNeeded".into());
    let mut q: Value = serde_json::from_str(&c.qe_identity).unwrap();
    q["tcbLevels"][0]["tcbStatus"] = "OutOfDate".into();
    let mut c = c;
    c.qe_identity = q.to_string();
    c.qe_identity_signature = sim::sign_json(&p.dir, &c.qe_identity).unwrap();
    assert_eq!(
        p.verify(&c).unwrap().tcb_status,
        TcbStatus::OutOfDateConfigurationNeeded
    );
    let c = p.with_qe(|v| v["tcbLevels"][0]["tcbStatus"] = "OutOfDate".into());
    let v = p.verify(&c).unwrap();
    assert_eq!(
        (v.tcb_status, v.qe_tcb_status),
        (TcbStatus::OutOfDate, TcbStatus::OutOfDate)
    );
    let c = p.with_qe(|v| v["tcbLevels"][0]["tcbStatus"] = "Revoked".into());
    assert!(matches!(p.verify(&c), Err(VerifyError::TcbRevoked(_))));
}

#[test]
fn expired_and_not_yet_valid_tcb_info() {
    let p = pki(SimOptions::default());
    let r = p.verify(&p.with_tcb(|v| v["nextUpdate"] = "2020-01-01T00:00:00Z".into()));
    assert!(
        matches!(&r, Err(VerifyError::Expired { item, field: "nextUpdate", .. }) if item == "tcb_info"),
        "{r:?}"
    );
    let r = p.verify(&p.with_tcb(|v| v["issueDate"] = "2099-01-01T00:00:00Z".into()));
    assert!(
        matches!(&r, Err(VerifyError::NotYetValid { item, field: "issueDate", .. }) if item == "tcb_info"),
        "{r:?}"
    );
    let r = p.verify(&p.with_qe(|v| v["nextUpdate"] = "2020-01-01T00:00:00Z".into()));
    assert!(
        matches!(&r, Err(VerifyError::Expired { item, .. }) if item == "qe_identity"),
        "{r:?}"
    );
}

#[test]
fn revocation_and_crl_issuers() {
    let p = pki(SimOptions::default());
    let (t, n) = (p.now - 3600, p.now + 86400);
    let mut c = p.coll.clone();
    c.pck_crl = sim::make_crl(&p.dir, false, &[4], t, n).unwrap();
    assert!(matches!(
        p.verify(&c),
        Err(VerifyError::Revoked {
            item: "PCK certificate",
            ..
        })
    ));
    let mut c = p.coll.clone();
    c.root_ca_crl = sim::make_crl(&p.dir, true, &[2], t, n).unwrap();
    assert!(matches!(
        p.verify(&c),
        Err(VerifyError::Revoked {
            item: "PCK intermediate CA certificate",
            ..
        })
    ));
    // A PCK CRL signed by the root instead of the PCK CA.
    let mut c = p.coll.clone();
    c.pck_crl = sim::make_crl(&p.dir, true, &[], t, n).unwrap();
    assert!(
        matches!(
            p.verify(&c),
            Err(VerifyError::CrlIssuer { crl: "pck_crl", .. })
        ),
        "{:?}",
        p.verify(&c)
    );
    // A root CRL signed by the PCK CA.
    let mut c = p.coll.clone();
    c.root_ca_crl = sim::make_crl(&p.dir, false, &[], t, n).unwrap();
    assert!(matches!(
        p.verify(&c),
        Err(VerifyError::CrlIssuer {
            crl: "root_ca_crl",
            ..
        })
    ));
    // An expired PCK CRL.
    let mut c = p.coll.clone();
    c.pck_crl = sim::make_crl(&p.dir, false, &[], t - 86400 * 40, t - 86400).unwrap();
    assert!(
        matches!(p.verify(&c), Err(VerifyError::Expired { ref item, .. }) if item == "pck_crl")
    );
}
