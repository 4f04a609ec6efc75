//! An independent reading of Gramine's protected-files format (reference/gramine.md section 4),
//! written with RustCrypto's AES-GCM and CMAC rather than teeserve-seal's code paths.
#![allow(dead_code)]

use aes::cipher::generic_array::GenericArray;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes128Gcm;
use cmac::Mac;

fn open(key: &[u8], ct: &[u8], tag: &[u8]) -> Vec<u8> {
    let c = Aes128Gcm::new(GenericArray::from_slice(key));
    let mut msg = ct.to_vec();
    msg.extend_from_slice(tag);
    c.decrypt(
        GenericArray::from_slice(&[0u8; 12]),
        Payload {
            msg: &msg,
            aad: &[],
        },
    )
    .expect("authentic")
}

pub fn decrypt(kdk: &[u8], f: &[u8]) -> Vec<u8> {
    assert_eq!(&f[..8], b"GRAFS_PF");
    let mut m = <cmac::Cmac<aes::Aes128> as Mac>::new_from_slice(kdk).unwrap();
    let mut label = [0u8; 64];
    label[..29].copy_from_slice(b"SGX-PROTECTED-FS-METADATA-KEY");
    m.update(&1u32.to_le_bytes());
    m.update(&label);
    m.update(&f[10..42]);
    m.update(&128u32.to_le_bytes());
    let mk = m.finalize().into_bytes();
    let blob = open(&mk, &f[58..58 + 3884], &f[42..58]);
    let size = u64::from_le_bytes(blob[772..780].try_into().unwrap()) as usize;
    let mut out = blob[812..812 + size.min(3072)].to_vec();
    if size <= 3072 {
        return out;
    }
    let n_data = (size - 3072).div_ceil(4096);
    let node = |i: usize| &f[i * 4096..(i + 1) * 4096];
    let mut mhts: Vec<Vec<u8>> = Vec::new();
    for d in 0..n_data {
        let m = d / 96;
        while mhts.len() <= m {
            let k = mhts.len();
            let (key, mac) = if k == 0 {
                (blob[780..796].to_vec(), blob[796..812].to_vec())
            } else {
                let p = &mhts[(k - 1) / 32];
                let s = (96 + (k - 1) % 32) * 32;
                (p[s..s + 16].to_vec(), p[s + 16..s + 32].to_vec())
            };
            mhts.push(open(&key, node(1 + 97 * k), &mac));
        }
        let s = (d % 96) * 32;
        let (k, mac) = (&mhts[m][s..s + 16], &mhts[m][s + 16..s + 32]);
        let plain = open(k, node(d + 2 + d / 96), mac);
        let n = (size - out.len()).min(4096);
        out.extend_from_slice(&plain[..n]);
    }
    out
}

/// The path bound into a protected file (the NUL-terminated path at the start of its decrypted
/// metadata; Gramine opens the file only under this path).
pub fn bound_path(kdk: &[u8], f: &[u8]) -> String {
    assert_eq!(&f[..8], b"GRAFS_PF");
    let mut m = <cmac::Cmac<aes::Aes128> as Mac>::new_from_slice(kdk).unwrap();
    let mut label = [0u8; 64];
    label[..29].copy_from_slice(b"SGX-PROTECTED-FS-METADATA-KEY");
    m.update(&1u32.to_le_bytes());
    m.update(&label);
    m.update(&f[10..42]);
    m.update(&128u32.to_le_bytes());
    let mk = m.finalize().into_bytes();
    let blob = open(&mk, &f[58..58 + 3884], &f[42..58]);
    let path = &blob[..772];
    let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
    String::from_utf8(path[..end].to_vec()).unwrap()
}
