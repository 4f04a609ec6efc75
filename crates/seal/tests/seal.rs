//! Round trips, tampering, and Gramine interop of the sealed formats.
use std::io::Cursor;

use teeserve_seal::gramine::{self, PfVersion};
use teeserve_seal::stream::{self, SealOptions};
use teeserve_seal::SealError;
use teeserve_seal::SealKey;

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + i / 7) as u8).collect()
}

const SMALL: SealOptions = SealOptions {
    chunk_log2: 12,
    threads: 2,
};
const CHUNK: usize = 4096;

fn seal(key: &SealKey, name: &str, p: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    stream::seal(key, name, p.len() as u64, p, &mut out, &SMALL).unwrap();
    out
}

fn header_len(sealed: &[u8]) -> usize {
    stream::SealedHeader::parse(sealed).unwrap().1
}

#[test]
fn teeserve_round_trips() {
    let key = SealKey::generate(32).unwrap();
    for n in [
        0,
        1,
        CHUNK - 1,
        CHUNK,
        CHUNK + 1,
        16 * CHUNK + 5,
        40 * CHUNK,
    ] {
        let p = data(n);
        let s = seal(&key, "m/1/model.onnx", &p);
        let back = stream::unseal_to_vec(&key, &s, Some("m/1/model.onnx")).unwrap();
        assert_eq!(&back[..], &p[..], "size {n}");
        let mut out = Vec::new();
        stream::unseal(&key, &s[..], &mut out, None).unwrap();
        assert_eq!(out, p);
    }
}

#[test]
fn file_variants_round_trip_and_match_the_streaming_format() {
    let key = SealKey::generate(32).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // 600 chunks span several 1 MiB groups, so both threads take turns.
    for n in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 600 * CHUNK + 7] {
        let p = data(n);
        let (input, sealed) = files(&dir, &p);
        let written =
            stream::seal_file(&key, "m/1/model.onnx", &input, &sealed, &SMALL, &|_| {}).unwrap();
        let s = read_back(&sealed);
        assert_eq!(written, s.len() as u64, "size {n}");
        assert_eq!(s.len(), seal(&key, "m/1/model.onnx", &p).len(), "size {n}");
        // The streaming reader opens what the file writer wrote...
        let back = stream::unseal_to_vec(&key, &s, Some("m/1/model.onnx")).unwrap();
        assert_eq!(&back[..], &p[..], "size {n}");
        // ...and the file reader opens what the streaming writer wrote.
        let (input, output) = files(&dir, &seal(&key, "x", &p));
        let done = std::sync::atomic::AtomicU64::new(0);
        let h = stream::unseal_file(&key, &input, &output, Some("x"), &|k| {
            done.fetch_add(k, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(h.plaintext_len, n as u64);
        assert_eq!(read_back(&output), p, "size {n}");
        assert_eq!(done.into_inner(), n as u64, "progress of size {n}");
    }
}

/// Writes `bytes` to a file in `dir` and opens it for reading, with an empty output beside it.
fn files(dir: &tempfile::TempDir, bytes: &[u8]) -> (std::fs::File, std::fs::File) {
    let n = std::fs::read_dir(dir.path()).unwrap().count();
    let input = dir.path().join(format!("in{n}"));
    std::fs::write(&input, bytes).unwrap();
    let out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.path().join(format!("out{n}")))
        .unwrap();
    (std::fs::File::open(input).unwrap(), out)
}

fn read_back(mut f: &std::fs::File) -> Vec<u8> {
    use std::io::{Read, Seek};
    let mut v = Vec::new();
    f.seek(std::io::SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut v).unwrap();
    v
}

/// Every reader (in memory, streaming, positional file I/O) refuses; the streaming and file
/// readers with the same message.
fn expect_tampered(key: &SealKey, s: &[u8]) -> SealError {
    let e = stream::unseal_to_vec(key, s, None).unwrap_err();
    let mut out = Vec::new();
    let streaming = stream::unseal(key, s, &mut out, None).unwrap_err();
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = files(&dir, s);
    let file = stream::unseal_file(key, &input, &output, None, &|_| {}).unwrap_err();
    assert_eq!(file.to_string(), streaming.to_string(), "unseal_file");
    e
}

#[test]
fn every_header_bit_and_chunk_is_authenticated() {
    let key = SealKey::generate(32).unwrap();
    let p = data(3 * CHUNK + 10);
    let s = seal(&key, "name", &p);
    let h = header_len(&s);
    for i in 0..h {
        for bit in [0, 7] {
            let mut m = s.clone();
            m[i] ^= 1 << bit;
            let e = expect_tampered(&key, &m);
            let msg = e.to_string();
            assert!(
                msg.contains("tamper")
                    || msg.contains("wrong key")
                    || msg.contains("not a teeserve")
                    || msg.contains("truncated"),
                "header byte {i}: {msg}"
            );
        }
    }
    // A flipped bit in each chunk body and each tag.
    for chunk in 0..4 {
        let start = h + chunk * (CHUNK + 16);
        for off in [
            start,
            start + 100.min(p.len() - 3 * CHUNK - 1),
            (start + CHUNK + 15).min(s.len() - 1),
        ] {
            let mut m = s.clone();
            m[off] ^= 0x80;
            let e = expect_tampered(&key, &m);
            assert!(e.to_string().contains("tampered"), "offset {off}: {e}");
        }
    }
}

#[test]
fn truncation_at_every_chunk_boundary_is_detected() {
    let key = SealKey::generate(32).unwrap();
    let p = data(4 * CHUNK);
    let s = seal(&key, "n", &p);
    let h = header_len(&s);
    for k in 0..4 {
        let cut = h + k * (CHUNK + 16);
        let e = expect_tampered(&key, &s[..cut]);
        assert!(e.to_string().contains("truncated"), "cut {cut}: {e}");
    }
    let mut longer = s.clone();
    longer.push(0);
    assert!(expect_tampered(&key, &longer)
        .to_string()
        .contains("after the last chunk"));
}

#[test]
fn swapped_and_foreign_chunks_are_detected() {
    let key = SealKey::generate(32).unwrap();
    let p = data(3 * CHUNK);
    let a = seal(&key, "n", &p);
    let b = seal(&key, "n", &p);
    let h = header_len(&a);
    let c = CHUNK + 16;
    let mut swapped = a.clone();
    swapped[h..h + c].copy_from_slice(&a[h + c..h + 2 * c]);
    swapped[h + c..h + 2 * c].copy_from_slice(&a[h..h + c]);
    assert!(expect_tampered(&key, &swapped)
        .to_string()
        .contains("chunk 0"));
    let mut spliced = a.clone();
    spliced[h + c..h + 2 * c].copy_from_slice(&b[h + c..h + 2 * c]);
    assert!(expect_tampered(&key, &spliced)
        .to_string()
        .contains("chunk 1"));
}

#[test]
fn wrong_key_and_wrong_name() {
    let key = SealKey::generate(32).unwrap();
    let s = seal(&key, "models/a", b"secret");
    let other = SealKey::generate(32).unwrap();
    assert!(matches!(
        stream::unseal_to_vec(&other, &s, None),
        Err(SealError::WrongKey(_))
    ));
    assert!(matches!(
        stream::unseal_to_vec(&key, &s, Some("models/b")),
        Err(SealError::NameMismatch { .. })
    ));
    let short = SealKey::generate(16).unwrap();
    assert!(matches!(
        stream::unseal_to_vec(&short, &s, None),
        Err(SealError::Key(_))
    ));
}

#[test]
fn real_gramine_file_decrypts_to_its_known_digest() {
    let vectors = teeserve_testkit::require_vectors!();
    let dir = vectors.join("gramine");
    let key = SealKey::from_file(&dir.join("wrap_key")).unwrap();
    let file = std::fs::read(dir.join("input.txt.pf")).unwrap();
    let mut out = Vec::new();
    let info =
        gramine::decrypt_file(&key, &file[..], &mut out, Some("enc_files/input.txt")).unwrap();
    assert_eq!(info.size, 52_258);
    assert_eq!(info.version, PfVersion::V1);
    assert!(out.starts_with(b"4096\n73766 0 0 69\n"));
    let digest = ring::digest::digest(&ring::digest::SHA256, &out);
    assert_eq!(
        hex::encode(digest),
        "beb3daf59da363559fd8fb02a7ccc12185325fa0a4f3dcaf0842f3f2686b167d"
    );
    let e =
        gramine::decrypt_file(&key, &file[..], &mut Vec::new(), Some("other/path")).unwrap_err();
    assert!(matches!(e, SealError::NameMismatch { .. }));
    // The parallel file reader gives the same plaintext.
    let tmp = tempfile::tempdir().unwrap();
    let (input, output) = files(&tmp, &file);
    gramine::decrypt_file_at(&key, &input, &output, Some("enc_files/input.txt"), &|_| {}).unwrap();
    assert_eq!(read_back(&output), out);
}

fn pf(key: &SealKey, path: &str, p: &[u8], v: PfVersion) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    gramine::encrypt_file(key, path, p.len() as u64, p, &mut out, v).unwrap();
    out.into_inner()
}

/// Protected-file sizes at the format's boundaries: all in the metadata node (up to 3072);
/// 4096*96+3072 fills the first tree node and one more byte needs a second; 34 tree nodes
/// (more than the root's 32 children) need a second tree level.
const PF_SIZES: [usize; 8] = [
    0,
    1,
    3071,
    3072,
    3073,
    4096 * 96 + 3072,
    4096 * 96 + 3073,
    4096 * 96 * 34 + 3072 + 7,
];

#[test]
fn gramine_round_trips_at_tree_boundaries() {
    let key = SealKey::generate(16).unwrap();
    for n in PF_SIZES {
        for v in [PfVersion::V1, PfVersion::V2] {
            let p = data(n);
            let s = pf(&key, "models/m/1/model.onnx", &p, v);
            assert_eq!(s.len() % 4096, 0);
            let mut out = Vec::new();
            let info = gramine::decrypt_file(&key, &s[..], &mut out, Some("models/m/1/model.onnx"))
                .unwrap();
            assert_eq!(info.version, v);
            assert_eq!(out, p, "size {n}");
            if v == PfVersion::V1 {
                assert_eq!(
                    independent::decrypt(key.bytes(), &s),
                    p,
                    "independent reader, size {n}"
                );
            }
        }
    }
}

#[test]
fn gramine_tampering_is_detected() {
    let key = SealKey::generate(16).unwrap();
    let p = data(4096 * 3 + 3072);
    let s = pf(&key, "a", &p, PfVersion::V1);
    for off in [20, 60, 4096 + 5, 2 * 4096 + 9, s.len() - 1] {
        let mut m = s.clone();
        m[off] ^= 1;
        let e = gramine::decrypt_file(&key, &m[..], &mut Vec::new(), None).unwrap_err();
        assert!(
            matches!(e, SealError::Tampered(_) | SealError::WrongKey(_)),
            "offset {off}: {e}"
        );
    }
    let e = gramine::decrypt_file(&key, &s[..s.len() - 4096], &mut Vec::new(), None).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
    let other = SealKey::generate(16).unwrap();
    assert!(matches!(
        gramine::decrypt_file(&other, &s[..], &mut Vec::new(), None),
        Err(SealError::WrongKey(_))
    ));
}

#[test]
fn gramine_file_variants_round_trip_and_match_the_streaming_format() {
    let key = SealKey::generate(16).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for n in PF_SIZES {
        for v in [PfVersion::V1, PfVersion::V2] {
            let p = data(n);
            let (input, output) = files(&dir, &p);
            gramine::encrypt_file_at(&key, "m/model.onnx", &input, &output, v, &|_| {}).unwrap();
            let s = read_back(&output);
            assert_eq!(s.len(), pf(&key, "m/model.onnx", &p, v).len(), "size {n}");
            // The streaming reader and the independent reader open what the file writer wrote.
            let mut out = Vec::new();
            let info = gramine::decrypt_file(&key, &s[..], &mut out, Some("m/model.onnx")).unwrap();
            assert_eq!((info.version, info.size), (v, n as u64));
            assert_eq!(out, p, "size {n}");
            if v == PfVersion::V1 {
                assert_eq!(independent::decrypt(key.bytes(), &s), p, "size {n}");
            }
            // The file reader opens what the streaming writer wrote.
            let (input, output) = files(&dir, &pf(&key, "x", &p, v));
            let done = std::sync::atomic::AtomicU64::new(0);
            let info = gramine::decrypt_file_at(&key, &input, &output, Some("x"), &|k| {
                done.fetch_add(k, std::sync::atomic::Ordering::Relaxed);
            })
            .unwrap();
            assert_eq!(info.size, n as u64);
            assert_eq!(read_back(&output), p, "size {n}");
            assert_eq!(done.into_inner(), n.saturating_sub(3072) as u64);
        }
    }
}

#[test]
fn gramine_file_reader_refuses_what_the_streaming_reader_refuses() {
    let key = SealKey::generate(16).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Two tree levels: 34 leaf tree nodes under the root.
    let p = data(4096 * 96 * 34 + 3072 + 7);
    let s = pf(&key, "a", &p, PfVersion::V1);
    let node = |i: usize| i * 4096;
    let mut cases: Vec<Vec<u8>> = Vec::new();
    // Metadata, root tree node, a data node, a second-level tree node, the last data node.
    for off in [
        20,
        60,
        node(1) + 5,
        node(2) + 9,
        node(1 + 97 * 33) + 1,
        s.len() - 1,
    ] {
        let mut m = s.clone();
        m[off] ^= 1;
        cases.push(m);
    }
    cases.push(s[..s.len() - 4096].to_vec());
    cases.push(s[..node(1) + 100].to_vec());
    cases.push(s[..100].to_vec());
    let mut longer = s.clone();
    longer.push(0);
    cases.push(longer);
    let mut swapped = s.clone();
    swapped[node(2)..node(3)].copy_from_slice(&s[node(3)..node(4)]);
    swapped[node(3)..node(4)].copy_from_slice(&s[node(2)..node(3)]);
    cases.push(swapped);
    for (i, case) in cases.iter().enumerate() {
        let streaming = gramine::decrypt_file(&key, &case[..], &mut Vec::new(), None).unwrap_err();
        let (input, output) = files(&dir, case);
        let file = gramine::decrypt_file_at(&key, &input, &output, None, &|_| {}).unwrap_err();
        assert_eq!(file.to_string(), streaming.to_string(), "case {i}");
    }
    let (input, output) = files(&dir, &s);
    let e = gramine::decrypt_file_at(&key, &input, &output, Some("b"), &|_| {}).unwrap_err();
    assert!(matches!(e, SealError::NameMismatch { .. }), "{e}");
    let other = SealKey::generate(16).unwrap();
    let (input, output) = files(&dir, &s);
    let e = gramine::decrypt_file_at(&other, &input, &output, None, &|_| {}).unwrap_err();
    assert!(matches!(e, SealError::WrongKey(_)), "{e}");
}

/// An independent reading of Gramine's format (reference/gramine.md section 4), written with
/// RustCrypto's AES-GCM and CMAC rather than the library's code paths; shared with the CLI's
/// tests.
#[path = "support/independent.rs"]
mod independent;
