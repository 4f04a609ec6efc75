//! The Gramine protected-file parallel reader against its streaming reader on arbitrary bytes
//! (a fixed key): both refuse, or both give the same plaintext.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common/differential.rs"]
mod differential;

fuzz_target!(|data: &[u8]| {
    let key = teeserve_seal::SealKey::from_bytes(&[9u8; 16]).unwrap();
    differential::check(
        data,
        |out| teeserve_seal::gramine::decrypt_file(&key, data, out, Some("a/b")),
        |input, output| {
            teeserve_seal::gramine::decrypt_file_at(&key, input, output, Some("a/b"), &|_| {})
        },
    );
});
