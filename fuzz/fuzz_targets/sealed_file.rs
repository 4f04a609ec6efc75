//! teeserve's parallel file reader against its streaming reader on arbitrary bytes (a fixed
//! key): both refuse, or both give the same plaintext.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common/differential.rs"]
mod differential;

fuzz_target!(|data: &[u8]| {
    let key = teeserve_seal::SealKey::from_bytes(&[7u8; 32]).unwrap();
    differential::check(
        data,
        |out| teeserve_seal::stream::unseal(&key, data, out, None),
        |input, output| teeserve_seal::stream::unseal_file(&key, input, output, None, &|_| {}),
    );
});
