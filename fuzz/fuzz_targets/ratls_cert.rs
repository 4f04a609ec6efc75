//! RA-TLS certificate parsing (X.509, both evidence extensions, CBOR claims).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = teeserve_ratls::parse_cert(data);
});
