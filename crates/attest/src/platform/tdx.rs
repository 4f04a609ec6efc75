//! TDX quotes through Linux configfs-tsm (Documentation/ABI/testing/configfs-tsm): create a
//! report entry, write `inblob`, read `outblob`, check `generation` and `provider`, remove it.

use std::path::{Path, PathBuf};

use super::{Platform, PlatformError};
use crate::quote::MAX_QUOTE_SIZE;

/// The default configfs-tsm report directory.
pub const DEFAULT_ROOT: &str = "/sys/kernel/config/tsm/report";
/// The provider name of the TDX guest driver.
pub const TDX_PROVIDER: &str = "tdx_guest";

/// Evidence from a TDX guest.
#[derive(Debug, Clone)]
pub struct TdxPlatform {
    root: PathBuf,
}

struct Entry(PathBuf);

impl Drop for Entry {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir(&self.0) {
            tracing::debug!("configfs-tsm: could not remove {}: {e}", self.0.display());
        }
    }
}

impl TdxPlatform {
    /// Uses the configfs-tsm report directory `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    fn io(&self, path: &Path, reason: impl std::fmt::Display) -> PlatformError {
        PlatformError::Io {
            platform: "tdx",
            path: path.to_owned(),
            reason: reason.to_string(),
        }
    }

    fn entry(&self) -> Result<Entry, PlatformError> {
        if !self.root.is_dir() {
            return Err(self.io(&self.root, "configfs-tsm report directory not found (not a TDX guest, or configfs not mounted)"));
        }
        let name = format!("teeserve-{}-{}", std::process::id(), rand_suffix());
        let path = self.root.join(name);
        std::fs::create_dir(&path).map_err(|e| self.io(&path, e))?;
        Ok(Entry(path))
    }

    /// The provider configfs-tsm reports (`tdx_guest` in a TDX guest).
    pub fn provider(&self) -> Result<String, PlatformError> {
        let e = self.entry()?;
        read_small(&e.0.join("provider")).map_err(|r| self.io(&e.0.join("provider"), r))
    }
}

fn rand_suffix() -> String {
    let mut b = [0u8; 6];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    hex::encode(b)
}

/// configfs creates an entry's attribute files with the directory; this bounded wait only
/// matters for directories that imitate configfs in tests.
fn appear(path: &Path) {
    for _ in 0..200 {
        if path.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn read_small(path: &Path) -> Result<String, String> {
    appear(path);
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| e.to_string())
}

impl Platform for TdxPlatform {
    fn name(&self) -> &'static str {
        "tdx"
    }

    fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, PlatformError> {
        let e = self.entry()?;
        let provider =
            read_small(&e.0.join("provider")).map_err(|r| self.io(&e.0.join("provider"), r))?;
        if provider != TDX_PROVIDER {
            return Err(self.io(
                &e.0.join("provider"),
                format!("{provider:?} is not {TDX_PROVIDER:?}"),
            ));
        }
        let inblob = e.0.join("inblob");
        std::fs::write(&inblob, report_data).map_err(|r| self.io(&inblob, r))?;
        let outblob = e.0.join("outblob");
        appear(&outblob);
        let quote = std::fs::read(&outblob).map_err(|r| self.io(&outblob, r))?;
        // generation counts writes to the entry: anything but 1 means another writer raced us
        // and the outblob may not be over our inblob.
        let gen_path = e.0.join("generation");
        let generation = read_small(&gen_path).map_err(|r| self.io(&gen_path, r))?;
        if generation != "1" {
            return Err(self.io(
                &gen_path,
                format!("is {generation}, expected 1: the report entry was written concurrently"),
            ));
        }
        if quote.len() < 1020 {
            return Err(self.io(
                &outblob,
                format!(
                    "short read: {} bytes is smaller than any quote",
                    quote.len()
                ),
            ));
        }
        if quote.len() > MAX_QUOTE_SIZE {
            return Err(self.io(
                &outblob,
                format!("{} bytes is larger than any quote", quote.len()),
            ));
        }
        Ok(quote)
    }
}
