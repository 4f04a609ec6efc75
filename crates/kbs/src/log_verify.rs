//! Checking a signed audit log offline, and proving its entries: what `teeserve kbs log
//! verify` and `teeserve kbs log prove` run. Nothing here needs the broker or its signing key;
//! `verify` needs the verifier key (`log.key.pub`).
//!
//! `verify` recomputes the tree from the entries and checks every checkpoint: each must be
//! signed by the key; two checkpoints of one size must state one root (else the log forked);
//! the leaf hashes recorded beside the checkpoints must lead to each signed root (so they are
//! the hashes the broker signed); every entry must hash to its recorded leaf; and every entry
//! must be covered by a checkpoint. The first entry that fails is named, with what happened to
//! it: edited, deleted, moved, cut off the tail, or appended without a checkpoint.

use std::path::{Path, PathBuf};

use teeserve_ratls::tlog::checkpoint::Checkpoint;
use teeserve_ratls::tlog::merkle::{self, CompactTree, Hash};
use teeserve_ratls::tlog::note::VerifierKey;
use teeserve_ratls::tlog::proof::{ConsistencyProof, InclusionProof};

use crate::signed_log::{
    read_entries, read_records, record_leaves, sidecar_path, unverified_checkpoint, Record,
};

/// Why a log did not verify, or could not be read or proved.
#[derive(Debug, thiserror::Error)]
pub enum LogCheckError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The checkpoint file is malformed (a line that is not a record, leaf hashes that do not
    /// add up to the size its checkpoint states).
    #[error("{0}")]
    Checkpoints(String),
    /// A checkpoint is not signed by the key, or two checkpoints disagree.
    #[error("{0}")]
    Checkpoint(String),
    /// An entry does not match what was signed: the message names it (index from 0, and its
    /// line in the log) and says how.
    #[error("entry {index} (line {}): {reason}", index + 1)]
    Entry {
        /// The first entry that does not match.
        index: u64,
        /// What happened to it.
        reason: String,
    },
    /// What was asked cannot be proved from this log.
    #[error("{0}")]
    Prove(String),
}

/// What a verified log holds.
#[derive(Debug, Clone)]
pub struct LogSummary {
    /// Entries in the log (all covered by checkpoints).
    pub entries: u64,
    /// The tree size of the latest checkpoint (equal to `entries`).
    pub size: u64,
    /// Its root hash, hex.
    pub root: String,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// The latest signed checkpoint, as written.
    pub latest: String,
}

/// An audit log and its checkpoint file, read.
struct Files {
    log: PathBuf,
    sidecar: PathBuf,
    entries: Vec<Vec<u8>>,
    leaves: Vec<Hash>,
    records: Vec<(usize, Record)>,
}

fn read(log: &Path) -> Result<Files, LogCheckError> {
    let entries = read_entries(log).map_err(|e| LogCheckError::Io {
        path: log.to_owned(),
        source: e,
    })?;
    let sidecar = sidecar_path(log);
    if !sidecar.exists() {
        return Err(LogCheckError::Checkpoints(format!(
            "{} does not exist: {} is not a signed log (the broker signs it when kbs.toml has a [log] table)",
            sidecar.display(),
            log.display()
        )));
    }
    let records = read_records(&sidecar).map_err(LogCheckError::Checkpoints)?;
    let leaves = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
    Ok(Files {
        log: log.to_owned(),
        sidecar,
        entries,
        leaves,
        records,
    })
}

/// Verifies every record's checkpoint signature (on both cores: it is most of the work).
fn open_checkpoints(f: &Files, key: &VerifierKey) -> Result<Vec<Checkpoint>, LogCheckError> {
    let open = |chunk: &[(usize, Record)]| -> Result<Vec<Checkpoint>, LogCheckError> {
        chunk
            .iter()
            .map(|(line, r)| {
                let c = Checkpoint::open(&r.checkpoint, key).map_err(|e| {
                    LogCheckError::Checkpoint(format!(
                        "checkpoint at {} line {line} (tree size {}): {e}",
                        f.sidecar.display(),
                        r.size
                    ))
                })?;
                if c.size != r.size {
                    return Err(LogCheckError::Checkpoints(format!(
                        "{} line {line}: the record says size {} but its checkpoint {}",
                        f.sidecar.display(),
                        r.size,
                        c.size
                    )));
                }
                Ok(c)
            })
            .collect()
    };
    let half = f.records.len().div_ceil(2).max(1);
    let mut parts = Vec::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = f
            .records
            .chunks(half)
            .map(|c| s.spawn(move || open(c)))
            .collect();
        for h in handles {
            parts.push(h.join().unwrap_or_else(|_| {
                Err(LogCheckError::Checkpoint(
                    "checking checkpoints panicked".into(),
                ))
            }));
        }
    });
    let mut out = Vec::with_capacity(f.records.len());
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

/// The leaf hashes the checkpoint file records, after checking that they lead to every
/// signed root and that no two checkpoints of one size differ.
fn signed_leaves(f: &Files, checkpoints: &[Checkpoint]) -> Result<Vec<Hash>, LogCheckError> {
    let mut seen: std::collections::HashMap<u64, (usize, Hash)> = Default::default();
    let mut tree = CompactTree::new();
    let mut recorded = Vec::new();
    let mut prev: Option<(usize, u64)> = None;
    for ((line, r), c) in f.records.iter().zip(checkpoints) {
        if let Some((l0, root0)) = seen.get(&c.size) {
            if *root0 != c.root {
                return Err(LogCheckError::Checkpoint(format!(
                    "fork: the checkpoints at {} lines {l0} and {line} both state tree size {} with different roots ({} and {}): the broker signed two histories",
                    f.sidecar.display(),
                    c.size,
                    hex::encode(root0),
                    c.root_hex()
                )));
            }
        }
        seen.entry(c.size).or_insert((*line, c.root));
        if let Some((l0, s0)) = prev {
            if c.size < s0 {
                return Err(LogCheckError::Checkpoint(format!(
                    "the checkpoint at {} line {line} states tree size {}, smaller than line {l0}'s {s0}: checkpoints were reordered or a log rolled back",
                    f.sidecar.display(),
                    c.size
                )));
            }
        }
        prev = Some((*line, c.size));
        let leaves = record_leaves(r).map_err(|e| {
            LogCheckError::Checkpoints(format!("{} line {line}: {e}", f.sidecar.display()))
        })?;
        for l in leaves {
            tree.push(l);
            recorded.push(l);
        }
        if tree.size() != c.size || tree.root() != c.root {
            return Err(LogCheckError::Checkpoint(format!(
                "the checkpoint at {} line {line} (tree size {}) is not the tree of the leaf hashes recorded up to it ({} leaves): that file was edited, or the broker signed a tree that does not extend the previous one",
                f.sidecar.display(),
                c.size,
                tree.size()
            )));
        }
    }
    Ok(recorded)
}

/// What happened to entry `i`, whose hash is not the signed one.
fn diagnose(entries: &[Hash], signed: &[Hash], i: usize) -> String {
    let want = signed[i];
    if let Some(j) = entries.iter().skip(i + 1).position(|e| *e == want) {
        let j = i + 1 + j;
        if signed.get(j) == Some(&entries[i]) {
            return format!(
                "swapped with entry {j} (line {}): the log is reordered",
                j + 1
            );
        }
        return format!(
            "the entry signed here is now at line {}: the log is reordered",
            j + 1
        );
    }
    if signed.get(i + 1) == Some(&entries[i]) {
        return "deleted: the line here is the entry signed after it".into();
    }
    format!(
        "edited: the line hashes to {}, the signed entry to {}",
        hex::encode(entries[i]),
        hex::encode(want)
    )
}

/// Verifies the audit log at `log` (its checkpoints in `<log>.tlog`) with `key`.
pub fn verify_log(log: &Path, key: &VerifierKey) -> Result<LogSummary, LogCheckError> {
    let f = read(log)?;
    let checkpoints = open_checkpoints(&f, key)?;
    let Some(latest) = checkpoints.last() else {
        return Err(LogCheckError::Checkpoints(format!(
            "{} holds no checkpoint",
            f.sidecar.display()
        )));
    };
    let signed = signed_leaves(&f, &checkpoints)?;
    for (i, (e, s)) in f.leaves.iter().zip(&signed).enumerate() {
        if e != s {
            return Err(LogCheckError::Entry {
                index: i as u64,
                reason: diagnose(&f.leaves, &signed, i),
            });
        }
    }
    let n = f.leaves.len() as u64;
    if n < latest.size {
        return Err(LogCheckError::Entry {
            index: n,
            reason: format!(
                "missing: {} ends after {n} entries, but the checkpoint at {} line {} covers {}: the tail was cut off",
                f.log.display(),
                f.sidecar.display(),
                f.records.last().map(|r| r.0).unwrap_or_default(),
                latest.size
            ),
        });
    }
    if n > latest.size {
        return Err(LogCheckError::Entry {
            index: latest.size,
            reason: format!(
                "appended without a checkpoint: the latest checkpoint covers {} entries and {} holds {n}",
                latest.size,
                f.log.display()
            ),
        });
    }
    Ok(LogSummary {
        entries: n,
        size: latest.size,
        root: latest.root_hex(),
        checkpoints: checkpoints.len() as u64,
        latest: f
            .records
            .last()
            .map(|r| r.1.checkpoint.clone())
            .unwrap_or_default(),
    })
}

/// The latest checkpoint (unverified: `check-proof` verifies what it is given), after
/// checking that the entries reproduce its root.
fn latest(f: &Files) -> Result<(Checkpoint, &str), LogCheckError> {
    let (line, r) = f.records.last().ok_or_else(|| {
        LogCheckError::Prove(format!("{} holds no checkpoint", f.sidecar.display()))
    })?;
    let c = unverified_checkpoint(&r.checkpoint).map_err(|e| {
        LogCheckError::Checkpoints(format!("{} line {line}: {e}", f.sidecar.display()))
    })?;
    if c.size > f.leaves.len() as u64 || merkle::root(&f.leaves[..c.size as usize]) != c.root {
        return Err(LogCheckError::Prove(format!(
            "{} does not match its latest checkpoint (tree size {}): run `teeserve kbs log verify` to find the entry",
            f.log.display(),
            c.size
        )));
    }
    Ok((c, &r.checkpoint))
}

/// The inclusion proof of entry `index` against the log's latest checkpoint (C2SP tlog-proof
/// text, the entry in its extra line).
pub fn prove_inclusion(log: &Path, index: u64) -> Result<String, LogCheckError> {
    let f = read(log)?;
    let (c, signed) = latest(&f)?;
    if index >= c.size {
        return Err(LogCheckError::Prove(format!(
            "entry {index} is not covered by the latest checkpoint (tree size {})",
            c.size
        )));
    }
    let path = merkle::inclusion_proof(&f.leaves[..c.size as usize], index)
        .map_err(|e| LogCheckError::Prove(e.to_string()))?;
    Ok(InclusionProof {
        extra: Some(f.entries[index as usize].clone()),
        index,
        path,
        checkpoint: signed.to_owned(),
    }
    .to_text())
}

/// The consistency proof between the tree of the first `old_size` entries and the log's
/// latest checkpoint.
pub fn prove_consistency(log: &Path, old_size: u64) -> Result<String, LogCheckError> {
    let f = read(log)?;
    let (c, signed) = latest(&f)?;
    if old_size > c.size {
        return Err(LogCheckError::Prove(format!(
            "tree size {old_size} is larger than the latest checkpoint's {}",
            c.size
        )));
    }
    let leaves = &f.leaves[..c.size as usize];
    Ok(ConsistencyProof {
        old_size,
        old_root: merkle::root(&leaves[..old_size as usize]),
        path: merkle::consistency_proof(leaves, old_size)
            .map_err(|e| LogCheckError::Prove(e.to_string()))?,
        checkpoint: signed.to_owned(),
    }
    .to_text())
}
