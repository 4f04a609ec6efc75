//! Negative cases, one test each, with the specific error expected: mutations of the real
//! vectors, and re-signed collateral from a test PKI shaped like Intel's (the simulated platform).
mod common;
use std::path::Path;

use common::*;
use serde_json::Value;
use teeserve_attest::quote::QuoteError;
use teeserve_attest::sim::{self, SimOptions, SimPlatform};
use teeserve_attest::verify::SignedObject;
use teeserve_attest::{Collateral, Quote, TcbStatus, TrustAnchor, Verdict, Verifier, VerifyError};

const SGX: &str = "sgx-v3-dcapqvl";
const SGX_AT: i64 = 1751000000;
const TDX: &str = "tdx-v4-dcapqvl";

fn verify_sgx(q: &[u8], c: &Collateral) -> Result<Verdict, VerifyError> {
    Verifier::default().verify(q, c, SGX_AT)
}

fn flip(q: &[u8], off: usize) -> Vec<u8> {
    let mut m = q.to_vec();
    m[off] ^= 0x01;
    m
}

// ---- quote structure: truncation at every structural boundary ----

fn truncated_field(q: &[u8]) -> &'static str {
    match Quote::parse(q) {
        Err(QuoteError::Truncated { field, .. }) => field,
        other => panic!("expected truncation, got {other:?}"),
    }
}

fn head(vectors: &Path, n: usize) -> Vec<u8> {
    quote(vectors, SGX)[..n].to_vec()
}

/// Cuts the signature data at `rel` and fixes its declared length, so an inner field is cut.
fn cut_sig_data(vectors: &Path, rel: usize) -> Vec<u8> {
    let q = quote(vectors, SGX);
    let mut m = q[..436 + rel].to_vec();
    m[432..436].copy_from_slice(&(rel as u32).to_le_bytes());
    m
}

macro_rules! truncation {
    ($name:ident, |$v:ident| $bytes:expr, $field:expr) => {
        #[test]
        fn $name() {
            let vectors = teeserve_testkit::require_vectors!();
            let $v: &Path = &vectors;
            assert_eq!(truncated_field(&$bytes), $field);
        }
    };
}

truncation!(truncated_empty, |v| head(v, 0), "header.version");
truncation!(truncated_in_header, |v| head(v, 30), "header.user_data");
truncation!(truncated_in_report_body, |v| head(v, 148), "report body");
truncation!(
    truncated_before_signature_length,
    |v| head(v, 432),
    "signature_data_len"
);
truncation!(truncated_signature_data, |v| head(v, 446), "signature data");
truncation!(
    truncated_isv_signature,
    |v| cut_sig_data(v, 63),
    "signature data.isv_signature"
);
truncation!(
    truncated_attestation_key,
    |v| cut_sig_data(v, 127),
    "signature data.attestation_key"
);
truncation!(truncated_qe_report, |v| cut_sig_data(v, 511), "qe_report");
truncation!(
    truncated_qe_report_signature,
    |v| cut_sig_data(v, 575),
    "qe_report_signature"
);
truncation!(
    truncated_qe_auth_size,
    |v| cut_sig_data(v, 577),
    "qe_auth_data size"
);
truncation!(
    truncated_qe_auth_data,
    |v| cut_sig_data(v, 578 + 31),
    "qe_auth_data"
);
truncation!(
    truncated_cert_type,
    |v| cut_sig_data(v, 578 + 32 + 1),
    "certification data type"
);
truncation!(
    truncated_cert_size,
    |v| cut_sig_data(v, 580 + 32 + 3),
    "certification data size"
);
truncation!(
    truncated_cert_data,
    |v| cut_sig_data(v, 584 + 32 + 10),
    "certification data (PCK chain)"
);

// ---- quote header and envelopes ----

fn header_byte(vectors: &Path, off: usize, v: u8) -> Result<Quote, QuoteError> {
    let mut m = quote(vectors, SGX);
    m[off] = v;
    Quote::parse(&m)
}

#[test]
fn version_2() {
    let vectors = teeserve_testkit::require_vectors!();
    assert!(matches!(
        header_byte(&vectors, 0, 2),
        Err(QuoteError::Version(2))
    ));
}

#[test]
fn version_6() {
    let vectors = teeserve_testkit::require_vectors!();
    assert!(matches!(
        header_byte(&vectors, 0, 6),
        Err(QuoteError::Version(6))
    ));
}

#[test]
fn key_type_p384() {
    let vectors = teeserve_testkit::require_vectors!();
    assert!(matches!(
        header_byte(&vectors, 2, 3),
        Err(QuoteError::KeyType(3))
    ));
}

#[test]
fn tdx_tee_type_in_a_v3_quote() {
    let vectors = teeserve_testkit::require_vectors!();
    assert!(matches!(
        header_byte(&vectors, 4, 0x81),
        Err(QuoteError::TeeType {
            version: 3,
            tee_type: 0x81
        })
    ));
}

#[test]
fn foreign_qe_vendor_id() {
    let vectors = teeserve_testkit::require_vectors!();
    assert!(matches!(
        header_byte(&vectors, 12, 0),
        Err(QuoteError::VendorId(_))
    ));
}

#[test]
fn oversized_quote() {
    assert!(matches!(
        Quote::parse(&vec![0u8; 70_000]),
        Err(QuoteError::TooLarge(_))
    ));
}

#[test]
fn certification_data_type_4() {
    let vectors = teeserve_testkit::require_vectors!();
    let q = quote(&vectors, SGX);
    let at = 436 + 578 + Quote::parse(&q).unwrap().qe_auth_data.len();
    let mut m = q.clone();
    m[at] = 4;
    assert!(matches!(
        Quote::parse(&m),
        Err(QuoteError::CertDataType {
            got: 4,
            expected: 5,
            ..
        })
    ));
}

#[test]
fn tdx_outer_certification_data_not_type_6() {
    let vectors = teeserve_testkit::require_vectors!();
    let mut m = quote(&vectors, TDX);
    m[636 + 128] = 5;
    assert!(matches!(
        Quote::parse(&m),
        Err(QuoteError::CertDataType {
            got: 5,
            expected: 6,
            ..
        })
    ));
}

#[test]
fn v5_unknown_body_type() {
    let vectors = teeserve_testkit::require_vectors!();
    let mut m = quote(&vectors, "tdx-v5-dcapqvl");
    m[48] = 9;
    assert!(matches!(
        Quote::parse(&m),
        Err(QuoteError::BodyType { body_type: 9, .. })
    ));
}

// ---- every quote signature and signed field class ----

macro_rules! quote_flip {
    ($name:ident, $off:expr, $pat:pat) => {
        #[test]
        fn $name() {
            let vectors = teeserve_testkit::require_vectors!();
            let r = verify_sgx(
                &flip(&quote(&vectors, SGX), $off),
                &collateral(&vectors, SGX),
            );
            assert!(matches!(r, $pat), "{r:?}");
        }
    };
}

quote_flip!(
    isv_signature_flipped,
    436,
    Err(VerifyError::Signature(SignedObject::IsvReport))
);
quote_flip!(
    mrenclave_flipped,
    48 + 64,
    Err(VerifyError::Signature(SignedObject::IsvReport))
);
quote_flip!(
    report_data_flipped,
    48 + 320,
    Err(VerifyError::Signature(SignedObject::IsvReport))
);
quote_flip!(
    header_user_data_flipped,
    30,
    Err(VerifyError::Signature(SignedObject::IsvReport))
);
quote_flip!(
    qe_report_mrsigner_flipped,
    436 + 128 + 128,
    Err(VerifyError::Signature(SignedObject::QeReport))
);
quote_flip!(
    qe_report_signature_flipped,
    436 + 512,
    Err(VerifyError::Signature(SignedObject::QeReport))
);
quote_flip!(
    attestation_key_flipped,
    436 + 64,
    Err(VerifyError::QeReportData)
);
quote_flip!(
    qe_auth_data_flipped,
    436 + 578,
    Err(VerifyError::QeReportData)
);

#[test]
fn tdx_mrtd_flipped() {
    let vectors = teeserve_testkit::require_vectors!();
    let r = Verifier::default().verify(
        &flip(&quote(&vectors, TDX), 48 + 136),
        &collateral(&vectors, TDX),
        1751000000,
    );
    assert!(
        matches!(r, Err(VerifyError::Signature(SignedObject::IsvReport))),
        "{r:?}"
    );
}

#[test]
fn pck_certificate_tampered() {
    let vectors = teeserve_testkit::require_vectors!();
    let q = quote(&vectors, SGX);
    let at = q.windows(4).position(|w| w == b"MIIE").unwrap() + 1500;
    let mut m = q.clone();
    m[at] = if m[at] == b'A' { b'B' } else { b'A' };
    let r = verify_sgx(&m, &collateral(&vectors, SGX));
    assert!(
        matches!(
            r,
            Err(VerifyError::Signature(SignedObject::PckCert))
                | Err(VerifyError::Certificate { .. })
        ),
        "{r:?}"
    );
}

// ---- every collateral signature ----

macro_rules! collateral_case {
    ($name:ident, |$c:ident| $edit:expr, $pat:pat) => {
        #[test]
        fn $name() {
            let vectors = teeserve_testkit::require_vectors!();
            let mut $c = collateral(&vectors, SGX);
            $edit;
            let r = verify_sgx(&quote(&vectors, SGX), &$c);
            assert!(matches!(r, $pat), "{r:?}");
        }
    };
}

collateral_case!(
    tcb_info_field_changed,
    |c| c.tcb_info = c.tcb_info.replacen(
        "\"tcbEvaluationDataNumber\":17",
        "\"tcbEvaluationDataNumber\":18",
        1
    ),
    Err(VerifyError::Signature(SignedObject::TcbInfo))
);
collateral_case!(
    tcb_info_signature_flipped,
    |c| c.tcb_info_signature[10] ^= 1,
    Err(VerifyError::Signature(SignedObject::TcbInfo))
);
collateral_case!(
    qe_identity_field_changed,
    |c| c.qe_identity = c
        .qe_identity
        .replacen("\"isvprodid\":1", "\"isvprodid\":2", 1),
    Err(VerifyError::Signature(SignedObject::QeIdentity))
);
collateral_case!(
    qe_identity_signature_flipped,
    |c| c.qe_identity_signature[40] ^= 1,
    Err(VerifyError::Signature(SignedObject::QeIdentity))
);
collateral_case!(
    root_ca_crl_signature_flipped,
    |c| {
        let n = c.root_ca_crl.len();
        c.root_ca_crl[n - 5] ^= 1
    },
    Err(VerifyError::Signature(SignedObject::RootCaCrl))
);
collateral_case!(
    pck_crl_signature_flipped,
    |c| {
        let n = c.pck_crl.len();
        c.pck_crl[n - 5] ^= 1
    },
    Err(VerifyError::Signature(SignedObject::PckCrl))
);
collateral_case!(
    tcb_info_presented_with_another_chain,
    |c| c.tcb_info_issuer_chain = c.pck_crl_issuer_chain.clone(),
    Err(VerifyError::Signature(SignedObject::TcbInfo))
);
collateral_case!(
    tcb_info_not_json,
    |c| c.tcb_info = "not json".into(),
    Err(VerifyError::Signature(SignedObject::TcbInfo))
);

#[test]
fn tdx_collateral_for_an_sgx_quote() {
    let vectors = teeserve_testkit::require_vectors!();
    let r = verify_sgx(&quote(&vectors, SGX), &collateral(&vectors, TDX));
    assert!(matches!(r, Err(VerifyError::TcbInfoMismatch(_))), "{r:?}");
}

#[test]
fn sgx_collateral_for_a_tdx_quote() {
    let vectors = teeserve_testkit::require_vectors!();
    let r = Verifier::default().verify(
        &quote(&vectors, TDX),
        &collateral(&vectors, SGX),
        1751000000,
    );
    assert!(matches!(r, Err(VerifyError::TcbInfoMismatch(_))), "{r:?}");
}

#[test]
fn a_foreign_root() {
    let vectors = teeserve_testkit::require_vectors!();
    let tmp = tempfile::tempdir().unwrap();
    sim::init(&tmp.path().join("s"), &SimOptions::default()).unwrap();
    let other =
        TrustAnchor::from_pem(&std::fs::read(tmp.path().join("s/root.pem")).unwrap()).unwrap();
    let r = Verifier::new(other).verify(&quote(&vectors, SGX), &collateral(&vectors, SGX), SGX_AT);
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
fn malformed_bundle() {
    assert!(matches!(
        Collateral::from_json(b"{}"),
        Err(teeserve_attest::collateral::CollateralError::Bundle(_))
    ));
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

fn pki() -> Pki {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sim");
    let o = SimOptions::default();
    let now = o.now;
    sim::init(&dir, &o).unwrap();
    let quote = SimPlatform::open(&dir, [0x42; 32])
        .unwrap()
        .quote(&[1u8; 64])
        .unwrap();
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
    fn verify(&self, c: &Collateral) -> Result<Verdict, VerifyError> {
        self.verifier.verify(&self.quote, c, self.now)
    }

    fn tcb(&self, f: impl FnOnce(&mut Value)) -> Collateral {
        let mut v: Value = serde_json::from_str(&self.coll.tcb_info).unwrap();
        f(&mut v);
        let mut c = self.coll.clone();
        c.tcb_info = v.to_string();
        c.tcb_info_signature = sim::sign_json(&self.dir, &c.tcb_info).unwrap();
        c
    }

    fn qe(&self, c: Collateral, f: impl FnOnce(&mut Value)) -> Collateral {
        let mut v: Value = serde_json::from_str(&c.qe_identity).unwrap();
        f(&mut v);
        let mut c = c;
        c.qe_identity = v.to_string();
        c.qe_identity_signature = sim::sign_json(&self.dir, &c.qe_identity).unwrap();
        c
    }

    fn crls(
        &self,
        pck: Option<(bool, &[u64], i64, i64)>,
        root: Option<(bool, &[u64])>,
    ) -> Collateral {
        let (t, n) = (self.now - 3600, self.now + 86400);
        let mut c = self.coll.clone();
        if let Some((by_root, revoked, from, to)) = pck {
            c.pck_crl = sim::make_crl(&self.dir, by_root, revoked, from, to).unwrap();
        }
        if let Some((by_root, revoked)) = root {
            c.root_ca_crl = sim::make_crl(&self.dir, by_root, revoked, t, n).unwrap();
        }
        c
    }
}

#[test]
fn simulated_pki_untouched_verifies() {
    let p = pki();
    assert_eq!(p.verify(&p.coll).unwrap().tcb_status, TcbStatus::UpToDate);
}

macro_rules! resigned {
    ($name:ident, |$p:ident| $coll:expr, $pat:pat) => {
        #[test]
        fn $name() {
            let $p = pki();
            let c = $coll;
            let r = $p.verify(&c);
            assert!(matches!(r, $pat), "{r:?}");
        }
    };
}

fn qe_field(field: &'static str) -> impl Fn(Result<Verdict, VerifyError>) {
    move |r| match r {
        Err(VerifyError::QeIdentityMismatch { field: f, .. }) => assert_eq!(f, field),
        other => panic!("{field}: {other:?}"),
    }
}

resigned!(
    fmspc_mismatch,
    |p| p.tcb(|v| v["fmspc"] = "00A067110000".into()),
    Err(VerifyError::FmspcMismatch { .. })
);
resigned!(
    pceid_mismatch,
    |p| p.tcb(|v| v["pceId"] = "0100".into()),
    Err(VerifyError::PceIdMismatch { .. })
);
resigned!(
    tcb_info_version_4,
    |p| p.tcb(|v| v["version"] = 4.into()),
    Err(VerifyError::Collateral(_))
);
resigned!(
    tcb_info_for_tdx,
    |p| p.tcb(|v| v["id"] = "TDX".into()),
    Err(VerifyError::Collateral(_)) | Err(VerifyError::TcbInfoMismatch(_))
);
resigned!(
    duplicate_tcb_levels,
    |p| p.tcb(|v| {
        let first = v["tcbLevels"][0].clone();
        v["tcbLevels"].as_array_mut().unwrap().push(first);
    }),
    Err(VerifyError::Collateral(_))
);
resigned!(
    empty_tcb_levels,
    |p| p.tcb(|v| v["tcbLevels"] = Value::Array(vec![])),
    Err(VerifyError::Collateral(_))
);
resigned!(
    no_matching_tcb_level,
    |p| p.tcb(|v| {
        for l in v["tcbLevels"].as_array_mut().unwrap() {
            l["tcb"]["pcesvn"] = 200.into();
        }
    }),
    Err(VerifyError::TcbNotSupported(_))
);
resigned!(
    platform_level_revoked,
    |p| p.tcb(|v| v["tcbLevels"][0]["tcbStatus"] = "Revoked".into()),
    Err(VerifyError::TcbRevoked(_))
);
resigned!(
    qe_level_revoked,
    |p| p.qe(p.coll.clone(), |v| v["tcbLevels"][0]["tcbStatus"] =
        "Revoked".into()),
    Err(VerifyError::TcbRevoked(_))
);
resigned!(
    qe_below_every_level,
    |p| p.qe(p.coll.clone(), |v| v["tcbLevels"][0]["tcb"]["isvsvn"] =
        99.into()),
    Err(VerifyError::TcbNotSupported(_))
);
resigned!(
    tcb_info_expired,
    |p| p.tcb(|v| v["nextUpdate"] = "2020-01-01T00:00:00Z".into()),
    Err(VerifyError::Expired {
        field: "nextUpdate",
        ..
    })
);
resigned!(
    tcb_info_not_yet_valid,
    |p| p.tcb(|v| v["issueDate"] = "2099-01-01T00:00:00Z".into()),
    Err(VerifyError::NotYetValid {
        field: "issueDate",
        ..
    })
);
resigned!(
    qe_identity_expired,
    |p| p.qe(p.coll.clone(), |v| v["nextUpdate"] =
        "2020-01-01T00:00:00Z".into()),
    Err(VerifyError::Expired { .. })
);
resigned!(
    revoked_pck,
    |p| p.crls(Some((false, &[4], p.now - 3600, p.now + 86400)), None),
    Err(VerifyError::Revoked {
        item: "PCK certificate",
        ..
    })
);
resigned!(
    revoked_intermediate,
    |p| p.crls(None, Some((true, &[2]))),
    Err(VerifyError::Revoked {
        item: "PCK intermediate CA certificate",
        ..
    })
);
resigned!(
    pck_crl_from_the_root,
    |p| p.crls(Some((true, &[], p.now - 3600, p.now + 86400)), None),
    Err(VerifyError::CrlIssuer { crl: "pck_crl", .. })
);
resigned!(
    root_crl_from_the_pck_ca,
    |p| p.crls(None, Some((false, &[]))),
    Err(VerifyError::CrlIssuer {
        crl: "root_ca_crl",
        ..
    })
);
resigned!(
    pck_crl_expired,
    |p| p.crls(Some((false, &[], p.now - 86400 * 40, p.now - 86400)), None),
    Err(VerifyError::Expired { .. })
);

macro_rules! qe_mismatch {
    ($name:ident, $key:expr, $value:expr, $field:expr) => {
        #[test]
        fn $name() {
            let p = pki();
            let c = p.qe(p.coll.clone(), |v| v[$key] = $value);
            qe_field($field)(p.verify(&c));
        }
    };
}

qe_mismatch!(
    qe_mrsigner_mismatch,
    "mrsigner",
    Value::from("00".repeat(32)),
    "MRSIGNER"
);
qe_mismatch!(
    qe_isvprodid_mismatch,
    "isvprodid",
    Value::from(2),
    "ISVPRODID"
);
qe_mismatch!(
    qe_miscselect_mismatch,
    "miscselect",
    Value::from("01000000"),
    "MISCSELECT"
);
qe_mismatch!(
    qe_attributes_mismatch,
    "attributes",
    Value::from("13000000000000000000000000000000"),
    "ATTRIBUTES"
);
qe_mismatch!(
    qe_identity_for_td_qe,
    "id",
    Value::from("TD_QE"),
    "identity id"
);

// ---- status convergence, as Intel's QVL does it ----

#[test]
fn qe_out_of_date_with_configuration_needed_converges_to_out_of_date_configuration_needed() {
    // dcap-qvl's max-severity rule would give OutOfDate here.
    let p = pki();
    let c = p.tcb(|v| v["tcbLevels"][0]["tcbStatus"] = "ConfigurationNeeded".into());
    let c = p.qe(c, |v| v["tcbLevels"][0]["tcbStatus"] = "OutOfDate".into());
    assert_eq!(
        p.verify(&c).unwrap().tcb_status,
        TcbStatus::OutOfDateConfigurationNeeded
    );
}

#[test]
fn qe_out_of_date_with_an_up_to_date_platform_is_out_of_date() {
    let p = pki();
    let c = p.qe(p.coll.clone(), |v| {
        v["tcbLevels"][0]["tcbStatus"] = "OutOfDate".into()
    });
    let v = p.verify(&c).unwrap();
    assert_eq!(
        (v.tcb_status, v.qe_tcb_status),
        (TcbStatus::OutOfDate, TcbStatus::OutOfDate)
    );
}
