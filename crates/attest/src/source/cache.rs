//! A thread-safe cache of verified collateral, keyed by FMSPC, CA type and TEE, serving each
//! entry until the earliest `nextUpdate` / `notAfter` of its items. Failures (a fetch that
//! failed, collateral that did not verify) are remembered for a short while too, so that a
//! stream of quotes for one platform does not become a stream of requests to the PCCS.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::collateral::Collateral;
use crate::quote::Tee;
use crate::verify::{PreparedCollateral, Verifier};

use super::error::SourceError;

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

/// How long a failure is remembered, in seconds of verification time.
pub const DEFAULT_FAILURE_TTL_SECS: i64 = 30;

/// At most this many failures are remembered; beyond it the oldest are forgotten.
const MAX_FAILURES: usize = 1024;

/// Verified collateral shared between threads.
#[derive(Debug)]
pub struct CollateralCache {
    entries: Mutex<HashMap<CacheKey, Arc<PreparedCollateral>>>,
    /// Failures and the verification time until which they stand.
    failures: Mutex<HashMap<CacheKey, (i64, SourceError)>>,
    failure_ttl_secs: i64,
}

impl Default for CollateralCache {
    fn default() -> Self {
        Self::with_failure_ttl(DEFAULT_FAILURE_TTL_SECS)
    }
}

impl CollateralCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cache that remembers failures for `secs` seconds (0: not at all).
    pub fn with_failure_ttl(secs: i64) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            failure_ttl_secs: secs.max(0),
        }
    }

    fn failure(&self, key: &CacheKey, at: i64) -> Option<SourceError> {
        let mut map = self.failures.lock().ok()?;
        match map.get(key) {
            Some((until, e)) if at < *until => Some(e.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    fn remember_failure(&self, key: CacheKey, at: i64, e: &SourceError) {
        if self.failure_ttl_secs == 0 {
            return;
        }
        if let Ok(mut map) = self.failures.lock() {
            if map.len() >= MAX_FAILURES {
                map.retain(|_, (until, _)| at < *until);
                if map.len() >= MAX_FAILURES {
                    if let Some(oldest) = map
                        .iter()
                        .min_by_key(|(_, (until, _))| *until)
                        .map(|(k, _)| k.clone())
                    {
                        map.remove(&oldest);
                    }
                }
            }
            map.insert(key, (at.saturating_add(self.failure_ttl_secs), e.clone()));
        }
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

    /// Returns the cached entry, or verifies `fetch()`'s collateral and caches it. A failure
    /// (of the fetch or of the verification) is cached for the failure TTL and returned again,
    /// without fetching, to calls for the same key until then.
    pub fn get_or_prepare(
        &self,
        key: CacheKey,
        at: i64,
        verifier: &Verifier,
        fetch: impl FnOnce() -> Result<Collateral, SourceError>,
    ) -> Result<Arc<PreparedCollateral>, SourceError> {
        if let Some(p) = self.get(&key, at) {
            return Ok(p);
        }
        if let Some(e) = self.failure(&key, at) {
            return Err(e);
        }
        let prepared = fetch().and_then(|c| Ok(verifier.prepare(&c, at)?));
        match prepared {
            Ok(p) => {
                let p = Arc::new(p);
                if let Ok(mut map) = self.entries.lock() {
                    map.insert(key.clone(), p.clone());
                }
                if let Ok(mut f) = self.failures.lock() {
                    f.remove(&key);
                }
                Ok(p)
            }
            Err(e) => {
                self.remember_failure(key, at, &e);
                Err(e)
            }
        }
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
