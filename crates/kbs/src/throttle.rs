//! A per-peer rate limit on refused requests.
//!
//! Anyone can open a TLS connection with a self-signed client certificate and ask for secrets
//! as fast as the broker answers. Such a peer is refused every time; without a limit, each
//! refusal costs an audit line, and a few peers can fill the disk. Each peer address gets a
//! token bucket that refusals draw from; a peer out of tokens is answered "too many requests"
//! and its refusals are only counted. Grants never draw from it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Peers tracked at once. A flood from many addresses cannot grow the table beyond this; a new
/// address that finds it full of recently refused peers is throttled from its first refusal.
const MAX_PEERS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets of refused requests, one per peer address.
#[derive(Debug, Default)]
pub(crate) struct RefusalLimiter {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RefusalLimiter {
    /// An empty limiter.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Takes a token for one refusal of `peer`; false when the peer has used its `per_sec`
    /// refusals per second (a burst of `per_sec` is allowed after a quiet second).
    pub(crate) fn allow(&self, peer: IpAddr, per_sec: u32, now: Instant) -> bool {
        let rate = f64::from(per_sec.max(1));
        let Ok(mut map) = self.buckets.lock() else {
            return false;
        };
        let refill = |b: &mut Bucket| {
            let secs = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens = (b.tokens + secs * rate).min(rate);
            b.last = now;
        };
        if !map.contains_key(&peer) && map.len() >= MAX_PEERS {
            // Peers whose bucket has refilled are not being limited; forget them.
            map.retain(|_, b| {
                refill(b);
                b.tokens < rate
            });
            if map.len() >= MAX_PEERS {
                return false;
            }
        }
        let b = map.entry(peer).or_insert(Bucket {
            tokens: rate,
            last: now,
        });
        refill(b);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let l = RefusalLimiter::new();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!((0..10).filter(|_| l.allow(a, 5, t0)).count(), 5);
        // Another peer has its own bucket.
        assert!(l.allow(b, 5, t0));
        // Two tokens back after 0.4 s at 5/s.
        let t1 = t0 + Duration::from_millis(400);
        assert_eq!((0..10).filter(|_| l.allow(a, 5, t1)).count(), 2);
        // Never more than the burst, however long the pause.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| l.allow(a, 5, t2)).count(), 5);
    }

    #[test]
    fn a_full_table_throttles_new_peers_and_forgets_quiet_ones() {
        let l = RefusalLimiter::new();
        let t0 = Instant::now();
        for i in 0..MAX_PEERS as u32 {
            assert!(l.allow(IpAddr::from(i.to_be_bytes()), 2, t0));
        }
        let new: IpAddr = "198.51.100.7".parse().unwrap();
        assert!(!l.allow(new, 2, t0));
        // A second later every old bucket is full again: they are forgotten, the new peer fits.
        assert!(l.allow(new, 2, t0 + Duration::from_secs(1)));
    }
}
