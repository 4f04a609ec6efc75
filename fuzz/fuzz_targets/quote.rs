//! Quote parsing, and the PCK SGX extension parser, on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = teeserve_attest::Quote::parse(data) {
        let _ = q.body.report_data();
        let _ = teeserve_attest::x509::Cert::chain_from_pem(&q.pck_chain_pem);
    }
    let _ = teeserve_attest::pck::SgxExtension::parse(data);
    let _ = teeserve_attest::quote::decode_quote_file(data);
});
