//! A port's connections by peer, so that its places (`--max_connections`) are shared fairly:
//! when every place is taken, a newcomer whose peer holds fewer connections than the peer that
//! holds the most takes the place of one of that peer's connections that is serving no request
//! (one still in its TLS handshake first, else an idle one). One requester that opens every
//! place, however often it opens them again, then keeps out nobody else; peers that hold
//! about as many as each other keep theirs, and the newcomer is closed as before.
//!
//! A peer is an IPv4 address or an IPv6 /64 ([`PeerKey`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Notify};

use crate::api::shares::PeerKey;

/// One open connection, as the port sees it.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Requests in progress on it (a connection serving none may be shed).
    activity: Arc<watch::Sender<usize>>,
    /// Told when the connection is to close for a newcomer.
    pub(crate) shed: Notify,
    /// Set once it has been chosen, so that it is not chosen twice.
    chosen: AtomicBool,
}

impl Slot {
    /// A slot of a connection whose requests in progress `activity` counts.
    pub(crate) fn new(activity: Arc<watch::Sender<usize>>) -> Arc<Self> {
        Arc::new(Self {
            activity,
            shed: Notify::new(),
            chosen: AtomicBool::new(false),
        })
    }

    /// Whether the connection serves no request now.
    pub(crate) fn idle(&self) -> bool {
        *self.activity.borrow() == 0
    }

    /// Counts it again as a connection that may be chosen: it was told to close, but a request
    /// had begun on it since it was chosen, so it stays.
    pub(crate) fn stays(&self) {
        self.chosen.store(false, Ordering::Relaxed);
    }
}

/// The connections open on one port, by peer.
#[derive(Debug, Default)]
pub(crate) struct PortPeers {
    peers: Mutex<HashMap<PeerKey, Vec<Arc<Slot>>>>,
}

/// A connection counted under its peer until dropped.
#[derive(Debug)]
pub(crate) struct Counted {
    port: Arc<PortPeers>,
    peer: PeerKey,
    slot: Arc<Slot>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut peers = self.port.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slots) = peers.get_mut(&self.peer) {
            slots.retain(|s| !Arc::ptr_eq(s, &self.slot));
            if slots.is_empty() {
                peers.remove(&self.peer);
            }
        }
    }
}

impl PortPeers {
    /// Counts `slot` under `peer` for as long as the returned guard lives.
    pub(crate) fn count(self: &Arc<Self>, peer: PeerKey, slot: Arc<Slot>) -> Counted {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.entry(peer).or_default().push(slot.clone());
        Counted {
            port: self.clone(),
            peer,
            slot,
        }
    }

    /// With every place taken: tells one connection of the peer holding the most to close so
    /// that a newcomer of `peer` may have its place, if that peer holds at least two more than
    /// `peer` does and one of its connections serves no request. Whether one was told.
    pub(crate) fn shed_for(&self, peer: PeerKey) -> bool {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let mine = peers.get(&peer).map_or(0, |s| live(s));
        let Some(most) = peers
            .iter()
            .filter(|(p, _)| **p != peer)
            .max_by_key(|(_, s)| live(s))
            .map(|(_, s)| s)
        else {
            return false;
        };
        if live(most) < mine + 2 {
            return false;
        }
        // The newest first: a connection still in its handshake before one that has served.
        let victim = most
            .iter()
            .rev()
            .find(|s| !s.chosen.load(Ordering::Relaxed) && s.idle());
        match victim {
            Some(v) => {
                v.chosen.store(true, Ordering::Relaxed);
                v.shed.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Connections of a peer not already told to close.
fn live(slots: &[Arc<Slot>]) -> usize {
    slots
        .iter()
        .filter(|s| !s.chosen.load(Ordering::Relaxed))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: &str) -> PeerKey {
        PeerKey::of(Some(ip.parse().unwrap()))
    }

    fn slot() -> (Arc<Slot>, Arc<watch::Sender<usize>>) {
        let activity = Arc::new(watch::channel(0usize).0);
        (Slot::new(activity.clone()), activity)
    }

    #[test]
    fn a_newcomer_takes_the_place_of_an_idle_connection_of_the_peer_holding_the_most() {
        let port = Arc::new(PortPeers::default());
        let (hog, other) = (key("10.0.0.1"), key("10.0.0.2"));
        let mut held = Vec::new();
        let mut slots = Vec::new();
        for _ in 0..3 {
            let (s, a) = slot();
            held.push(port.count(hog, s.clone()));
            slots.push((s, a));
        }
        // The newest is busy: the one before it is chosen.
        slots[2].1.send_replace(1);
        assert!(port.shed_for(other));
        assert!(slots[1].0.chosen.load(Ordering::Relaxed));
        assert!(!slots[2].0.chosen.load(Ordering::Relaxed));
        // The hog's own newcomer takes nobody's place.
        assert!(!port.shed_for(hog));
        // Peers about even keep theirs: the hog now counts 2, the other 1 (once admitted).
        let (s, _a) = slot();
        let _o = port.count(other, s);
        assert!(!port.shed_for(other));
        // A connection closed is no longer counted.
        drop(held);
        assert_eq!(port.peers.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_peer_whose_connections_all_serve_requests_keeps_them() {
        let port = Arc::new(PortPeers::default());
        let mut held = Vec::new();
        for _ in 0..4 {
            let (s, a) = slot();
            a.send_replace(1);
            held.push((port.count(key("10.0.0.1"), s), a));
        }
        assert!(!port.shed_for(key("10.0.0.2")));
    }
}
