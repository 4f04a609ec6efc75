//! Checkpoints (C2SP tlog-checkpoint, <https://c2sp.org/tlog-checkpoint>): a signed note whose
//! text is the log's origin, the tree size in decimal, and the base64 root hash, one per line.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::merkle::Hash;
use super::note::{self, SigningKey, VerifierKey};
use super::TlogError;

/// A log's tree head: its origin (the log's name), size and root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, the first line (and the signing key's name).
    pub origin: String,
    /// The number of entries.
    pub size: u64,
    /// The root hash of the tree of the first `size` entries (RFC 9162 section 2.1.1).
    pub root: Hash,
}

fn malformed(reason: impl Into<String>) -> TlogError {
    TlogError::Malformed {
        what: "checkpoint",
        reason: reason.into(),
    }
}

impl Checkpoint {
    /// The note text: `origin\nsize\nbase64(root)\n` (no extension lines, which the
    /// specification does not recommend).
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// Reads a note text: at least three lines; the size in decimal without leading zeros;
    /// the root 32 bytes of base64; extension lines, if any, non-empty (and ignored).
    pub fn parse_body(text: &str) -> Result<Self, TlogError> {
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| malformed("the text does not end in a newline"))?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(malformed(
                "fewer than three lines (origin, tree size, root hash)",
            ));
        };
        if origin.is_empty() {
            return Err(malformed("the origin line is empty"));
        }
        if lines.any(str::is_empty) {
            return Err(malformed("an extension line is empty"));
        }
        let ok_digits = !size.is_empty()
            && size.bytes().all(|c| c.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        let size: u64 = size.parse().ok().filter(|_| ok_digits).ok_or_else(|| {
            malformed(format!(
                "tree size {size:?} is not a decimal number without leading zeros"
            ))
        })?;
        let root: Hash = STANDARD
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| malformed(format!("root hash {root:?} is not 32 bytes of base64")))?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }

    /// Signs the checkpoint with `key` (whose name should be the origin).
    pub fn sign(&self, key: &SigningKey) -> Result<String, TlogError> {
        key.sign(&self.body())
    }

    /// Opens a signed checkpoint with `key`: its signature must verify, and its origin must be
    /// the key's name (C2SP tlog-checkpoint: "The log's key name in its signature line SHOULD
    /// match the origin line"; teeserve makes it a rule, so one key speaks for one log).
    pub fn open(signed: &str, key: &VerifierKey) -> Result<Self, TlogError> {
        let text = note::open(signed, key)?;
        let c = Self::parse_body(text)?;
        if c.origin != key.name() {
            return Err(TlogError::Signature(format!(
                "the checkpoint's origin {:?} is not the log {:?} that {} speaks for",
                c.origin,
                key.name(),
                key.label()
            )));
        }
        Ok(c)
    }

    /// The root hash in lower-case hex.
    pub fn root_hex(&self) -> String {
        hex::encode(self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_c2sp_example_body_and_refuses_bad_ones() {
        // C2SP tlog-checkpoint, the example at the top of the specification.
        let c = Checkpoint::parse_body(
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        )
        .unwrap();
        assert_eq!(c.origin, "example.com/behind-the-sofa");
        assert_eq!(c.size, 20852163);
        assert_eq!(
            c.body(),
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
        );
        for bad in [
            "o\n1\n",
            "\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n01\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n",
            "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=",
            "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n",
        ] {
            assert!(Checkpoint::parse_body(bad).is_err(), "{bad:?}");
        }
        assert!(Checkpoint::parse_body(
            "o\n0\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\next\n"
        )
        .is_ok());
    }

    #[test]
    fn a_signed_checkpoint_opens_only_with_its_log_key() {
        let k = SigningKey::generate("teeserve.test/kbs").unwrap();
        let c = Checkpoint {
            origin: "teeserve.test/kbs".into(),
            size: 3,
            root: [7; 32],
        };
        let signed = c.sign(&k).unwrap();
        assert_eq!(Checkpoint::open(&signed, &k.verifier()).unwrap(), c);
        let other = SigningKey::generate("teeserve.test/kbs").unwrap();
        assert!(Checkpoint::open(&signed, &other.verifier()).is_err());
        // Signed by the key, but for another origin.
        let wrong = Checkpoint {
            origin: "elsewhere".into(),
            ..c
        };
        let e = Checkpoint::open(&wrong.sign(&k).unwrap(), &k.verifier()).unwrap_err();
        assert!(e.to_string().contains("origin"), "{e}");
    }
}
