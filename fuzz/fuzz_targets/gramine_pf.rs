//! The Gramine protected-file reader on arbitrary bytes (a fixed key).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = teeserve_seal::SealKey::from_bytes(&[9u8; 16]).unwrap();
    let mut out = Vec::new();
    let _ = teeserve_seal::gramine::decrypt_file(&key, data, &mut out, Some("a/b"));
});
