//! TF Serving's layout and version policy: a model's base path holds one directory per
//! version, named by its number, and the policy says which of them are served.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which versions of a model to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The newest N versions (default 1).
    Latest(usize),
    /// Every version.
    All,
    /// These versions.
    Specific(Vec<i64>),
}

impl VersionPolicy {
    /// The versions of `dirs` this policy aspires to serve, loading each with `load` (true when
    /// the version is available). `Latest(n)` walks down from the newest version until `n` are
    /// available, so a broken new version is reported in status while the previous one keeps
    /// serving (TF Serving's availability-preserving behaviour).
    pub(crate) fn aspire(
        &self,
        dirs: &BTreeMap<i64, PathBuf>,
        mut load: impl FnMut(i64, &Path) -> bool,
    ) -> Vec<i64> {
        let mut aspired = Vec::new();
        match self {
            VersionPolicy::Latest(n) => {
                let mut available = 0;
                for (v, dir) in dirs.iter().rev() {
                    if available >= *n {
                        break;
                    }
                    aspired.push(*v);
                    if load(*v, dir) {
                        available += 1;
                    }
                }
            }
            VersionPolicy::All => {
                for (v, dir) in dirs {
                    aspired.push(*v);
                    load(*v, dir);
                }
            }
            VersionPolicy::Specific(want) => {
                for v in want {
                    if let Some(dir) = dirs.get(v) {
                        aspired.push(*v);
                        load(*v, dir);
                    }
                }
            }
        }
        aspired
    }
}

/// The version directories under `base`: every subdirectory named by a number >= 0.
pub(crate) fn version_dirs(base: &Path) -> Result<BTreeMap<i64, PathBuf>, String> {
    let mut out = BTreeMap::new();
    let rd = std::fs::read_dir(base).map_err(|e| format!("{}: {e}", base.display()))?;
    for e in rd.flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        if let Some(v) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<i64>().ok())
        {
            if v >= 0 {
                out.insert(v, p);
            }
        }
    }
    Ok(out)
}
