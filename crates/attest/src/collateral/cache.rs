//! A thread-safe cache of verified collateral, keyed by FMSPC, CA type and TEE, serving each
//! entry until the earliest `nextUpdate` / `notAfter` of its items.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::quote::Tee;
use crate::verify::{PreparedCollateral, Verifier, VerifyError};

use super::Collateral;

/// The key of a cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// FMSPC, upper-case hex.
    pub fmspc: String,
    /// `platform` or `processor`.
    pub ca: String,
    /// The TEE.
    pub tee: Tee,
}

/// Verified collateral shared between threads.
#[derive(Debug, Default)]
pub struct CollateralCache {
    entries: Mutex<HashMap<CacheKey, Arc<PreparedCollateral>>>,
}

impl CollateralCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entry for `key` if it is valid at `at`.
    pub fn get(&self, key: &CacheKey, at: i64) -> Option<Arc<PreparedCollateral>> {
        let mut map = self.entries.lock().ok()?;
        match map.get(key) {
            Some(p) if at >= p.not_before() && at <= p.not_after() => Some(p.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Returns the cached entry, or verifies `fetch()`'s collateral and caches it.
    pub fn get_or_prepare<E>(
        &self,
        key: CacheKey,
        at: i64,
        verifier: &Verifier,
        fetch: impl FnOnce() -> Result<Collateral, E>,
    ) -> Result<Arc<PreparedCollateral>, E>
    where
        E: From<VerifyError>,
    {
        if let Some(p) = self.get(&key, at) {
            return Ok(p);
        }
        let c = fetch()?;
        let p = Arc::new(verifier.prepare(&c, at)?);
        if let Ok(mut map) = self.entries.lock() {
            map.insert(key, p.clone());
        }
        Ok(p)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
