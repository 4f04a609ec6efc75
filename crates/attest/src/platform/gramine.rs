//! Gramine's `/dev/attestation` (Gramine `libos/src/fs/dev/attestation.c`): write the 64 bytes
//! of report data to `user_report_data` in one write, then read `quote`, which Gramine makes
//! when the file is opened.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::{Platform, PlatformError};
use crate::quote::{Quote, MAX_QUOTE_SIZE};

/// The default root of Gramine's attestation files.
pub const DEFAULT_ROOT: &str = "/dev/attestation";
/// Gramine's `SGX_QUOTE_MAX_SIZE`.
pub const GRAMINE_QUOTE_MAX: usize = 8192;

/// Evidence from Gramine.
#[derive(Debug, Clone)]
pub struct GraminePlatform {
    root: PathBuf,
}

impl GraminePlatform {
    /// Uses the attestation files under `root` (normally `/dev/attestation`).
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    fn io(&self, name: &str, reason: impl std::fmt::Display) -> PlatformError {
        PlatformError::Io {
            platform: "gramine",
            path: self.root.join(name),
            reason: reason.to_string(),
        }
    }
}

impl Platform for GraminePlatform {
    fn name(&self) -> &'static str {
        "gramine"
    }

    fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, PlatformError> {
        if let Ok(kind) = std::fs::read_to_string(self.root.join("attestation_type")) {
            if kind.trim() != "dcap" {
                return Err(self.io(
                    "attestation_type",
                    format!(
                        "is {:?}; set sgx.remote_attestation = \"dcap\" in the manifest",
                        kind.trim()
                    ),
                ));
            }
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.root.join("user_report_data"))
            .map_err(|e| {
                self.io(
                    "user_report_data",
                    format!("{e} (not running under gramine-sgx?)"),
                )
            })?;
        let n = f
            .write(report_data)
            .map_err(|e| self.io("user_report_data", e))?;
        if n != 64 {
            return Err(self.io("user_report_data", format!("short write: {n} of 64 bytes")));
        }
        drop(f);
        let f = std::fs::File::open(self.root.join("quote")).map_err(|e| self.io("quote", e))?;
        let mut quote = Vec::new();
        f.take((MAX_QUOTE_SIZE + 1) as u64)
            .read_to_end(&mut quote)
            .map_err(|e| self.io("quote", e))?;
        if quote.len() > GRAMINE_QUOTE_MAX.max(MAX_QUOTE_SIZE) {
            return Err(self.io(
                "quote",
                format!("{} bytes is larger than any quote", quote.len()),
            ));
        }
        let parsed = Quote::parse(&quote).map_err(|e| {
            self.io(
                "quote",
                format!("short or malformed quote ({} bytes): {e}", quote.len()),
            )
        })?;
        if parsed.body.report_data() != report_data {
            return Err(self.io(
                "quote",
                "the quote's report data is not what was written to user_report_data (stale quote?)",
            ));
        }
        Ok(quote)
    }
}
