//! Where a verifier gets collateral for a quote: a fixed bundle, or a PCCS with a cache.
//!
//! This sits above both [`crate::collateral`] (what collateral is, and fetching it) and
//! [`crate::verify`] (checking it): a source hands out collateral only once it is verified.

use std::sync::Arc;

use crate::collateral::pccs::{self, PccsClient};
use crate::collateral::{Collateral, CollateralError};
use crate::quote::Quote;
use crate::verify::{PreparedCollateral, Verdict, Verifier, VerifyError};

mod cache;
mod error;

pub use cache::{CacheKey, CollateralCache, DEFAULT_FAILURE_TTL_SECS};
pub use error::SourceError;

/// A source of verified collateral.
#[derive(Debug)]
pub enum CollateralSource {
    /// One bundle, verified once (its validity window is checked at each use).
    Bundle(Arc<PreparedCollateral>),
    /// A PCCS, with verified responses cached until their earliest nextUpdate.
    Pccs {
        /// The client.
        client: PccsClient,
        /// The cache.
        cache: CollateralCache,
    },
}

impl CollateralSource {
    /// A source serving one bundle, whose chains and signatures are checked now.
    pub fn bundle(verifier: &Verifier, c: &Collateral) -> Result<Self, VerifyError> {
        Ok(Self::Bundle(Arc::new(verifier.prepare_untimed(c)?)))
    }

    /// A source fetching from a PCCS.
    pub fn pccs(client: PccsClient) -> Self {
        Self::Pccs {
            client,
            cache: CollateralCache::new(),
        }
    }

    /// Verified collateral for `quote` at time `at`.
    pub fn for_quote(
        &self,
        verifier: &Verifier,
        quote: &Quote,
        at: i64,
    ) -> Result<Arc<PreparedCollateral>, SourceError> {
        match self {
            Self::Bundle(p) => Ok(p.clone()),
            Self::Pccs { client, cache } => {
                // Read before verification, so only good to find a cached entry: the quote is
                // verified against that entry's CRLs afterwards anyway.
                let (ca, fmspc) = pccs::platform_of(quote)?;
                let key = CacheKey {
                    fmspc,
                    ca: ca.to_owned(),
                    tee: quote.tee(),
                };
                if let Some(p) = cache.get(&key, at) {
                    return Ok(p);
                }
                // A miss costs requests to the PCCS: only a PCK certificate that chains to the
                // pinned root may choose which FMSPC and CA are fetched.
                verifier.check_pck_chain(quote)?;
                cache.get_or_prepare(key, at, verifier, || {
                    // The PCCS client runs its own small runtime; keep it off the caller's.
                    std::thread::scope(|s| {
                        s.spawn(|| client.fetch_for_quote(quote))
                            .join()
                            .unwrap_or_else(|_| {
                                Err(CollateralError::Fetch {
                                    url: format!("{client:?}"),
                                    reason: "fetch thread failed".into(),
                                })
                            })
                    })
                    .map_err(SourceError::from)
                })
            }
        }
    }

    /// Parses, fetches collateral for, and verifies a quote at `at`.
    pub fn verify(
        &self,
        verifier: &Verifier,
        quote: &[u8],
        at: i64,
    ) -> Result<Verdict, SourceError> {
        let q = Quote::parse(quote).map_err(VerifyError::from)?;
        let p = self.for_quote(verifier, &q, at)?;
        Ok(verifier.verify_parsed(&q, &p, at)?)
    }
}
