//! Proofs as text, verifiable offline with the log's verifier key.
//!
//! An inclusion proof is C2SP tlog-proof (<https://c2sp.org/tlog-proof>, v1):
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! extra <base64 of the entry>          (optional; teeserve puts the logged entry here)
//! index <entry index>
//! <base64 hash>                        (the audit path, the leaf's sibling first)
//! ...
//!
//! <the signed checkpoint, verbatim>
//! ```
//!
//! A consistency proof has no C2SP format; teeserve writes the same shape:
//!
//! ```text
//! teeserve/tlog-consistency@v1
//! old <old tree size> <base64 old root hash>
//! <base64 hash>                        (RFC 9162 section 2.1.4.1 PROOF, in order)
//! ...
//!
//! <the signed checkpoint of the newer tree, verbatim>
//! ```

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::checkpoint::Checkpoint;
use super::merkle::{self, Hash};
use super::note::VerifierKey;
use super::TlogError;

/// The first line of an inclusion proof.
pub const INCLUSION_HEADER: &str = "c2sp.org/tlog-proof@v1";
/// The first line of a consistency proof.
pub const CONSISTENCY_HEADER: &str = "teeserve/tlog-consistency@v1";

/// The longest proof text read (a path of 64 hashes, a checkpoint with a few signatures and an
/// entry of some kilobytes fit many times over).
pub const MAX_PROOF_TEXT: usize = 256 * 1024;

fn malformed(what: &'static str, reason: impl Into<String>) -> TlogError {
    TlogError::Malformed {
        what,
        reason: reason.into(),
    }
}

fn hash_line(what: &'static str, line: &str) -> Result<Hash, TlogError> {
    STANDARD
        .decode(line)
        .ok()
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| malformed(what, format!("{line:?} is not a 32-byte base64 hash")))
}

fn decimal(what: &'static str, s: &str) -> Result<u64, TlogError> {
    let ok =
        !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    s.parse().ok().filter(|_| ok).ok_or_else(|| {
        malformed(
            what,
            format!("{s:?} is not a decimal number without leading zeros"),
        )
    })
}

/// Splits a proof text into its head lines and the checkpoint after the first blank line.
fn split_text<'a>(
    what: &'static str,
    text: &'a str,
    header: &str,
) -> Result<(Vec<&'a str>, &'a str), TlogError> {
    if text.len() > MAX_PROOF_TEXT {
        return Err(malformed(
            what,
            format!("{} bytes is more than {MAX_PROOF_TEXT}", text.len()),
        ));
    }
    let (head, checkpoint) = text
        .split_once("\n\n")
        .ok_or_else(|| malformed(what, "no blank line before the checkpoint"))?;
    let mut lines = head.split('\n');
    if lines.next() != Some(header) {
        return Err(malformed(what, format!("the first line is not {header}")));
    }
    Ok((lines.collect(), checkpoint))
}

/// An inclusion proof in C2SP tlog-proof form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// Opaque extra data; teeserve's key broker puts the logged entry here, so the proof
    /// carries what it proves.
    pub extra: Option<Vec<u8>>,
    /// The entry's index (from 0).
    pub index: u64,
    /// The audit path, the leaf's sibling first.
    pub path: Vec<Hash>,
    /// The signed checkpoint the path leads to, verbatim.
    pub checkpoint: String,
}

impl InclusionProof {
    /// The proof as text.
    pub fn to_text(&self) -> String {
        let mut s = format!("{INCLUSION_HEADER}\n");
        if let Some(e) = &self.extra {
            s.push_str(&format!("extra {}\n", STANDARD.encode(e)));
        }
        s.push_str(&format!("index {}\n", self.index));
        for h in &self.path {
            s.push_str(&STANDARD.encode(h));
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.checkpoint);
        s
    }

    /// Reads a proof text.
    pub fn parse(text: &str) -> Result<Self, TlogError> {
        const WHAT: &str = "inclusion proof";
        let (lines, checkpoint) = split_text(WHAT, text, INCLUSION_HEADER)?;
        let mut lines = lines.into_iter().peekable();
        let mut extra = None;
        if let Some(e) = lines.peek().and_then(|l| l.strip_prefix("extra ")) {
            extra = Some(
                STANDARD
                    .decode(e)
                    .map_err(|_| malformed(WHAT, "the extra line is not base64"))?,
            );
            lines.next();
        }
        let index = lines
            .next()
            .and_then(|l| l.strip_prefix("index "))
            .ok_or_else(|| malformed(WHAT, "no index line"))?;
        let index = decimal(WHAT, index)?;
        let path = lines
            .map(|l| hash_line(WHAT, l))
            .collect::<Result<Vec<_>, _>>()?;
        if path.len() > 64 {
            return Err(malformed(WHAT, "more than 64 hashes"));
        }
        Ok(Self {
            extra,
            index,
            path,
            checkpoint: checkpoint.to_owned(),
        })
    }

    /// Verifies the proof with the log's key: the checkpoint is signed by `key`, and `entry`
    /// (the proof's extra data when None) is entry [`InclusionProof::index`] of its tree.
    /// Returns the checkpoint.
    pub fn verify(&self, key: &VerifierKey, entry: Option<&[u8]>) -> Result<Checkpoint, TlogError> {
        let c = Checkpoint::open(&self.checkpoint, key)?;
        let entry = entry.or(self.extra.as_deref()).ok_or_else(|| {
            TlogError::Proof("no entry: the proof carries none and none was given".into())
        })?;
        merkle::verify_inclusion(
            self.index,
            c.size,
            &merkle::leaf_hash(entry),
            &self.path,
            &c.root,
        )?;
        Ok(c)
    }
}

/// A consistency proof between an older tree (size and root) and a signed newer checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyProof {
    /// The older tree's size.
    pub old_size: u64,
    /// The older tree's root hash.
    pub old_root: Hash,
    /// The proof's hashes (RFC 9162 section 2.1.4.1).
    pub path: Vec<Hash>,
    /// The signed checkpoint of the newer tree, verbatim.
    pub checkpoint: String,
}

impl ConsistencyProof {
    /// The proof as text.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{CONSISTENCY_HEADER}\nold {} {}\n",
            self.old_size,
            STANDARD.encode(self.old_root)
        );
        for h in &self.path {
            s.push_str(&STANDARD.encode(h));
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.checkpoint);
        s
    }

    /// Reads a proof text.
    pub fn parse(text: &str) -> Result<Self, TlogError> {
        const WHAT: &str = "consistency proof";
        let (lines, checkpoint) = split_text(WHAT, text, CONSISTENCY_HEADER)?;
        let mut lines = lines.into_iter();
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .ok_or_else(|| malformed(WHAT, "no old line"))?;
        let (size, root) = old
            .split_once(' ')
            .ok_or_else(|| malformed(WHAT, "the old line is not `old <size> <root>`"))?;
        let path = lines
            .map(|l| hash_line(WHAT, l))
            .collect::<Result<Vec<_>, _>>()?;
        if path.len() > 128 {
            return Err(malformed(WHAT, "more than 128 hashes"));
        }
        Ok(Self {
            old_size: decimal(WHAT, size)?,
            old_root: hash_line(WHAT, root)?,
            path,
            checkpoint: checkpoint.to_owned(),
        })
    }

    /// Verifies the proof with the log's key: the newer checkpoint is signed by `key` and the
    /// older tree is a prefix of it. Returns the newer checkpoint.
    pub fn verify(&self, key: &VerifierKey) -> Result<Checkpoint, TlogError> {
        let c = Checkpoint::open(&self.checkpoint, key)?;
        merkle::verify_consistency(self.old_size, c.size, &self.old_root, &c.root, &self.path)?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::super::merkle::{leaf_hash, CompactTree};
    use super::super::note::SigningKey;
    use super::*;

    #[test]
    fn proofs_round_trip_and_verify_only_what_they_prove() {
        let k = SigningKey::generate("teeserve.test/kbs").unwrap();
        let entries: Vec<String> = (0..6).map(|i| format!("{{\"n\":{i}}}")).collect();
        let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e.as_bytes())).collect();
        let mut t = CompactTree::new();
        for l in &leaves {
            t.push(*l);
        }
        let cp = Checkpoint {
            origin: "teeserve.test/kbs".into(),
            size: 6,
            root: t.root(),
        }
        .sign(&k)
        .unwrap();
        let p = InclusionProof {
            extra: Some(entries[2].clone().into_bytes()),
            index: 2,
            path: merkle::inclusion_proof(&leaves, 2).unwrap(),
            checkpoint: cp.clone(),
        };
        let text = p.to_text();
        assert!(text.starts_with("c2sp.org/tlog-proof@v1\nextra "));
        let back = InclusionProof::parse(&text).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.verify(&k.verifier(), None).unwrap().size, 6);
        assert!(back
            .verify(&k.verifier(), Some(entries[3].as_bytes()))
            .is_err());
        let mut moved = back.clone();
        moved.index = 3;
        assert!(moved.verify(&k.verifier(), None).is_err());
        let other = SigningKey::generate("teeserve.test/kbs").unwrap();
        assert!(back.verify(&other.verifier(), None).is_err());

        let c = ConsistencyProof {
            old_size: 4,
            old_root: merkle::root(&leaves[..4]),
            path: merkle::consistency_proof(&leaves, 4).unwrap(),
            checkpoint: cp,
        };
        let back = ConsistencyProof::parse(&c.to_text()).unwrap();
        assert_eq!(back, c);
        back.verify(&k.verifier()).unwrap();
        let mut forked = back.clone();
        forked.old_root = merkle::root(&leaves[1..5]);
        assert!(forked.verify(&k.verifier()).is_err());

        for bad in [
            "",
            "c2sp.org/tlog-proof@v1\nindex 01\n\nx",
            "c2sp.org/tlog-proof@v1\n\nx",
            "other\nindex 1\n\nx",
        ] {
            assert!(InclusionProof::parse(bad).is_err(), "{bad:?}");
        }
    }
}
