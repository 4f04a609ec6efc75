//! The Gramine protected-file parallel reader against its streaming reader on arbitrary bytes (a fixed
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
    (open("pf-in"), open("pf-out"))
}

fuzz_target!(|data: &[u8]| {
    let key = teeserve_seal::key::SealKey::from_bytes(&[9u8; 16]).unwrap();
    let mut streamed = Vec::new();
    let want = teeserve_seal::gramine::decrypt_file(&key, data, &mut streamed, Some("a/b"));
    let (mut input, mut output) = files();
    input.write_all(data).unwrap();
    let got = teeserve_seal::gramine::decrypt_file_at(&key, &input, &output, Some("a/b"), &|_| {});
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
