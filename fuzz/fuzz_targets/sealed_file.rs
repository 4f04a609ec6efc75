//! teeserve's parallel file reader against its streaming reader on arbitrary bytes (a fixed
//! key): both refuse, or both give the same plaintext.
#![no_main]
use std::io::{Read, Seek, Write};

use libfuzzer_sys::fuzz_target;

fn files() -> (std::fs::File, std::fs::File) {
    let dir = std::env::temp_dir();
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join(format!("teeserve-fuzz-{}-{name}", std::process::id())))
            .expect("temp file")
    };
    (open("sealed-in"), open("sealed-out"))
}

fuzz_target!(|data: &[u8]| {
    let key = teeserve_seal::key::SealKey::from_bytes(&[7u8; 32]).unwrap();
    let mut streamed = Vec::new();
    let want = teeserve_seal::stream::unseal(&key, data, &mut streamed, None);
    let (mut input, mut output) = files();
    input.write_all(data).unwrap();
    let got = teeserve_seal::stream::unseal_file(&key, &input, &output, None, &|_| {});
    match (want, got) {
        (Ok(_), Ok(_)) => {
            let mut plain = Vec::new();
            output.rewind().unwrap();
            output.read_to_end(&mut plain).unwrap();
            assert_eq!(plain, streamed);
        }
        // Both refuse (the messages may differ when a file is both cut and modified: the
        // file reader checks the length first).
        (Err(_), Err(_)) => {}
        (a, b) => panic!("streaming {a:?}, file {b:?}"),
    }
});
