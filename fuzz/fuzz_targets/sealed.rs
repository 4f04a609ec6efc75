//! teeserve's sealed-file reader on arbitrary bytes (a fixed key).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = teeserve_seal::SealKey::from_bytes(&[7u8; 32]).unwrap();
    let _ = teeserve_seal::stream::SealedHeader::parse(data);
    let mut out = Vec::new();
    let _ = teeserve_seal::stream::unseal(&key, data, &mut out, None);
    let _ = teeserve_seal::stream::unseal_to_vec(&key, data, Some("x"));
    let _ = teeserve_seal::SealKey::from_file_bytes(data);
});
