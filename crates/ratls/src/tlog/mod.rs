//! Transparency-log formats for the key broker's audit log and the grants a server carries in
//! its attestation document: the Merkle tree of RFC 9162 ([`merkle`]), C2SP signed notes with
//! Ed25519 ([`note`]), C2SP tlog-checkpoints ([`checkpoint`]), and proofs as text ([`proof`]:
//! C2SP tlog-proof for inclusion, the same shape for consistency).
//!
//! ```
//! use teeserve_ratls::tlog::{merkle, note::SigningKey, checkpoint::Checkpoint};
//! let key = SigningKey::generate("example.com/kbs").unwrap();
//! let mut tree = merkle::CompactTree::new();
//! let path = tree.push(merkle::leaf_hash(b"{\"decision\":\"granted\"}"));
//! let signed = Checkpoint { origin: "example.com/kbs".into(), size: tree.size(), root: tree.root() }
//!     .sign(&key)
//!     .unwrap();
//! let c = Checkpoint::open(&signed, &key.verifier()).unwrap();
//! merkle::verify_inclusion(0, c.size, &merkle::leaf_hash(b"{\"decision\":\"granted\"}"), &path, &c.root).unwrap();
//! ```

pub mod checkpoint;
pub mod merkle;
pub mod note;
pub mod proof;

/// Why a key, a note, a checkpoint or a proof was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlogError {
    /// The text is not of its format.
    #[error("{what}: {reason}")]
    Malformed {
        /// Which format.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A key is malformed or unusable.
    #[error("log key: {0}")]
    Key(String),
    /// No signature by the expected key verifies.
    #[error("signature: {0}")]
    Signature(String),
    /// A Merkle proof does not verify.
    #[error("proof: {0}")]
    Proof(String),
}

/// SHA-256 of `data`, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}
