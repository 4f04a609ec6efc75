//! Real quotes from Intel hardware with Intel-signed collateral (shared/vectors/dcap).
mod common;
use std::path::Path;

use common::*;
use teeserve_attest::{Policy, Quote, TcbStatus, Verifier, VerifyError};

fn verify(vectors: &Path, name: &str, at: i64) -> Result<teeserve_attest::Verdict, VerifyError> {
    Verifier::default().verify(&quote(vectors, name), &collateral(vectors, name), at)
}

#[test]
fn sgx_v3_dcapqvl() {
    let vectors = teeserve_testkit::require_vectors!();
    let v = verify(&vectors, "sgx-v3-dcapqvl", 1751000000).unwrap();
    assert_eq!(v.tcb_status, TcbStatus::ConfigurationAndSWHardeningNeeded);
    assert_eq!(v.advisory_ids, ["INTEL-SA-00289", "INTEL-SA-00615"]);
    assert_eq!(v.qe_tcb_status, TcbStatus::UpToDate);
    assert_eq!(v.fmspc, "00A067110000");
    assert!(!v.debug);
    assert!(v.root.intel);
    assert!(v.report_data.starts_with(&hex::encode("Hello, world!")));
}

#[test]
fn tdx_v4_dcapqvl() {
    let vectors = teeserve_testkit::require_vectors!();
    let v = verify(&vectors, "tdx-v4-dcapqvl", 1751000000).unwrap();
    assert_eq!(v.tcb_status, TcbStatus::UpToDate);
    assert!(v.advisory_ids.is_empty());
    assert_eq!(v.tdx_module_tcb_status, Some(TcbStatus::UpToDate));
}

#[test]
fn tdx_v5_has_no_matching_tcb_level() {
    let vectors = teeserve_testkit::require_vectors!();
    let e = verify(&vectors, "tdx-v5-dcapqvl", 1772000000).unwrap_err();
    assert!(matches!(e, VerifyError::TcbNotSupported(_)), "{e}");
}

#[test]
fn tdx_v4_padded_quote() {
    let vectors = teeserve_testkit::require_vectors!();
    let v = verify(&vectors, "tdx-v4-automata-padded", 1739419232).unwrap();
    assert_eq!(v.tcb_status, TcbStatus::OutOfDate);
    assert_eq!(
        v.advisory_ids,
        ["INTEL-SA-00960", "INTEL-SA-00982", "INTEL-SA-00986"]
    );
}

#[test]
fn sgx_v3_tcb_info_v2() {
    let vectors = teeserve_testkit::require_vectors!();
    let v = verify(&vectors, "sgx-v3-automata-tcbinfo-v2", 1739419232).unwrap();
    assert_eq!(v.tcb_status, TcbStatus::OutOfDate);
    assert!(v.advisory_ids.is_empty());
}

#[test]
fn debug_vectors_parse_and_are_debug() {
    let vectors = teeserve_testkit::require_vectors!();
    let q = Quote::parse(&quote(&vectors, "sgx-v3-debug-enclave")).unwrap();
    assert!(q.body.is_debug());
    let q = Quote::parse(&quote(&vectors, "tdx-v4-debug-td")).unwrap();
    assert!(q.body.is_debug());
    let _ = Policy::default();
}

#[test]
fn every_vector_expires_one_second_outside_its_window() {
    let vectors = teeserve_testkit::require_vectors!();
    for (name, at) in [
        ("sgx-v3-dcapqvl", 1751000000),
        ("tdx-v4-dcapqvl", 1751000000),
        ("tdx-v4-automata-padded", 1739419232),
        ("sgx-v3-automata-tcbinfo-v2", 1739419232),
        ("tdx-v5-dcapqvl", 1772000000),
    ] {
        let v = Verifier::default();
        let p = v.prepare(&collateral(&vectors, name), at).unwrap();
        let q = quote(&vectors, name);
        let (start, end) = (p.not_before(), p.not_after());
        let e = v.verify_prepared(&q, &p, end + 1).unwrap_err();
        assert!(matches!(e, VerifyError::Expired { .. }), "{name}: {e}");
        let e = v.verify_prepared(&q, &p, start - 1).unwrap_err();
        assert!(matches!(e, VerifyError::NotYetValid { .. }), "{name}: {e}");
        println!("{name}: {e}");
    }
}
