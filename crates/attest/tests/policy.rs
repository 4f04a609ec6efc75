//! Policy rules at load and at appraisal: a signer-only policy and a firmware-only (MRTD) one
//! are refused at load, and the evidence age bound against a verdict of the simulated platform.
use teeserve_attest::policy::PolicyLoadError;
use teeserve_attest::sim::{self, SimOptions, SimPlatform};
use teeserve_attest::{Collateral, Policy, TrustAnchor, Verdict, Verifier};

const SIGNER: &str = "aa";

#[test]
fn mrsigner_without_isv_prod_id_is_refused_at_load() {
    let signer = SIGNER.repeat(32);
    let err = Policy::from_toml(&format!("mrsigner = [\"{signer}\"]\n")).unwrap_err();
    match &err {
        PolicyLoadError::Invalid { field, reason } => {
            assert_eq!(*field, "isv_prod_id");
            assert!(reason.contains("mrsigner"), "{reason}");
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("isv_prod_id"), "{err}");
    // With a product id, or with an exact MRENCLAVE, the signer narrows an exact product.
    Policy::from_toml(&format!("mrsigner = [\"{signer}\"]\nisv_prod_id = 1\n")).unwrap();
    Policy::from_toml(&format!(
        "mrsigner = [\"{signer}\"]\nmrenclave = [\"{}\"]\n",
        "bb".repeat(32)
    ))
    .unwrap();
    let err = Policy::from_toml("mrenclave = []\nmax_evidence_age_secs = -1\n").unwrap_err();
    assert!(err.to_string().contains("max_evidence_age_secs"), "{err}");
}

#[test]
fn mrtd_without_rtmr_or_mrconfigid_is_refused_at_load() {
    let mrtd = "aa".repeat(48);
    for only_mrtd in [
        format!("mrtd = [\"{mrtd}\"]\n"),
        // An RTMR list that skips every register names none.
        format!("mrtd = [\"{mrtd}\"]\nrtmr = [\"\", \"\", \"\", \"\"]\n"),
    ] {
        let err = Policy::from_toml(&only_mrtd).unwrap_err();
        match &err {
            PolicyLoadError::Invalid { field, reason } => {
                assert_eq!(*field, "rtmr");
                assert!(
                    reason.contains("mrtd") && reason.contains("mrconfigid"),
                    "{reason}"
                );
            }
            other => panic!("{other}"),
        }
    }
    // With an RTMR that measures the workload, or with MRCONFIGID, the firmware narrows to
    // one TD.
    let rtmr2 = "bb".repeat(48);
    Policy::from_toml(&format!(
        "mrtd = [\"{mrtd}\"]\nrtmr = [\"\", \"\", \"{rtmr2}\"]\n"
    ))
    .unwrap();
    Policy::from_toml(&format!(
        "mrtd = [\"{mrtd}\"]\nmrconfigid = [\"{rtmr2}\"]\n"
    ))
    .unwrap();
}

fn verdict() -> Verdict {
    let tmp = tempfile::tempdir().unwrap();
    sim::init(tmp.path(), &SimOptions::default()).unwrap();
    let quote = SimPlatform::open(tmp.path(), [4; 32])
        .unwrap()
        .quote(&[0; 64])
        .unwrap();
    let anchor =
        TrustAnchor::from_pem(&std::fs::read(tmp.path().join("root.pem")).unwrap()).unwrap();
    let c =
        Collateral::from_json(&std::fs::read(tmp.path().join("collateral.json")).unwrap()).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Verifier::new(anchor).verify(&quote, &c, now).unwrap()
}

#[test]
fn max_evidence_age_secs_bounds_the_evidence_both_ways() {
    let mut v = verdict();
    let p = Policy::from_toml(&format!(
        "mrenclave = [\"{}\"]\nallow_simulated = true\n",
        "04".repeat(32)
    ))
    .unwrap();
    // Off by default: a bare quote or a certificate from 2001 (Gramine's notBefore) is fine.
    p.appraise(&v).unwrap();
    v.evidence_not_before_unix = Some(978_307_200);
    p.appraise(&v).unwrap();
    let p = Policy {
        max_evidence_age_secs: Some(300),
        ..p
    };
    let at = v.verified_at_unix;
    for (made, admitted) in [
        (None, false),
        (Some(at - 300), true),
        (Some(at - 301), false),
        (Some(at + 300), true),
        (Some(at + 301), false),
    ] {
        v.evidence_not_before_unix = made;
        match p.appraise(&v) {
            Ok(()) => assert!(admitted, "{made:?} admitted"),
            Err(e) => {
                assert!(!admitted, "{made:?}: {e}");
                assert_eq!(e.rule, "max_evidence_age_secs");
            }
        }
    }
}
