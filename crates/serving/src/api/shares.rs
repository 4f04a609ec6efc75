//! Peers, and their shares of what all requesters share: no one peer may hold more than its
//! share of the places among the requests in flight or of their memory budget, so that one
//! requester (however many connections it opens) cannot take all of either from the others.
//!
//! A peer is an IPv4 address, or the /64 of an IPv6 address (one host commonly has a whole /64).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Whose share a request counts against: an IPv4 address, or the /64 of an IPv6 address;
/// `Unknown` for a request whose peer is not known (warmup replay, a test's core).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PeerKey {
    /// The peer is not known.
    #[default]
    Unknown,
    /// An IPv4 address.
    V4(u32),
    /// The first 64 bits of an IPv6 address.
    V6(u64),
}

impl PeerKey {
    /// The share of a peer at `ip` (an IPv4-mapped IPv6 address counts as the IPv4 one).
    pub fn of(ip: Option<IpAddr>) -> Self {
        match ip.map(|ip| ip.to_canonical()) {
            None => Self::Unknown,
            Some(IpAddr::V4(v4)) => Self::V4(u32::from(v4)),
            Some(IpAddr::V6(v6)) => Self::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

impl std::fmt::Display for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown => write!(f, "an unknown peer"),
            Self::V4(a) => write!(f, "{}", std::net::Ipv4Addr::from(*a)),
            Self::V6(p) => write!(f, "{}/64", std::net::Ipv6Addr::from(u128::from(*p) << 64)),
        }
    }
}

/// How much of one resource each peer holds, each at most `cap`. A peer is in the list only
/// while it holds some. Each holder has a request in flight, so the list is at most
/// `--max_in_flight` long, and usually a few entries: it is searched in order rather than
/// hashed (a hash map emptied and filled again on every request rehashed its tombstones every
/// few requests).
#[derive(Debug)]
pub(crate) struct PeerShares {
    cap: usize,
    held: Mutex<Vec<(PeerKey, usize)>>,
}

/// Units of a [`PeerShares`] that one peer holds; given back when dropped.
#[derive(Debug, Default)]
pub(crate) struct PeerHold {
    of: Option<(Arc<PeerShares>, PeerKey)>,
    units: usize,
}

impl PeerShares {
    /// Shares of at most `cap` units per peer.
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap,
            held: Mutex::new(Vec::new()),
        })
    }

    /// The most one peer may hold.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Takes `units` for `peer`, or gives back how many it already holds when that would take
    /// it past its share. A peer that is not known (the server's own requests, such as warmup
    /// replay) has no share to keep to.
    pub(crate) fn take(self: &Arc<Self>, peer: PeerKey, units: usize) -> Result<PeerHold, usize> {
        if units == 0 || peer == PeerKey::Unknown {
            return Ok(PeerHold::default());
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        match held.iter_mut().find(|(p, _)| *p == peer) {
            Some((_, now)) if now.saturating_add(units) > self.cap => return Err(*now),
            Some((_, now)) => *now += units,
            None if units > self.cap => return Err(0),
            None => held.push((peer, units)),
        }
        Ok(PeerHold {
            of: Some((self.clone(), peer)),
            units,
        })
    }
}

impl PeerHold {
    /// Adds another hold of the same peer and resource to this one.
    pub(crate) fn merge(&mut self, mut other: PeerHold) {
        if other.units == 0 {
            return;
        }
        if self.of.is_none() {
            std::mem::swap(self, &mut other);
            return;
        }
        debug_assert!(
            matches!((&self.of, &other.of), (Some((a, p)), Some((b, q))) if Arc::ptr_eq(a, b) && p == q)
        );
        self.units += other.units;
        // Counted once, in this hold.
        other.units = 0;
        other.of = None;
    }
}

impl Drop for PeerHold {
    fn drop(&mut self) {
        let Some((shares, peer)) = self.of.take() else {
            return;
        };
        let mut held = shares.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = held.iter().position(|(p, _)| *p == peer) {
            held[i].1 = held[i].1.saturating_sub(self.units);
            if held[i].1 == 0 {
                held.swap_remove(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: &str) -> PeerKey {
        PeerKey::of(Some(ip.parse().unwrap()))
    }

    #[test]
    fn ipv6_peers_share_by_64_and_mapped_ipv4_is_ipv4() {
        assert_eq!(key("2001:db8::1"), key("2001:db8::ffff:2"));
        assert_ne!(key("2001:db8::1"), key("2001:db8:0:1::1"));
        assert_eq!(key("::ffff:10.0.0.1"), key("10.0.0.1"));
        assert_ne!(key("10.0.0.1"), key("10.0.0.2"));
        assert_ne!(key("0.0.0.1"), key("::1"));
        assert_eq!(key("10.0.0.1").to_string(), "10.0.0.1");
        assert_eq!(key("2001:db8::1").to_string(), "2001:db8::/64");
    }

    #[test]
    fn a_peer_holds_at_most_its_share_and_gives_it_back() {
        let s = PeerShares::new(3);
        let (a, b) = (key("10.0.0.1"), key("10.0.0.2"));
        let mut first = s.take(a, 2).unwrap();
        assert_eq!(s.take(a, 2).unwrap_err(), 2);
        first.merge(s.take(a, 1).unwrap());
        assert_eq!(s.take(a, 1).unwrap_err(), 3);
        // Another peer has a share of its own.
        let other = s.take(b, 3).unwrap();
        drop(first);
        let again = s.take(a, 3).unwrap();
        drop((again, other));
        assert!(s.held.lock().unwrap().is_empty(), "nothing left counted");
    }
}
