//! A port's connections by peer, so that its places (`--max_connections`) are shared fairly:
//! when every place is taken, a newcomer whose peer holds at least two fewer connections than
//! another peer takes the place of one of that peer's connections. Of the peers holding the
//! most, the first with a connection to give gives it: one still in its TLS handshake (closed
//! at once), else one on which no request has begun or ended for [`RESTED_MS`]: with nothing in
//! progress first, then one whose answered responses are still being sent (a health `Watch`, a
//! large answer being read). That one is asked to close as at its idle timeout (HTTP/2 GOAWAY,
//! so that its peer knows which streams were not taken; a `Watch` ends), and cut soon after if
//! nothing is in progress on it, else once its responses have finished or the grace period is
//! over. A connection with a request being handled, or that has had one within [`RESTED_MS`]
//! (a client sending requests one after another on it), is not chosen. Newcomers still waiting
//! for a place count for their peer, so a burst of connections gets no more than connecting one
//! at a time; one that gives up waiting gives its victim back to the victim's peer's count.
//!
//! A peer is an IPv4 address or an IPv6 /64 ([`PeerKey`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::api::shares::PeerKey;
use crate::network::connection::{ConnectionState, Shed};

/// One open connection, as the port sees it.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Requests in progress on it (their handlers have not answered). Read when a place is
    /// chosen and when its idle timer fires, never waited on: a request that begins or ends
    /// wakes nothing.
    in_progress: AtomicUsize,
    /// Its responses.
    state: Arc<ConnectionState>,
    /// Set once its TLS handshake is done (at once without TLS).
    serving: AtomicBool,
    /// Told when the connection is to give its place to a newcomer.
    pub(crate) shed: Notify,
    /// Set once it has been chosen, so that it is not chosen twice.
    chosen: AtomicBool,
    /// When a request last began or ended on it, or it was accepted (milliseconds on
    /// [`clock`]).
    last_request: AtomicU64,
}

/// Milliseconds since the first call, for [`Slot::last_request`].
fn clock() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// How long a connection past its handshake must have had no request begin or end before it
/// may be chosen, milliseconds: a client that sends its requests one after another on a
/// kept-alive connection is never chosen between two of them (a request it has just sent
/// would be lost).
const RESTED_MS: u64 = 1_000;

impl Slot {
    /// The slot of a connection, with no request in progress.
    pub(crate) fn new(state: Arc<ConnectionState>) -> Arc<Self> {
        Arc::new(Self {
            in_progress: AtomicUsize::new(0),
            state,
            serving: AtomicBool::new(false),
            shed: Notify::new(),
            chosen: AtomicBool::new(false),
            last_request: AtomicU64::new(clock()),
        })
    }

    /// A request begins on it.
    pub(crate) fn begin(&self) {
        self.in_progress.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    /// A request that began on it ends (its handler has answered).
    pub(crate) fn end(&self) {
        self.touch();
        // Release: whoever reads the count as 0 also reads the time it ended.
        self.in_progress.fetch_sub(1, Ordering::Release);
    }

    fn touch(&self) {
        self.last_request.store(clock(), Ordering::Relaxed);
    }

    /// Marks its handshake done.
    pub(crate) fn serving(&self) {
        self.serving.store(true, Ordering::Relaxed);
    }

    /// Whether its handshake is done.
    pub(crate) fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    /// How readily it gives its place (lower first), or None while a request is handled on it
    /// or one began or ended within `rested_ms`.
    fn rank(&self, rested_ms: u64) -> Option<u8> {
        if !self.serving.load(Ordering::Relaxed) {
            return Some(0);
        }
        let since = clock().saturating_sub(self.last_request.load(Ordering::Relaxed));
        if self.in_progress.load(Ordering::Relaxed) > 0 || since < rested_ms {
            return None;
        }
        Some(if self.state.responses_open() == 0 {
            1
        } else {
            2
        })
    }
}

impl Shed for Slot {
    fn told(&self) -> &Notify {
        &self.shed
    }

    fn quiet(&self) -> bool {
        self.in_progress.load(Ordering::Relaxed) == 0 && self.state.responses_open() == 0
    }

    fn idle(&self) -> Option<Duration> {
        if self.in_progress.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = clock().saturating_sub(self.last_request.load(Ordering::Relaxed));
        Some(Duration::from_millis(since))
    }
}

/// One peer's connections, and its newcomers waiting for a place.
#[derive(Debug, Default)]
struct Conns {
    slots: Vec<Arc<Slot>>,
    waiting: usize,
}

impl Conns {
    /// Connections not already told to go, and newcomers on their way.
    fn live(&self) -> usize {
        self.waiting
            + self
                .slots
                .iter()
                .filter(|s| !s.chosen.load(Ordering::Relaxed))
                .count()
    }
}

/// The connections open on one port, by peer.
#[derive(Debug)]
pub(crate) struct PortPeers {
    peers: Mutex<HashMap<PeerKey, Conns>>,
    /// [`RESTED_MS`] (tests: less).
    rested_ms: u64,
}

impl Default for PortPeers {
    fn default() -> Self {
        Self {
            peers: Mutex::default(),
            rested_ms: RESTED_MS,
        }
    }
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
        if let Some(c) = peers.get_mut(&self.peer) {
            c.slots.retain(|s| !Arc::ptr_eq(s, &self.slot));
            if c.slots.is_empty() && c.waiting == 0 {
                peers.remove(&self.peer);
            }
        }
    }
}

/// A newcomer counted under its peer while it waits for the place given up for it.
#[derive(Debug)]
pub(crate) struct Waiting {
    port: Arc<PortPeers>,
    peer: PeerKey,
    /// The connection that gives its place; counted again for its peer if the newcomer gives
    /// up waiting (a connection slow to close would otherwise make its peer look smaller).
    victim: Option<Arc<Slot>>,
}

impl Waiting {
    /// The newcomer has its place.
    pub(crate) fn placed(mut self) {
        self.victim = None;
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(v) = self.victim.take() {
            v.chosen.store(false, Ordering::Relaxed);
        }
        let mut peers = self.port.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = peers.get_mut(&self.peer) {
            c.waiting = c.waiting.saturating_sub(1);
            if c.slots.is_empty() && c.waiting == 0 {
                peers.remove(&self.peer);
            }
        }
    }
}

impl PortPeers {
    /// Counts `slot` under `peer` for as long as the returned guard lives.
    pub(crate) fn count(self: &Arc<Self>, peer: PeerKey, slot: Arc<Slot>) -> Counted {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.entry(peer).or_default().slots.push(slot.clone());
        Counted {
            port: self.clone(),
            peer,
            slot,
        }
    }

    /// With every place taken: tells a connection of a peer holding at least two more than
    /// `peer` (the newcomer's, its waiting newcomers included) to give its place, and counts
    /// the newcomer under `peer` while it waits for it; None when no peer has one to give.
    pub(crate) fn shed_for(self: &Arc<Self>, peer: PeerKey) -> Option<Waiting> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let mine = peers.get(&peer).map_or(0, Conns::live);
        let mut holders: Vec<(usize, &Conns)> = peers
            .iter()
            .filter(|(p, _)| **p != peer)
            .map(|(_, c)| (c.live(), c))
            .filter(|(n, _)| *n >= mine + 2)
            .collect();
        holders.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
        let victim = holders.into_iter().find_map(|(_, c)| {
            // The readiest to go; of those, the newest.
            c.slots
                .iter()
                .rev()
                .filter(|s| !s.chosen.load(Ordering::Relaxed))
                .filter_map(|s| s.rank(self.rested_ms).map(|r| (r, s)))
                .min_by_key(|(r, _)| *r)
                .map(|(_, s)| s.clone())
        })?;
        victim.chosen.store(true, Ordering::Relaxed);
        victim.shed.notify_one();
        peers.entry(peer).or_default().waiting += 1;
        Some(Waiting {
            port: self.clone(),
            peer,
            victim: Some(victim),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: &str) -> PeerKey {
        PeerKey::of(Some(ip.parse().unwrap()))
    }

    /// A port whose connections may be chosen however recently they had a request.
    fn rested_port() -> Arc<PortPeers> {
        Arc::new(PortPeers {
            rested_ms: 0,
            ..Default::default()
        })
    }

    fn slot(serving: bool) -> Arc<Slot> {
        let state = ConnectionState::new("127.0.0.1:1".parse().unwrap());
        let s = Slot::new(state);
        if serving {
            s.serving();
        }
        s
    }

    #[test]
    fn a_newcomer_takes_the_place_of_a_connection_of_a_peer_holding_more() {
        let port = rested_port();
        let (hog, other) = (key("10.0.0.1"), key("10.0.0.2"));
        let mut slots = Vec::new();
        for serving in [true, false, true] {
            let s = slot(serving);
            let counted = port.count(hog, s.clone());
            slots.push((s, counted));
        }
        // The newest handles a request; of the other two, the one in its handshake goes first.
        slots[2].0.begin();
        let waiting = port.shed_for(other).expect("a place is given");
        assert!(slots[1].0.chosen.load(Ordering::Relaxed));
        assert!(!slots[0].0.chosen.load(Ordering::Relaxed));
        // The hog's own newcomer takes nobody's place.
        assert!(port.shed_for(hog).is_none());
        // The waiting newcomer counts: the hog (2) and the other peer (1) are about even.
        assert!(port.shed_for(other).is_none());
        drop(waiting);
        drop(slots);
        assert!(
            port.peers.lock().unwrap().is_empty(),
            "nothing left counted"
        );
    }

    #[test]
    fn a_burst_of_newcomers_gets_no_more_than_an_even_share() {
        let port = rested_port();
        let (a, b) = (key("10.0.0.1"), key("10.0.0.2"));
        let held: Vec<_> = (0..8)
            .map(|_| {
                let s = slot(true);
                port.count(a, s)
            })
            .collect();
        let given: Vec<_> = (0..8).map_while(|_| port.shed_for(b)).collect();
        assert_eq!(given.len(), 4, "8 places: each peer ends with 4");
        drop((held, given));
    }

    #[test]
    fn a_peer_whose_connections_all_handle_requests_keeps_them_and_another_gives() {
        let port = rested_port();
        let mut held = Vec::new();
        for _ in 0..4 {
            let s = slot(true);
            s.begin();
            held.push(port.count(key("10.0.0.1"), s));
        }
        for _ in 0..3 {
            let s = slot(true);
            held.push(port.count(key("10.0.0.3"), s));
        }
        let _w = port
            .shed_for(key("10.0.0.2"))
            .expect("the second holder gives one");
        let w = port.shed_for(key("10.0.0.4")).expect("and another");
        assert!(
            port.shed_for(key("10.0.0.5")).is_none(),
            "then none is left to give"
        );
        // A newcomer that gives up waiting: its victim counts for its peer again.
        drop(w);
        assert!(port.shed_for(key("10.0.0.5")).is_some());
    }
}
