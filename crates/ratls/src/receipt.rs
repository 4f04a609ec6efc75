//! Receipts: a server's signed statement of one answer, which a requester can show a third
//! party afterwards. A receipt names the model version that answered (its name, version and the
//! SHA-256 of its file, as the attestation document lists it), the API the request came over
//! (gRPC or REST, which says how its bytes are read), the signature and method run, the SHA-256
//! of the request as the server received it and of the response as it sent it, the time, a
//! counter, and the SHA-256 of the attestation document whose quote binds the receipt key.
//!
//! Format: a COSE_Sign1 (RFC 9052 section 4.2, CBOR tag 18) whose payload is the claims, a CBOR
//! map (RFC 8949) whose issue time is EAT's `iat` (CWT claim key 6, RFC 8392 section 3.1.6; RFC
//! 9711 keeps it) and whose other claims have text names. Signing is amortised: the server signs
//! once for all the answers made while it was signing the last batch, as a COSE Receipt of
//! inclusion (RFC 9942): the protected header is `{1: -8, 395: 1}` (alg EdDSA, RFC 9053 section
//! 2.2; verifiable data structure RFC9162_SHA256), the unprotected header carries the inclusion
//! proof `{396: {-1: [bstr .cbor [tree_size, leaf_index, [hash...]]]}}`, and the Ed25519
//! signature is over the `Sig_structure` whose payload is the Merkle root (RFC 9942's detached
//! payload). The root is computed from the receipt's own claims: the leaf is
//! `SHA-256(0x00 || claims)` (RFC 9162 section 2.1.1) and the path leads from it to the root.
//! A batch of one is a tree of size 1 with an empty path. A receipt shows the other leaves of
//! its batch as hashes only, and each set of claims carries a CWT ID (`cti`, claim key 7, RFC
//! 8392 section 3.1.7) that nobody outside the server can predict, so another requester's leaf
//! cannot be confirmed by guessing its request and answer.
//!
//! ```
//! use teeserve_ratls::receipt::{Api, ReceiptClaims, ReceiptSigner};
//! let signer = ReceiptSigner::generate().unwrap();
//! let claims = ReceiptClaims {
//!     model: "digits".into(), version: 1, model_sha256: [7; 32],
//!     signature: "serving_default".into(), api: Api::Grpc, method: "Predict".into(),
//!     request_sha256: [1; 32], response_sha256: [2; 32],
//!     time: 1_796_000_000, counter: 0, attestation_sha256: [3; 32],
//! };
//! let receipt = signer.sign(&claims);
//! assert_eq!(teeserve_ratls::receipt::verify(&receipt, &signer.public_key()).unwrap(), claims);
//! // Many answers, one signature: each receipt verifies on its own.
//! let batch = signer.sign_batch(&[claims.clone(), claims.clone()]);
//! assert_eq!(teeserve_ratls::receipt::verify(&batch[1], &signer.public_key()).unwrap(), claims);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};

use crate::cbor::{self, Item};
use crate::tlog::merkle;

/// CBOR tag of a COSE_Sign1 (RFC 9052 section 4.2).
const COSE_SIGN1_TAG: u64 = 18;
/// COSE algorithm EdDSA (RFC 9053 section 2.2).
const COSE_ALG_EDDSA: i64 = -8;
/// COSE header parameter `alg` (RFC 9052 section 3.1).
const COSE_HEADER_ALG: u64 = 1;
/// COSE header parameter `vds`, the verifiable data structure (RFC 9942 section 2).
const COSE_HEADER_VDS: u64 = 395;
/// Verifiable data structure RFC9162_SHA256 (RFC 9942 section 5.2).
const VDS_RFC9162_SHA256: u64 = 1;
/// COSE header parameter `vdp`, the proofs (RFC 9942 section 2).
const COSE_HEADER_VDP: u64 = 396;
/// The proof type "inclusion" in `vdp`: -1 (RFC 9942 section 5.2.1).
const VDP_INCLUSION: i64 = -1;
/// The most answers one signature covers: a receipt's path has at most 10 hashes.
pub const MAX_BATCH: usize = 1024;
/// The longest inclusion path read (a tree of 2^64 leaves).
const MAX_PATH: usize = 64;
/// CWT claim key of `iat`, the issue time (RFC 8392 section 4).
const CWT_IAT: u64 = 6;
/// CWT claim key of `cti`, the CWT ID (RFC 8392 section 4).
const CWT_CTI: u64 = 7;
/// The largest receipt read: a receipt is a few hundred bytes; a model name is at most a few
/// hundred more.
pub const MAX_RECEIPT_BYTES: usize = 4096;
/// The largest model, signature or method name a receipt carries.
const MAX_NAME: usize = 1024;

/// What a receipt states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptClaims {
    /// The model that answered.
    pub model: String,
    /// Its version.
    pub version: i64,
    /// SHA-256 of the version's file as it lies on disk (the sealed file when sealed), as the
    /// attestation document lists it.
    pub model_sha256: [u8; 32],
    /// The signature run (`serving_default` when the request named none).
    pub signature: String,
    /// The API the request came over, which says how its bytes are read: a protobuf message
    /// (gRPC) or an HTTP body (REST).
    pub api: Api,
    /// The API method (`Predict`, `Classify`, `Regress`, `ModelInfer`, ...).
    pub method: String,
    /// SHA-256 of the request as received (the gRPC message; the REST body).
    pub request_sha256: [u8; 32],
    /// SHA-256 of the response as sent (the gRPC message; the REST body).
    pub response_sha256: [u8; 32],
    /// Seconds since the Unix epoch when the receipt was made.
    pub time: u64,
    /// This receipt's number among the receipts of the receipt key (from 0).
    pub counter: u64,
    /// SHA-256 of the attestation document (its JSON as served) whose quote binds the key.
    pub attestation_sha256: [u8; 32],
}

/// The API a request came over. A method's name alone does not say how the request's bytes
/// are read: `Predict` is a JSON body over REST and a `PredictRequest` message over gRPC, and a
/// receipt names bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// gRPC: the request and response are protobuf messages (without their 5-byte prefixes).
    Grpc,
    /// REST: the request and response are HTTP bodies.
    Rest,
}

impl Api {
    /// The claim's value: `grpc` or `rest`.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Grpc => "grpc",
            Api::Rest => "rest",
        }
    }
}

/// Why a receipt was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Not a COSE_Sign1 of the shape teeserve makes, or larger than a receipt can be.
    #[error("receipt: {0}")]
    Format(String),
    /// The signature does not verify under the receipt key (another key signed it, or the
    /// receipt was changed).
    #[error("receipt: the signature does not verify under the attested receipt key")]
    Signature,
    /// A claim is missing or of the wrong type.
    #[error("receipt claim {0}")]
    Claim(String),
}

fn format(e: impl Into<String>) -> ReceiptError {
    ReceiptError::Format(e.into())
}

/// The receipt key, made inside the TEE at start and never written or sent; receipts count up.
pub struct ReceiptSigner {
    key: Ed25519KeyPair,
    counter: AtomicU64,
    /// The secret each receipt's `cti` is derived from (with its counter).
    blind: zeroize::Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ReceiptSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReceiptSigner({})", hex::encode(self.public_key()))
    }
}

impl ReceiptSigner {
    /// A fresh key.
    pub fn generate() -> Result<Self, ReceiptError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = zeroize::Zeroizing::new(
            Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| format("cannot make a receipt key"))?
                .as_ref()
                .to_vec(),
        );
        let key = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|_| format("cannot read the receipt key just made"))?;
        let mut blind = zeroize::Zeroizing::new([0u8; 32]);
        ring::rand::SecureRandom::fill(&rng, &mut blind[..])
            .map_err(|_| format("cannot draw the receipts' blinding secret"))?;
        Ok(Self {
            key,
            counter: AtomicU64::new(0),
            blind,
        })
    }

    /// The 32-byte Ed25519 public key, which the attestation document carries.
    pub fn public_key(&self) -> [u8; 32] {
        let mut k = [0u8; 32];
        k.copy_from_slice(self.key.public_key().as_ref());
        k
    }

    /// The next counter value.
    pub fn next_counter(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// Signs `claims` into a tagged COSE_Sign1: a batch of one.
    pub fn sign(&self, claims: &ReceiptClaims) -> Vec<u8> {
        self.sign_batch(std::slice::from_ref(claims))
            .pop()
            .unwrap_or_default()
    }

    /// The `cti` of a receipt: 16 bytes of SHA-256 over the blinding secret, the counter and
    /// the request's hash, unpredictable without the secret.
    fn cti(&self, counter: u64, request_sha256: &[u8; 32]) -> [u8; 16] {
        let mut h = ring::digest::Context::new(&ring::digest::SHA256);
        h.update(b"teeserve receipt cti\0");
        h.update(&self.blind[..]);
        h.update(&counter.to_be_bytes());
        h.update(request_sha256);
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finish().as_ref()[..16]);
        out
    }

    /// The receipts of `batch` (at most [`MAX_BATCH`]; more are signed in several batches),
    /// in its order, under one signature per batch: each carries its claims and its inclusion
    /// proof in the tree over the batch, whose root is signed.
    pub fn sign_batch(&self, batch: &[ReceiptClaims]) -> Vec<Vec<u8>> {
        let protected = protected_header();
        let mut out = Vec::with_capacity(batch.len());
        for chunk in batch.chunks(MAX_BATCH) {
            let payloads: Vec<Vec<u8>> = chunk
                .iter()
                .map(|c| encode_claims(c, &self.cti(c.counter, &c.request_sha256)))
                .collect();
            let leaves: Vec<merkle::Hash> = payloads.iter().map(|p| merkle::leaf_hash(p)).collect();
            let (root, proofs) = merkle::root_and_inclusion_proofs(&leaves);
            let signature = self.key.sign(&sig_structure(&protected, &root));
            let size = chunk.len() as u64;
            for (index, (payload, path)) in payloads.iter().zip(&proofs).enumerate() {
                out.push(encode_receipt(
                    &protected,
                    size,
                    index as u64,
                    path,
                    payload,
                    signature.as_ref(),
                ));
            }
        }
        out
    }
}

/// A receipt's bytes: the tagged COSE_Sign1 with its inclusion proof `[size, index, path]` in
/// the unprotected header. The one way a receipt is written: [`verify`] accepts only bytes
/// this writes again from what it read (CBOR's shortest forms, RFC 8949 section 4.2.1).
fn encode_receipt(
    protected: &[u8],
    size: u64,
    index: u64,
    path: &[merkle::Hash],
    payload: &[u8],
    signature: &[u8],
) -> Vec<u8> {
    let mut proof = Vec::with_capacity(8 + 34 * path.len());
    cbor::array(3, &mut proof);
    cbor::uint(size, &mut proof);
    cbor::uint(index, &mut proof);
    cbor::array(path.len() as u64, &mut proof);
    for h in path {
        cbor::bstr(h, &mut proof);
    }
    let mut r = Vec::with_capacity(payload.len() + proof.len() + 96);
    cbor::tag(COSE_SIGN1_TAG, &mut r);
    cbor::array(4, &mut r);
    cbor::bstr(protected, &mut r);
    cbor::map(1, &mut r);
    cbor::uint(COSE_HEADER_VDP, &mut r);
    cbor::map(1, &mut r);
    cbor::int(VDP_INCLUSION, &mut r);
    cbor::array(1, &mut r);
    cbor::bstr(&proof, &mut r);
    cbor::bstr(payload, &mut r);
    cbor::bstr(signature, &mut r);
    r
}

/// The protected header: `{1: -8, 395: 1}` (alg EdDSA; vds RFC9162_SHA256).
fn protected_header() -> Vec<u8> {
    let mut h = Vec::with_capacity(8);
    cbor::map(2, &mut h);
    cbor::uint(COSE_HEADER_ALG, &mut h);
    cbor::int(COSE_ALG_EDDSA, &mut h);
    cbor::uint(COSE_HEADER_VDS, &mut h);
    cbor::uint(VDS_RFC9162_SHA256, &mut h);
    h
}

/// `Sig_structure` = ["Signature1", protected, external_aad (empty), payload], the bytes signed
/// (RFC 9052 section 4.4).
fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(protected.len() + payload.len() + 20);
    cbor::array(4, &mut s);
    cbor::tstr("Signature1", &mut s);
    cbor::bstr(protected, &mut s);
    cbor::bstr(&[], &mut s);
    cbor::bstr(payload, &mut s);
    s
}

fn encode_claims(c: &ReceiptClaims, cti: &[u8; 16]) -> Vec<u8> {
    let mut p = Vec::with_capacity(256 + c.model.len());
    cbor::map(12, &mut p);
    cbor::uint(CWT_IAT, &mut p);
    cbor::uint(c.time, &mut p);
    cbor::uint(CWT_CTI, &mut p);
    cbor::bstr(cti, &mut p);
    cbor::tstr("model", &mut p);
    cbor::tstr(&c.model, &mut p);
    cbor::tstr("version", &mut p);
    cbor::int(c.version, &mut p);
    cbor::tstr("model-sha256", &mut p);
    cbor::bstr(&c.model_sha256, &mut p);
    cbor::tstr("signature", &mut p);
    cbor::tstr(&c.signature, &mut p);
    cbor::tstr("api", &mut p);
    cbor::tstr(c.api.as_str(), &mut p);
    cbor::tstr("method", &mut p);
    cbor::tstr(&c.method, &mut p);
    cbor::tstr("request-sha256", &mut p);
    cbor::bstr(&c.request_sha256, &mut p);
    cbor::tstr("response-sha256", &mut p);
    cbor::bstr(&c.response_sha256, &mut p);
    cbor::tstr("counter", &mut p);
    cbor::uint(c.counter, &mut p);
    cbor::tstr("attestation-sha256", &mut p);
    cbor::bstr(&c.attestation_sha256, &mut p);
    p
}

/// Checks a receipt's signature under `public_key` (32 bytes, from a verified attestation
/// document) and reads its claims. Nothing but the shape teeserve makes is accepted.
pub fn verify(receipt: &[u8], public_key: &[u8]) -> Result<ReceiptClaims, ReceiptError> {
    let opened = open(receipt)?;
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(
            &sig_structure(opened.protected, &opened.root),
            opened.signature,
        )
        .map_err(|_| ReceiptError::Signature)?;
    decode_claims(opened.payload)
}

/// The SHA-256 of the attestation document a receipt names, read without checking its
/// signature: only to find that document (a requester that holds an earlier one fetches it by
/// this name). Nothing is established by it; [`verify`] under the found document's key is what
/// decides.
pub fn named_document(receipt: &[u8]) -> Result<[u8; 32], ReceiptError> {
    Ok(decode_claims(open(receipt)?.payload)?.attestation_sha256)
}

/// A receipt taken apart, every check but its signature's made.
struct Opened<'a> {
    protected: &'a [u8],
    payload: &'a [u8],
    signature: &'a [u8],
    /// The Merkle root the signature is over, from the payload's leaf and the inclusion path.
    root: merkle::Hash,
}

/// Takes a receipt apart: the shape teeserve makes, in its shortest CBOR form, within the size
/// bounds, and the root its inclusion path leads to.
fn open(receipt: &[u8]) -> Result<Opened<'_>, ReceiptError> {
    if receipt.len() > MAX_RECEIPT_BYTES {
        return Err(format(format!(
            "{} bytes; a receipt is at most {MAX_RECEIPT_BYTES}",
            receipt.len()
        )));
    }
    let (item, rest) = cbor::decode(receipt).map_err(format)?;
    if !rest.is_empty() {
        return Err(format(format!("{} bytes after the COSE_Sign1", rest.len())));
    }
    let Item::Tag(COSE_SIGN1_TAG, inner) = item else {
        return Err(format("not a tagged COSE_Sign1 (CBOR tag 18)"));
    };
    let Item::Array(parts) = *inner else {
        return Err(format("COSE_Sign1 is not an array"));
    };
    let [Item::Bytes(protected), Item::Map(unprotected), Item::Bytes(payload), Item::Bytes(signature)] =
        parts.as_slice()
    else {
        return Err(format(
            "COSE_Sign1 is not [protected, unprotected, payload, signature]",
        ));
    };
    if *protected != protected_header().as_slice() {
        return Err(format(
            "the protected header is not {1: -8, 395: 1} (EdDSA, RFC9162_SHA256)",
        ));
    }
    let (size, index, path) = inclusion_proof(unprotected)?;
    if size > MAX_BATCH as u64 {
        return Err(format(format!(
            "a batch of {size} receipts; at most {MAX_BATCH} share a signature"
        )));
    }
    // One receipt, one byte string: CBOR allows longer forms of the same heads (a tag or a
    // length written in more bytes than it needs), which would make a receipt's bytes a poor
    // name for it.
    if encode_receipt(protected, size, index, &path, payload, signature) != receipt {
        return Err(format(
            "not in the shortest CBOR form teeserve writes (RFC 8949 section 4.2.1)",
        ));
    }
    let root = merkle::root_from_inclusion(index, size, &merkle::leaf_hash(payload), &path)
        .map_err(|e| format(format!("inclusion proof: {e}")))?;
    Ok(Opened {
        protected,
        payload,
        signature,
        root,
    })
}

/// The one inclusion proof of the unprotected header, `{396: {-1: [bstr .cbor [tree_size,
/// leaf_index, [hash...]]]}}` (RFC 9942 section 5.2.1): size, index and path.
fn inclusion_proof(
    unprotected: &[(Item<'_>, Item<'_>)],
) -> Result<(u64, u64, Vec<merkle::Hash>), ReceiptError> {
    let [(Item::Uint(COSE_HEADER_VDP), Item::Map(proofs))] = unprotected else {
        return Err(format(
            "the unprotected header is not {396: proofs} (RFC 9942)",
        ));
    };
    let [(Item::Neg(0), Item::Array(inclusion))] = proofs.as_slice() else {
        return Err(format("the proofs are not {-1: [inclusion proof]}"));
    };
    let [Item::Bytes(proof)] = inclusion.as_slice() else {
        return Err(format(format!(
            "{} inclusion proofs; a receipt has one",
            inclusion.len()
        )));
    };
    let (item, rest) = cbor::decode(proof).map_err(format)?;
    if !rest.is_empty() {
        return Err(format("bytes after the inclusion proof"));
    }
    let Item::Array(fields) = item else {
        return Err(format("the inclusion proof is not an array"));
    };
    let [Item::Uint(size), Item::Uint(index), Item::Array(path)] = fields.as_slice() else {
        return Err(format(
            "the inclusion proof is not [tree_size, leaf_index, [hash...]]",
        ));
    };
    if path.len() > MAX_PATH {
        return Err(format(format!(
            "an inclusion path of {} hashes; at most {MAX_PATH}",
            path.len()
        )));
    }
    let path = path
        .iter()
        .map(|h| match h {
            Item::Bytes(b) => <merkle::Hash>::try_from(*b).ok(),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| format("an inclusion path hash is not 32 bytes"))?;
    Ok((*size, *index, path))
}

fn decode_claims(payload: &[u8]) -> Result<ReceiptClaims, ReceiptError> {
    let (item, rest) = cbor::decode(payload).map_err(format)?;
    let Item::Map(entries) = item else {
        return Err(format("the payload is not a CBOR map"));
    };
    if !rest.is_empty() {
        return Err(format("bytes after the payload's map"));
    }
    let get = |name: &str| -> Result<&Item<'_>, ReceiptError> {
        entries
            .iter()
            .find(|(k, _)| matches!(k, Item::Text(t) if *t == name))
            .map(|(_, v)| v)
            .ok_or_else(|| ReceiptError::Claim(format!("{name} is missing")))
    };
    let text = |name: &str| -> Result<String, ReceiptError> {
        match get(name)? {
            Item::Text(t) if t.len() <= MAX_NAME => Ok((*t).to_owned()),
            _ => Err(ReceiptError::Claim(format!("{name} is not a name"))),
        }
    };
    let digest = |name: &str| -> Result<[u8; 32], ReceiptError> {
        match get(name)? {
            Item::Bytes(b) => <[u8; 32]>::try_from(*b)
                .map_err(|_| ReceiptError::Claim(format!("{name} is not 32 bytes"))),
            _ => Err(ReceiptError::Claim(format!("{name} is not a byte string"))),
        }
    };
    let uint = |item: &Item<'_>, name: &str| -> Result<u64, ReceiptError> {
        match item {
            Item::Uint(v) => Ok(*v),
            _ => Err(ReceiptError::Claim(format!(
                "{name} is not an unsigned integer"
            ))),
        }
    };
    let time = entries
        .iter()
        .find(|(k, _)| *k == Item::Uint(CWT_IAT))
        .map(|(_, v)| uint(v, "iat (6)"))
        .ok_or_else(|| ReceiptError::Claim("iat (6) is missing".into()))??;
    match entries.iter().find(|(k, _)| *k == Item::Uint(CWT_CTI)) {
        Some((_, Item::Bytes(id))) if id.len() == 16 => {}
        Some(_) => return Err(ReceiptError::Claim("cti (7) is not 16 bytes".into())),
        None => return Err(ReceiptError::Claim("cti (7) is missing".into())),
    }
    let version = match get("version")? {
        Item::Uint(v) => i64::try_from(*v).ok(),
        Item::Neg(v) => i64::try_from(*v).ok().map(|v| -1 - v),
        _ => None,
    }
    .ok_or_else(|| ReceiptError::Claim("version is not a 64-bit integer".into()))?;
    Ok(ReceiptClaims {
        model: text("model")?,
        version,
        model_sha256: digest("model-sha256")?,
        signature: text("signature")?,
        api: match text("api")?.as_str() {
            "grpc" => Api::Grpc,
            "rest" => Api::Rest,
            other => {
                return Err(ReceiptError::Claim(format!(
                    "api {other:?} is neither grpc nor rest"
                )))
            }
        },
        method: text("method")?,
        request_sha256: digest("request-sha256")?,
        response_sha256: digest("response-sha256")?,
        time,
        counter: uint(get("counter")?, "counter")?,
        attestation_sha256: digest("attestation-sha256")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> ReceiptClaims {
        ReceiptClaims {
            model: "digits".into(),
            version: 2,
            model_sha256: [9; 32],
            signature: "serving_default".into(),
            api: Api::Grpc,
            method: "Predict".into(),
            request_sha256: [1; 32],
            response_sha256: [2; 32],
            time: 1_796_000_000,
            counter: 41,
            attestation_sha256: [3; 32],
        }
    }

    #[test]
    fn a_receipt_verifies_under_its_key_only_and_every_changed_byte_is_refused() {
        let signer = ReceiptSigner::generate().unwrap();
        let r = signer.sign(&claims());
        assert_eq!(verify(&r, &signer.public_key()).unwrap(), claims());
        let other = ReceiptSigner::generate().unwrap();
        assert_eq!(
            verify(&r, &other.public_key()),
            Err(ReceiptError::Signature)
        );
        for i in 0..r.len() {
            let mut bad = r.clone();
            bad[i] ^= 0x01;
            assert!(verify(&bad, &signer.public_key()).is_err(), "byte {i}");
        }
        for cut in 0..r.len() {
            assert!(verify(&r[..cut], &signer.public_key()).is_err(), "{cut}");
        }
        let mut long = r.clone();
        long.push(0);
        assert!(verify(&long, &signer.public_key()).is_err());
    }

    #[test]
    fn oversized_and_foreign_structures_are_refused_with_the_reason() {
        let signer = ReceiptSigner::generate().unwrap();
        let big = vec![0u8; MAX_RECEIPT_BYTES + 1];
        assert!(matches!(
            verify(&big, &signer.public_key()),
            Err(ReceiptError::Format(m)) if m.contains("at most")
        ));
        // The same receipt with its tag written in two bytes (d8 12) instead of one (d2): the
        // same CBOR value, another byte string.
        let r = signer.sign(&claims());
        let longer = [&[0xd8, 0x12][..], &r[1..]].concat();
        assert!(matches!(
            verify(&longer, &signer.public_key()),
            Err(ReceiptError::Format(m)) if m.contains("shortest CBOR form")
        ));
        // An untagged array, as some COSE libraries write.
        assert!(matches!(
            verify(&r[1..], &signer.public_key()),
            Err(ReceiptError::Format(m)) if m.contains("tag 18")
        ));
    }

    #[test]
    fn a_batch_has_one_signature_and_each_receipt_proves_only_its_own_claims() {
        let signer = ReceiptSigner::generate().unwrap();
        for n in [1usize, 2, 3, 7, 33] {
            let batch: Vec<ReceiptClaims> = (0..n)
                .map(|i| ReceiptClaims {
                    counter: i as u64,
                    request_sha256: [i as u8; 32],
                    ..claims()
                })
                .collect();
            let receipts = signer.sign_batch(&batch);
            assert_eq!(receipts.len(), n);
            let sigs: std::collections::BTreeSet<&[u8]> =
                receipts.iter().map(|r| &r[r.len() - 64..]).collect();
            assert_eq!(sigs.len(), 1, "one signature for the batch of {n}");
            for (r, c) in receipts.iter().zip(&batch) {
                assert_eq!(&verify(r, &signer.public_key()).unwrap(), c);
            }
        }
        // A receipt's proof with another receipt's claims (same batch, same signature).
        let batch = [
            claims(),
            ReceiptClaims {
                counter: 42,
                ..claims()
            },
        ];
        let receipts = signer.sign_batch(&batch);
        let other_payload = encode_claims(&batch[1], &signer.cti(42, &batch[1].request_sha256));
        let mine = encode_claims(&batch[0], &signer.cti(41, &batch[0].request_sha256));
        let at = receipts[0]
            .windows(mine.len())
            .position(|w| w == mine.as_slice())
            .unwrap();
        let mut swapped = receipts[0].clone();
        swapped[at..at + mine.len()].copy_from_slice(&other_payload);
        assert_eq!(
            verify(&swapped, &signer.public_key()),
            Err(ReceiptError::Signature)
        );
        // The same claims under two servers' keys: different leaves (an unpredictable cti).
        let other = ReceiptSigner::generate().unwrap();
        assert_ne!(
            encode_claims(&claims(), &signer.cti(41, &[1; 32])),
            encode_claims(&claims(), &other.cti(41, &[1; 32]))
        );
        // More than MAX_BATCH: signed in several trees, every receipt still verifies.
        let many = vec![claims(); MAX_BATCH + 3];
        let receipts = signer.sign_batch(&many);
        assert_eq!(receipts.len(), MAX_BATCH + 3);
        assert_eq!(
            verify(&receipts[MAX_BATCH + 2], &signer.public_key()).unwrap(),
            claims()
        );
    }

    #[test]
    fn negative_versions_and_counters_round_trip() {
        let signer = ReceiptSigner::generate().unwrap();
        let mut c = claims();
        c.version = -5;
        c.counter = u64::MAX;
        let r = signer.sign(&c);
        assert_eq!(verify(&r, &signer.public_key()).unwrap(), c);
        assert_eq!(signer.next_counter(), 0);
        assert_eq!(signer.next_counter(), 1);
    }

    #[test]
    fn the_api_is_signed_and_a_receipt_without_a_known_one_is_refused() {
        let signer = ReceiptSigner::generate().unwrap();
        let rest = ReceiptClaims {
            api: Api::Rest,
            ..claims()
        };
        let r = signer.sign(&rest);
        assert_eq!(verify(&r, &signer.public_key()).unwrap().api, Api::Rest);
        assert_ne!(
            r,
            signer.sign(&claims()),
            "the api is part of what is signed"
        );
        // Claims as another writer might make them: without the api, or with an unknown one.
        let payload = encode_claims(&claims(), &[0; 16]);
        let without = {
            let at = payload.windows(4).position(|w| w == b"\x63api").unwrap();
            let mut p = payload.clone();
            p.drain(at..at + 4 + 5);
            p[0] = 0xa0 | 11;
            p
        };
        assert!(matches!(
            decode_claims(&without),
            Err(ReceiptError::Claim(m)) if m == "api is missing"
        ));
        let unknown = {
            let mut p = payload.clone();
            let at = p.windows(5).position(|w| w == b"\x64grpc").unwrap();
            p[at + 1..at + 5].copy_from_slice(b"soap");
            p
        };
        assert!(matches!(
            decode_claims(&unknown),
            Err(ReceiptError::Claim(m)) if m.contains("\"soap\" is neither grpc nor rest")
        ));
        assert_eq!(decode_claims(&payload).unwrap(), claims());
    }
}
