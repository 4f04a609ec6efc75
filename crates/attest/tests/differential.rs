//! Differential test against Phala's dcap-qvl on every vector. Where the two disagree because
//! Intel's QVL semantics differ from dcap-qvl's (reference: Intel QVL `QuoteVerifier.cpp`,
//! `TcbLevelCheck.cpp`), the difference is asserted and explained.
mod common;
use std::path::Path;

use common::*;
use teeserve_attest::{TcbStatus, Verifier, VerifyError};

fn qvl(vectors: &Path, name: &str, at: u64) -> Result<dcap_qvl::verify::VerifiedReport, String> {
    let json = collateral_json(vectors, name);
    match serde_json::from_slice::<dcap_qvl::QuoteCollateralV3>(&json) {
        Ok(c) => {
            dcap_qvl::verify::verify(&quote(vectors, name), &c, at).map_err(|e| format!("{e:?}"))
        }
        Err(e) => Err(format!("collateral: {e}")),
    }
}

fn ours(vectors: &Path, name: &str, at: i64) -> Result<teeserve_attest::Verdict, VerifyError> {
    Verifier::default().verify(&quote(vectors, name), &collateral(vectors, name), at)
}

#[test]
fn sgx_v3_agrees() {
    let vectors = teeserve_testkit::require_vectors!();
    let a = ours(&vectors, "sgx-v3-dcapqvl", 1751000000).unwrap();
    let b = qvl(&vectors, "sgx-v3-dcapqvl", 1751000000).unwrap();
    assert_eq!(a.tcb_status.name(), b.status);
    assert_eq!(a.advisory_ids, b.advisory_ids);
}

#[test]
fn tdx_v4_agrees() {
    let vectors = teeserve_testkit::require_vectors!();
    let a = ours(&vectors, "tdx-v4-dcapqvl", 1751000000).unwrap();
    let b = qvl(&vectors, "tdx-v4-dcapqvl", 1751000000).unwrap();
    assert_eq!(a.tcb_status.name(), b.status);
    assert_eq!(a.advisory_ids, b.advisory_ids);
}

#[test]
fn tdx_v5_both_find_no_matching_level() {
    let vectors = teeserve_testkit::require_vectors!();
    assert!(matches!(
        ours(&vectors, "tdx-v5-dcapqvl", 1772000000),
        Err(VerifyError::TcbNotSupported(_))
    ));
    let e = qvl(&vectors, "tdx-v5-dcapqvl", 1772000000).unwrap_err();
    assert!(e.to_lowercase().contains("tcb"), "{e}");
}

#[test]
fn padded_tdx_v4_status_agrees_advisories_may_differ() {
    let vectors = teeserve_testkit::require_vectors!();
    let a = ours(&vectors, "tdx-v4-automata-padded", 1739419232).unwrap();
    assert_eq!(a.tcb_status, TcbStatus::OutOfDate);
    match qvl(&vectors, "tdx-v4-automata-padded", 1739419232) {
        Ok(b) => {
            assert_eq!(a.tcb_status.name(), b.status);
            // Intel reports the matched TCB level's advisories only; dcap-qvl unions those of
            // the platform, QE and TDX module levels, so its list is a superset of ours.
            for id in &a.advisory_ids {
                assert!(
                    b.advisory_ids.contains(id),
                    "{id} missing from dcap-qvl's {:?}",
                    b.advisory_ids
                );
            }
        }
        // This collateral pairs a hand-assembled set; dcap-qvl's stricter webpki path checks may
        // refuse it where Intel's QVL (and teeserve) accept it.
        Err(e) => eprintln!("dcap-qvl refuses the assembled collateral: {e}"),
    }
}

#[test]
fn tcb_info_v2_is_verified_here_and_not_parsed_by_dcap_qvl() {
    let vectors = teeserve_testkit::require_vectors!();
    let a = ours(&vectors, "sgx-v3-automata-tcbinfo-v2", 1739419232).unwrap();
    assert_eq!(a.tcb_status, TcbStatus::OutOfDate);
    // dcap-qvl only parses TCB Info v3 (reference/dcap.md section 3). This bundle's
    // pck_crl_issuer_chain names the Processor CA while its CRL (rightly, for this PCK) comes from
    // the Platform CA; teeserve authenticates the CRL with Intel's known Platform CA.
    assert!(a.pck_revocation_checked);
    assert!(qvl(&vectors, "sgx-v3-automata-tcbinfo-v2", 1739419232).is_err());
}
