//! Receipts (a COSE_Sign1 over a CBOR map of claims, [`teeserve_ratls::receipt`]), which a
//! requester reads from a server's trailers or headers and anyone may later show a verifier.
//!
//! The first byte chooses what the rest is. Even: a receipt as it arrives, read under a fixed
//! key; the parser refuses a bad shape before the signature, so this explores the outer COSE
//! structure and the inclusion proof. Odd: a payload, signed here as teeserve signs a batch of
//! one (RFC 9052 section 4.4 over the RFC 9162 leaf hash, RFC 9942) with a key made from a
//! fixed seed, which takes the fuzzer's bytes past the signature check into the
//! claims decoder. Either way the receipt is refused with a reason or read into claims; claims
//! that were read are signed again and must read back the same; a receipt signed by the key
//! is never refused for its signature. The document a receipt names, read without its
//! signature (`named_document`), is read from every receipt that verifies, and is the one its
//! verified claims name.
//!
//! ```text
//! cargo fuzz run receipt -- -rss_limit_mb=512
//! ```
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use teeserve_ratls::receipt::{named_document, verify, ReceiptClaims, ReceiptError, ReceiptSigner};

/// The protected header teeserve writes: `{1: -8, 395: 1}` (alg EdDSA, vds RFC9162_SHA256).
const PROTECTED: [u8; 7] = [0xa2, 0x01, 0x27, 0x19, 0x01, 0x8b, 0x01];
/// The unprotected header of a batch of one: `{396: {-1: [<<[1, 0, []]>>]}}` (RFC 9942).
const UNPROTECTED: [u8; 12] = [
    0xa1, 0x19, 0x01, 0x8c, 0xa1, 0x20, 0x81, 0x44, 0x83, 0x01, 0x00, 0x80,
];

fn fixed_key() -> &'static Ed25519KeyPair {
    static KEY: OnceLock<Ed25519KeyPair> = OnceLock::new();
    KEY.get_or_init(|| Ed25519KeyPair::from_seed_unchecked(&[0x5e; 32]).expect("seed"))
}

fn signer() -> &'static ReceiptSigner {
    static SIGNER: OnceLock<ReceiptSigner> = OnceLock::new();
    SIGNER.get_or_init(|| ReceiptSigner::generate().expect("receipt key"))
}

/// A CBOR head (RFC 8949 section 3): major type and argument.
fn head(major: u8, v: usize, out: &mut Vec<u8>) {
    let m = major << 5;
    match v {
        0..=23 => out.push(m | v as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, v as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        }
        _ => {
            out.push(m | 26);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        }
    }
}

fn bstr(b: &[u8], out: &mut Vec<u8>) {
    head(2, b.len(), out);
    out.extend_from_slice(b);
}

/// `payload` in a tagged COSE_Sign1 signed by the fixed key, as a tree of one: the signed
/// payload is the root, `SHA-256(0x00 || payload)` (RFC 9162 section 2.1.1).
fn signed(payload: &[u8]) -> Vec<u8> {
    let mut leaf = ring::digest::Context::new(&ring::digest::SHA256);
    leaf.update(&[0x00]);
    leaf.update(payload);
    let root = leaf.finish();
    let mut to_sign = Vec::with_capacity(64);
    head(4, 4, &mut to_sign);
    head(3, 10, &mut to_sign);
    to_sign.extend_from_slice(b"Signature1");
    bstr(&PROTECTED, &mut to_sign);
    bstr(&[], &mut to_sign);
    bstr(root.as_ref(), &mut to_sign);
    let signature = fixed_key().sign(&to_sign);
    let mut out = Vec::with_capacity(payload.len() + 80);
    out.push(0xd2); // tag 18
    head(4, 4, &mut out);
    bstr(&PROTECTED, &mut out);
    out.extend_from_slice(&UNPROTECTED);
    bstr(payload, &mut out);
    bstr(signature.as_ref(), &mut out);
    out
}

/// Claims that were read are what teeserve would sign: signing them again reads back the same.
fn round_trip(claims: &ReceiptClaims) {
    let again = signer().sign(claims);
    assert_eq!(&verify(&again, &signer().public_key()).unwrap(), claims);
}

/// The document named without the signature checked is the one the verified claims name.
fn names(receipt: &[u8], claims: &ReceiptClaims) {
    assert_eq!(named_document(receipt).unwrap(), claims.attestation_sha256);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let public = fixed_key().public_key().as_ref();
    if mode & 1 == 0 {
        // Read from every input, whether it verifies or not.
        let named = named_document(rest);
        if let Ok(claims) = verify(rest, public) {
            assert_eq!(named.ok(), Some(claims.attestation_sha256));
            round_trip(&claims);
        }
        return;
    }
    let receipt = signed(rest);
    match verify(&receipt, public) {
        Ok(claims) => {
            names(&receipt, &claims);
            round_trip(&claims)
        }
        Err(ReceiptError::Signature) => panic!("a receipt signed by the key was refused"),
        Err(ReceiptError::Format(_) | ReceiptError::Claim(_)) => {
            // Only the signature is left out: a receipt that does not verify for its shape or
            // its claims names nothing either.
            assert!(named_document(&receipt).is_err());
        }
    }
});
