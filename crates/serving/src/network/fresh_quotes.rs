//! Turns at making a fresh quote (`/v1/attestation?nonce=`), shared fairly between peers.
//!
//! A quote costs the TEE real work, so only [`MAX_FRESH_QUOTES`] are made at once. Who gets the
//! next one is decided per peer (an IPv4 address, or an IPv6 /64): each peer has at most one
//! request in the queue for the slots, and its other requests (at most [`PER_PEER`]) wait
//! behind that one. So a requester waits behind at most one request of every other peer, however
//! many each of them sends; a peer that asks faster than its share only makes its own requests
//! wait. A request that has not had its turn within [`MAX_WAIT`], or finds its peer's queue
//! full, is answered 429 with `Retry-After: `[`RETRY_AFTER`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Fresh quotes made at the same time.
pub(crate) const MAX_FRESH_QUOTES: usize = 2;
/// Requests with a nonce one peer may have waiting or being quoted at once.
pub(crate) const PER_PEER: usize = 4;
/// How long a request with a nonce waits for its turn before it is answered 429.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(5);
/// The `Retry-After` of a 429, seconds.
pub(crate) const RETRY_AFTER: u64 = 1;
/// Peers tracked at once (each with a request waiting or being quoted); beyond, a new peer
/// is answered 429. Bounds the table whatever the number of addresses an attacker has.
const MAX_PEERS: usize = 4096;

pub(crate) use crate::api::shares::PeerKey;

/// Why a request did not get a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoTurn {
    /// Its peer already has [`PER_PEER`] requests waiting or being quoted.
    PeerFull,
    /// It waited [`MAX_WAIT`] (or [`MAX_PEERS`] other peers are waiting).
    Waited,
}

/// The queue for fresh quotes.
#[derive(Debug)]
pub(crate) struct FreshQuotes {
    slots: Arc<Semaphore>,
    peers: Mutex<HashMap<PeerKey, Peer>>,
    max_wait: Duration,
}

/// One peer's requests: how many are waiting or being quoted, and its one place in the queue
/// for the slots.
#[derive(Debug)]
struct Peer {
    requests: usize,
    turn: Arc<Semaphore>,
}

/// A turn at quoting; the slot is given back when dropped.
#[derive(Debug)]
pub(crate) struct Turn {
    _slot: OwnedSemaphorePermit,
    _turn: OwnedSemaphorePermit,
    _counted: Counted,
}

/// A request counted in its peer's [`Peer::requests`] until dropped.
#[derive(Debug)]
struct Counted {
    queue: Arc<FreshQuotes>,
    key: PeerKey,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut peers = self.queue.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = peers.get_mut(&self.key) {
            p.requests -= 1;
            if p.requests == 0 {
                peers.remove(&self.key);
            }
        }
    }
}

impl FreshQuotes {
    /// An empty queue with [`MAX_FRESH_QUOTES`] slots.
    pub(crate) fn new() -> Arc<Self> {
        Self::waiting_at_most(MAX_WAIT)
    }

    fn waiting_at_most(max_wait: Duration) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(MAX_FRESH_QUOTES)),
            peers: Mutex::new(HashMap::new()),
            max_wait,
        })
    }

    /// Waits (at most [`MAX_WAIT`]) for a turn of the peer `key`.
    pub(crate) async fn turn(self: &Arc<Self>, key: PeerKey) -> Result<Turn, NoTurn> {
        let (counted, turn) = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            if !peers.contains_key(&key) && peers.len() >= MAX_PEERS {
                return Err(NoTurn::Waited);
            }
            let p = peers.entry(key).or_insert_with(|| Peer {
                requests: 0,
                turn: Arc::new(Semaphore::new(1)),
            });
            if p.requests >= PER_PEER {
                return Err(NoTurn::PeerFull);
            }
            p.requests += 1;
            (
                Counted {
                    queue: self.clone(),
                    key,
                },
                p.turn.clone(),
            )
        };
        // The peer's own queue first, then the shared one, where it holds one place at most.
        // Both queues are first come, first served.
        let wait = async {
            let turn = turn.acquire_owned().await.ok()?;
            let slot = self.slots.clone().acquire_owned().await.ok()?;
            Some((turn, slot))
        };
        match tokio::time::timeout(self.max_wait, wait).await {
            Ok(Some((turn, slot))) => Ok(Turn {
                _slot: slot,
                _turn: turn,
                _counted: counted,
            }),
            _ => Err(NoTurn::Waited),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: &str) -> PeerKey {
        PeerKey::of(Some(ip.parse().unwrap()))
    }

    #[tokio::test]
    async fn a_peer_waits_behind_one_request_of_each_other_peer() {
        let q = FreshQuotes::new();
        // Two flooding peers fill both slots and queue more behind them.
        let a1 = q.turn(key("10.0.0.1")).await.unwrap();
        let b1 = q.turn(key("10.0.0.2")).await.unwrap();
        let q2 = q.clone();
        let a2 = tokio::spawn(async move { q2.turn(key("10.0.0.1")).await });
        let q3 = q.clone();
        let a3 = tokio::spawn(async move { q3.turn(key("10.0.0.1")).await });
        tokio::task::yield_now().await;
        // A newcomer is next once a slot frees, ahead of the flooder's queued requests.
        let q4 = q.clone();
        let c = tokio::spawn(async move { q4.turn(key("10.0.0.3")).await });
        tokio::task::yield_now().await;
        drop(b1);
        let c = c.await.unwrap().unwrap();
        assert!(!a2.is_finished() && !a3.is_finished());
        drop((a1, c));
        assert!(a2.await.unwrap().is_ok());
        assert!(a3.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_peer_over_its_share_or_waiting_too_long_gets_no_turn() {
        let q = FreshQuotes::waiting_at_most(Duration::from_millis(200));
        let mut held = Vec::new();
        held.push(q.turn(key("10.0.0.1")).await.unwrap());
        held.push(q.turn(key("10.0.0.2")).await.unwrap());
        let mut waiting = Vec::new();
        for _ in 1..PER_PEER {
            let q = q.clone();
            waiting.push(tokio::spawn(async move { q.turn(key("10.0.0.1")).await }));
        }
        tokio::task::yield_now().await;
        assert_eq!(q.turn(key("10.0.0.1")).await.unwrap_err(), NoTurn::PeerFull);
        for w in waiting {
            assert_eq!(w.await.unwrap().unwrap_err(), NoTurn::Waited);
        }
        drop(held);
        // Nothing is left counted.
        assert!(q.peers.lock().unwrap().is_empty());
    }
}
