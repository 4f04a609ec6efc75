//! Why a source could not hand out verified collateral.

use crate::collateral::CollateralError;
use crate::verify::VerifyError;

/// Why collateral could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// It did not verify.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// It could not be fetched.
    #[error(transparent)]
    Fetch(#[from] CollateralError),
}
