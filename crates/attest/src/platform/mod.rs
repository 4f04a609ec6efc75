//! Evidence producers: where a quote over 64 bytes of report data comes from.
//!
//! - [`gramine::GraminePlatform`]: Gramine's `/dev/attestation` pseudo-files (SGX DCAP).
//! - [`tdx::TdxPlatform`]: Linux configfs-tsm (`/sys/kernel/config/tsm/report`) in a TDX guest.
//! - [`SimulatedPlatform`]: the simulated TEE of [`crate::sim`]; no protection.
//!
//! [`detect`] picks gramine or tdx; simulation is never chosen implicitly.

pub mod gramine;
pub mod tdx;

use std::path::{Path, PathBuf};

use crate::sim::{SimError, SimPlatform};

/// Why evidence could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// A file of the platform interface could not be used.
    #[error("{platform}: {path}: {reason}")]
    Io {
        /// The platform.
        platform: &'static str,
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The platform answered with something unusable.
    #[error("{platform}: {source}")]
    Invalid {
        /// The platform.
        platform: &'static str,
        /// What was wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A simulated-platform error.
    #[error(transparent)]
    Sim(#[from] SimError),
    /// No TEE interface was found.
    #[error("no TEE found: {0}")]
    NotFound(String),
}

/// A source of hardware (or simulated) evidence.
pub trait Platform: Send + Sync + std::fmt::Debug {
    /// `gramine`, `tdx` or `simulated`.
    fn name(&self) -> &'static str;
    /// A quote whose report data is `report_data`.
    fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, PlatformError>;
}

/// The simulated platform as a [`Platform`]: MRENCLAVE is the SHA-256 of the running binary.
#[derive(Debug)]
pub struct SimulatedPlatform(pub SimPlatform);

impl SimulatedPlatform {
    /// Opens the simulated platform in `dir`, measuring the running executable.
    pub fn open(dir: &Path) -> Result<Self, PlatformError> {
        let m = crate::sim::measure_self().map_err(|e| PlatformError::Io {
            platform: "simulated",
            path: PathBuf::from("/proc/self/exe"),
            reason: e.to_string(),
        })?;
        Ok(Self(SimPlatform::open(dir, m)?))
    }
}

impl Platform for SimulatedPlatform {
    fn name(&self) -> &'static str {
        "simulated"
    }

    fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, PlatformError> {
        Ok(self.0.quote(report_data)?)
    }
}

/// Where [`detect`] looks.
#[derive(Debug, Clone)]
pub struct DetectPaths {
    /// Gramine's attestation directory (default `/dev/attestation`).
    pub gramine: PathBuf,
    /// configfs-tsm's report directory (default `/sys/kernel/config/tsm/report`).
    pub tsm: PathBuf,
}

impl Default for DetectPaths {
    fn default() -> Self {
        Self {
            gramine: PathBuf::from(gramine::DEFAULT_ROOT),
            tsm: PathBuf::from(tdx::DEFAULT_ROOT),
        }
    }
}

/// Picks the platform this process runs on: gramine when `<gramine>/quote` exists, tdx when
/// configfs-tsm reports a `tdx_guest` provider. Never picks the simulated platform.
pub fn detect(paths: &DetectPaths) -> Result<Box<dyn Platform>, PlatformError> {
    if paths.gramine.join("quote").exists() {
        return Ok(Box::new(gramine::GraminePlatform::new(&paths.gramine)));
    }
    let tdx = tdx::TdxPlatform::new(&paths.tsm);
    let tdx_state = match tdx.provider() {
        Ok(p) if p == tdx::TDX_PROVIDER => return Ok(Box::new(tdx)),
        Ok(p) => format!("provider {p:?}, not {:?}", tdx::TDX_PROVIDER),
        Err(e) => e.to_string(),
    };
    Err(PlatformError::NotFound(format!(
        "looked for Gramine's {} (absent) and a TDX configfs-tsm provider at {} ({tdx_state}); \
         the simulated platform is only used when asked for with --platform simulated",
        paths.gramine.join("quote").display(),
        paths.tsm.display()
    )))
}
