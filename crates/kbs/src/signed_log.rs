//! The audit log's files, and the Merkle tree over them.
//!
//! `audit.jsonl` keeps one JSON entry a line, as existing readers expect. When the log is
//! signed (`[log]` in kbs.toml), every entry is also a leaf of an RFC 9162 Merkle tree (the
//! leaf hash is `SHA-256(0x00 || line)`, the line without its newline), and beside the log,
//! `audit.jsonl.tlog` gets one JSON line per append:
//!
//! ```json
//! {"size":42,"leaves":["<hex leaf hash>"],"checkpoint":"<C2SP signed checkpoint>"}
//! ```
//!
//! `leaves` are the hashes of the entries appended since the previous record and `checkpoint`
//! is signed over the tree of all entries so far, so every entry is covered by a checkpoint as
//! soon as it is written. The recorded hashes let `verify` name the entry that was edited,
//! deleted or moved; the signed roots make the recorded hashes themselves trustworthy.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use teeserve_ratls::tlog::checkpoint::Checkpoint;
use teeserve_ratls::tlog::merkle::{self, CompactTree, Hash};
use teeserve_ratls::tlog::note::{SigningKey, VerifierKey};
use teeserve_ratls::tlog::proof::InclusionProof;

/// The checkpoint file beside `log`: `<log>.tlog`.
pub fn sidecar_path(log: &Path) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(".tlog");
    PathBuf::from(s)
}

/// One line of the checkpoint file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Record {
    /// The tree size the checkpoint states.
    pub(crate) size: u64,
    /// Hex leaf hashes of the entries appended since the previous record.
    pub(crate) leaves: Vec<String>,
    /// The signed checkpoint (C2SP tlog-checkpoint).
    pub(crate) checkpoint: String,
}

/// The entries of a log file, each line without its newline. A last line without a newline
/// (a write cut short) is an entry too.
pub(crate) fn read_entries(path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    if body.is_empty() && bytes.is_empty() {
        return Ok(Vec::new());
    }
    Ok(body.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect())
}

/// The records of a checkpoint file (none when it does not exist), each with its line number.
pub(crate) fn read_records(path: &Path) -> Result<Vec<(usize, Record)>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map(|r| (i + 1, r))
                .map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// Decodes a record's leaf hashes.
pub(crate) fn record_leaves(r: &Record) -> Result<Vec<Hash>, String> {
    r.leaves
        .iter()
        .map(|h| {
            hex::decode(h)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("leaf hash {h:?} is not 64 hex digits"))
        })
        .collect()
}

/// The body of a signed checkpoint, read without checking its signature.
pub(crate) fn unverified_checkpoint(signed: &str) -> Result<Checkpoint, String> {
    let body = signed
        .rfind("\n\n")
        .map(|i| &signed[..i + 1])
        .ok_or("the checkpoint is not a signed note")?;
    Checkpoint::parse_body(body).map_err(|e| e.to_string())
}

/// What opening a log found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Opened {
    /// Entries in the log.
    pub(crate) entries: u64,
    /// Entries after the latest checkpoint (a broker stopped between writing an entry and its
    /// checkpoint, a log that was not signed before, or lines appended by someone else); the
    /// next checkpoint covers them, and the start entry says how many there were.
    pub(crate) uncovered: u64,
}

struct Signed {
    sidecar: Arc<std::fs::File>,
    tree: CompactTree,
    key: SigningKey,
    /// Leaf hashes written to the log but not yet in a record.
    pending: Vec<Hash>,
}

/// The open files of an audit log, and its tree when it is signed.
pub(crate) struct LogFiles {
    entries: Arc<std::fs::File>,
    signed: Option<Signed>,
}

impl std::fmt::Debug for LogFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.signed {
            Some(s) => write!(f, "LogFiles(signed by {:?}, size {})", s.key, s.tree.size()),
            None => write!(f, "LogFiles(unsigned)"),
        }
    }
}

fn append_only(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

impl LogFiles {
    /// Opens (creating) the log at `path` for appending, signed with `key` when given. A
    /// signed log's entries must reproduce its latest checkpoint, which must verify with `key`:
    /// the broker does not sign on top of a log that was rewritten.
    pub(crate) fn open(path: &Path, key: Option<SigningKey>) -> Result<(Self, Opened), String> {
        let entries_file = append_only(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let entries = read_entries(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let ends_cut = std::fs::read(path)
            .map(|b| !b.is_empty() && !b.ends_with(b"\n"))
            .unwrap_or(false);
        if ends_cut {
            // A last line cut short stays an entry; the next one starts on its own line.
            (&entries_file)
                .write_all(b"\n")
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let n = entries.len() as u64;
        let Some(key) = key else {
            return Ok((
                Self {
                    entries: Arc::new(entries_file),
                    signed: None,
                },
                Opened {
                    entries: n,
                    uncovered: 0,
                },
            ));
        };
        let sidecar = sidecar_path(path);
        let leaves: Vec<Hash> = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
        let covered = latest_covered(&sidecar, &key.verifier(), &leaves, path)?;
        let mut tree = CompactTree::new();
        for l in &leaves {
            tree.push(*l);
        }
        let sidecar_file =
            append_only(&sidecar).map_err(|e| format!("{}: {e}", sidecar.display()))?;
        Ok((
            Self {
                entries: Arc::new(entries_file),
                signed: Some(Signed {
                    sidecar: Arc::new(sidecar_file),
                    tree,
                    key,
                    pending: leaves[covered as usize..].to_vec(),
                }),
            },
            Opened {
                entries: n,
                uncovered: n - covered,
            },
        ))
    }

    /// The verifier key of a signed log.
    pub(crate) fn verifier(&self) -> Option<VerifierKey> {
        self.signed.as_ref().map(|s| s.key.verifier())
    }

    /// The files to sync after an append.
    pub(crate) fn handles(&self) -> Vec<Arc<std::fs::File>> {
        let mut v = vec![self.entries.clone()];
        if let Some(s) = &self.signed {
            v.push(s.sidecar.clone());
        }
        v
    }

    /// Appends `lines` (JSON, no newline) and, when signed, their record with a checkpoint
    /// over the new tree. Returns the inclusion proof of the last line (C2SP tlog-proof text,
    /// the entry in its extra line) when signed. Not synced: see [`LogFiles::handles`].
    pub(crate) fn append(&mut self, lines: &[String]) -> std::io::Result<Option<String>> {
        let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        (&*self.entries).write_all(text.as_bytes())?;
        let Some(s) = self.signed.as_mut() else {
            return Ok(None);
        };
        // The lines are in the file: the tree follows it whatever happens next.
        let mut path = Vec::new();
        for l in lines {
            let leaf = merkle::leaf_hash(l.as_bytes());
            path = s.tree.push(leaf);
            s.pending.push(leaf);
        }
        let checkpoint = Checkpoint {
            origin: s.key.name().to_owned(),
            size: s.tree.size(),
            root: s.tree.root(),
        }
        .sign(&s.key)
        .map_err(std::io::Error::other)?;
        let record = Record {
            size: s.tree.size(),
            leaves: s.pending.iter().map(hex::encode).collect(),
            checkpoint: checkpoint.clone(),
        };
        let line = serde_json::to_string(&record).map_err(std::io::Error::other)? + "\n";
        (&*s.sidecar).write_all(line.as_bytes())?;
        s.pending.clear();
        Ok(lines.last().map(|last| {
            InclusionProof {
                extra: Some(last.as_bytes().to_vec()),
                index: s.tree.size() - 1,
                path,
                checkpoint,
            }
            .to_text()
        }))
    }
}

/// How many of `leaves` the latest checkpoint in `sidecar` covers, after checking that it
/// verifies with `key` and that the entries reproduce its root.
fn latest_covered(
    sidecar: &Path,
    key: &VerifierKey,
    leaves: &[Hash],
    log: &Path,
) -> Result<u64, String> {
    let records = read_records(sidecar)?;
    let Some((line, last)) = records.last() else {
        return Ok(0);
    };
    let c = Checkpoint::open(&last.checkpoint, key).map_err(|e| {
        format!(
            "{} line {line}: the latest checkpoint does not verify with [log].signing_key {} ({e}); a log signed by another key needs a new audit_log",
            sidecar.display(),
            key.label()
        )
    })?;
    if c.size > leaves.len() as u64 {
        return Err(format!(
            "{} has {} entries, fewer than its latest checkpoint's {} ({} line {line}): entries were deleted; run `teeserve kbs log verify`",
            log.display(),
            leaves.len(),
            c.size,
            sidecar.display()
        ));
    }
    if merkle::root(&leaves[..c.size as usize]) != c.root {
        return Err(format!(
            "{} does not match its latest checkpoint (tree size {}, {} line {line}): it was changed; run `teeserve kbs log verify` to find the entry",
            log.display(),
            c.size,
            sidecar.display()
        ));
    }
    Ok(c.size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_are_covered_and_a_reopened_log_continues_its_tree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let key = SigningKey::generate("teeserve.test/kbs").unwrap();
        let key_text = key.to_text();
        let vkey = key.verifier();
        let (mut files, opened) = LogFiles::open(&path, Some(key)).unwrap();
        assert_eq!(opened.entries, 0);
        assert!(files.append(&["{\"a\":1}".into()]).unwrap().is_some());
        let proof = files
            .append(&["{\"b\":2}".into(), "{\"c\":3}".into()])
            .unwrap()
            .unwrap();
        let p = InclusionProof::parse(&proof).unwrap();
        assert_eq!(p.index, 2);
        assert_eq!(p.verify(&vkey, None).unwrap().size, 3);
        drop(files);
        // Another key cannot continue the log.
        let other = SigningKey::generate("teeserve.test/kbs").unwrap();
        assert!(LogFiles::open(&path, Some(other))
            .unwrap_err()
            .contains("does not verify"));
        let records = read_records(&sidecar_path(&path)).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].1.leaves.len(), 2);
        // A line appended by hand is adopted by the next checkpoint, and counted.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"d\":4}\n")
            .unwrap();
        let (mut files, opened) =
            LogFiles::open(&path, Some(SigningKey::parse(&key_text).unwrap())).unwrap();
        assert_eq!((opened.entries, opened.uncovered), (4, 1));
        files.append(&["{\"e\":5}".into()]).unwrap();
        drop(files);
        let records = read_records(&sidecar_path(&path)).unwrap();
        assert_eq!(records[2].1.leaves.len(), 2);
        // Someone edits an entry while the broker is stopped: it does not sign on top.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"b\":2", "\"b\":3")).unwrap();
        let e = LogFiles::open(&path, Some(SigningKey::parse(&key_text).unwrap())).unwrap_err();
        assert!(e.contains("does not match its latest checkpoint"), "{e}");
    }
}
