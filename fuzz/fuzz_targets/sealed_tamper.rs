//! Authenticated sealed files, tampered with: the fuzzer's bytes are sealed with a known key (in
//! teeserve's format, or as a Gramine protected file of either version), then one byte is
//! changed or the file is cut short where the fuzzer says, and read back. Reading must refuse
//! every change and return exactly the sealed plaintext otherwise. Random bytes alone stop at
//! the first authentication tag; this target reaches the chunk framing, the last-chunk flag,
//! the lengths and the Merkle tree behind it.
//!
//! ```text
//! cargo fuzz run sealed_tamper -- -rss_limit_mb=512 -malloc_limit_mb=256
//! ```
#![no_main]
use libfuzzer_sys::fuzz_target;
use teeserve_seal::gramine::{decrypt_file, encrypt_file, PfVersion};
use teeserve_seal::stream::{seal, unseal_to_vec, SealOptions};
use teeserve_seal::SealKey;

/// Plaintexts beyond a few chunks add time, not paths.
const MAX_PLAINTEXT: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let Some((&[format, chunk, p0, p1, p2, flip], plain)) = data.split_first_chunk::<6>() else {
        return;
    };
    let plain = &plain[..plain.len().min(MAX_PLAINTEXT)];
    let mut sealed = Vec::new();
    let name = "models/m/1/model.onnx";
    let gramine = format % 3;
    if gramine == 0 {
        let key = SealKey::from_bytes(&[7u8; 32]).unwrap();
        let opts = SealOptions {
            chunk_log2: 12 + chunk % 5,
            threads: 1,
        };
        seal(&key, name, plain.len() as u64, plain, &mut sealed, &opts).unwrap();
    } else {
        let key = SealKey::from_bytes(&[9u8; 16]).unwrap();
        let version = if gramine == 1 {
            PfVersion::V1
        } else {
            PfVersion::V2
        };
        let mut out = std::io::Cursor::new(Vec::new());
        encrypt_file(&key, name, plain.len() as u64, plain, &mut out, version).unwrap();
        sealed = out.into_inner();
    }
    // What to change: nothing (all four bytes zero), one byte flipped, or the file cut short.
    let at = (usize::from(p0) | usize::from(p1) << 8 | usize::from(p2) << 16) % sealed.len();
    let changed = match (flip, at) {
        (0, 0) => false,
        (0, at) => {
            sealed.truncate(at);
            true
        }
        (flip, at) => {
            sealed[at] ^= flip;
            true
        }
    };
    let read = if gramine == 0 {
        let key = SealKey::from_bytes(&[7u8; 32]).unwrap();
        unseal_to_vec(&key, &sealed, Some(name)).map(|v| v.to_vec())
    } else {
        let key = SealKey::from_bytes(&[9u8; 16]).unwrap();
        let mut out = Vec::new();
        decrypt_file(&key, sealed.as_slice(), &mut out, Some(name)).map(|_| out)
    };
    // A Gramine metadata node has bytes that no tag covers (Gramine's protected_files: the
    // minor version at 9, v2's feature flags at 58, and the padding after the 3,884-byte
    // encrypted blob up to 4,096), so Gramine reads a file where only they changed; so do we,
    // and the plaintext must still be exactly what was sealed.
    let harmless = flip != 0
        && match gramine {
            0 => false,
            1 => at == 9 || (58 + 3884..4096).contains(&at),
            _ => at == 9 || at == 58 || (59 + 3884..4096).contains(&at),
        };
    match read {
        Ok(got) => {
            assert!(
                !changed || harmless,
                "a changed file was accepted (byte {at}, flip {flip:#x})"
            );
            assert_eq!(got, plain, "an unchanged file read back different bytes");
        }
        Err(e) => assert!(changed, "an unchanged file was refused: {e}"),
    }
});
