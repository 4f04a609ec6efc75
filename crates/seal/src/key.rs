//! Sealing keys: raw 16- or 32-byte secrets that zeroize on drop and never print.

use std::path::Path;

use ring::rand::SecureRandom;
use zeroize::Zeroizing;

use crate::SealError;

/// A sealing key (16 bytes for Gramine's AES-128, 32 for teeserve's AES-256).
#[derive(Clone)]
pub struct SealKey(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealKey({} bytes, id {})", self.0.len(), self.id_hex())
    }
}

impl SealKey {
    /// Wraps raw key bytes (16 or 32).
    pub fn from_bytes(b: &[u8]) -> Result<Self, SealError> {
        if b.len() != 16 && b.len() != 32 {
            return Err(SealError::Key(format!(
                "{} bytes; a key is 16 or 32 raw bytes",
                b.len()
            )));
        }
        Ok(Self(Zeroizing::new(b.to_vec())))
    }

    /// A fresh random key of `size` bytes (16 or 32).
    pub fn generate(size: usize) -> Result<Self, SealError> {
        if size != 16 && size != 32 {
            return Err(SealError::Key(format!("size {size}; use 16 or 32")));
        }
        let mut b = Zeroizing::new(vec![0u8; size]);
        ring::rand::SystemRandom::new()
            .fill(&mut b)
            .map_err(|_| SealError::Key("no randomness".into()))?;
        Ok(Self(b))
    }

    /// Reads a key file: 16 or 32 raw bytes (Gramine's `wrap_key` format), or the same as hex text.
    pub fn from_file(path: &Path) -> Result<Self, SealError> {
        let raw = Zeroizing::new(
            std::fs::read(path)
                .map_err(|e| SealError::Key(format!("cannot read {}: {e}", path.display())))?,
        );
        Self::from_file_bytes(&raw).map_err(|e| SealError::Key(format!("{}: {e}", path.display())))
    }

    /// Interprets the content of a key file.
    pub fn from_file_bytes(raw: &[u8]) -> Result<Self, SealError> {
        if raw.len() == 16 || raw.len() == 32 {
            return Self::from_bytes(raw);
        }
        let text: Zeroizing<Vec<u8>> = Zeroizing::new(
            raw.iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect(),
        );
        if (text.len() == 32 || text.len() == 64) && text.iter().all(u8::is_ascii_hexdigit) {
            let b =
                Zeroizing::new(hex::decode(&*text).map_err(|_| SealError::Key("bad hex".into()))?);
            return Self::from_bytes(&b);
        }
        Err(SealError::Key(format!(
            "{} bytes is neither 16/32 raw bytes nor 32/64 hex characters",
            raw.len()
        )))
    }

    /// The raw key bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key's length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true (keys are 16 or 32 bytes); present for API completeness.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A 16-byte identifier that names the key without revealing it.
    pub fn id(&self) -> [u8; 16] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"teeserve key id v1\0");
        ctx.update(&self.0);
        let d = ctx.finish();
        let mut out = [0u8; 16];
        out.copy_from_slice(&d.as_ref()[..16]);
        out
    }

    /// [`SealKey::id`] as hex.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id())
    }
}
