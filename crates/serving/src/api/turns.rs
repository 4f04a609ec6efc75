//! Places that waiting requests take in turns by peer: when every place is held, the next one
//! given back goes to the peer after the last one served, in the order the peers began to wait,
//! and each peer's own requests in the order they came. So one requester with many requests
//! waiting (a burst of heavy inferences) delays another's request by at most one of its own
//! per turn, not by all of them, as a first-come queue would.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::shares::PeerKey;

/// `n` places taken in turns by peer.
#[derive(Debug)]
pub(crate) struct FairPlaces {
    state: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    free: usize,
    /// Peers with requests waiting, in their turn's order, each with its requests in order.
    peers: VecDeque<(PeerKey, VecDeque<oneshot::Sender<Place>>)>,
}

/// A place held; given to the next in turn when dropped.
#[derive(Debug)]
pub(crate) struct Place(Option<Arc<FairPlaces>>);

/// The places are gone (the server is shutting down).
#[derive(Debug)]
pub(crate) struct Closed;

impl FairPlaces {
    /// `n` places (at least one).
    pub(crate) fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(Waiting {
                free: n.max(1),
                ..Default::default()
            }),
        })
    }

    /// Takes a place for `peer`, waiting for its turn when none is free. A request that stops
    /// waiting (dropped) leaves its turn to the next.
    pub(crate) async fn take(self: &Arc<Self>, peer: PeerKey) -> Result<Place, Closed> {
        let rx = {
            let mut w = self.state.lock().map_err(|_| Closed)?;
            if w.free > 0 && w.peers.is_empty() {
                w.free -= 1;
                return Ok(Place(Some(self.clone())));
            }
            let (tx, rx) = oneshot::channel();
            match w.peers.iter_mut().find(|(p, _)| *p == peer) {
                Some((_, q)) => {
                    // Requests of this peer that stopped waiting leave now, not at its turn:
                    // a peer that asks and cancels cannot grow its queue without bound.
                    q.retain(|t| !t.is_closed());
                    q.push_back(tx);
                }
                None => w.peers.push_back((peer, VecDeque::from([tx]))),
            }
            rx
        };
        // A place comes through the channel, so that one given to a request that stops waiting
        // before it reads it is passed on when the channel drops it.
        rx.await.map_err(|_| Closed)
    }

    /// A place if more than `keep` are free and nobody waits for one, without waiting.
    pub(crate) fn try_take_beyond(self: &Arc<Self>, keep: usize) -> Option<Place> {
        let mut w = self.state.lock().ok()?;
        if w.free > keep && w.peers.is_empty() {
            w.free -= 1;
            return Some(Place(Some(self.clone())));
        }
        None
    }

    /// A place given back: to the first waiting request of the next peer in turn that still
    /// waits, else free.
    fn give_back(self: &Arc<Self>) {
        let Ok(mut w) = self.state.lock() else {
            return;
        };
        while let Some((peer, mut queue)) = w.peers.pop_front() {
            let mut given = false;
            while let Some(tx) = queue.pop_front() {
                match tx.send(Place(Some(self.clone()))) {
                    Ok(()) => {
                        given = true;
                        break;
                    }
                    // That request stopped waiting: the place is still this one to give (taken
                    // out, so that dropping it does not give it back again).
                    Err(mut p) => drop(p.0.take()),
                }
            }
            if !queue.is_empty() {
                w.peers.push_back((peer, queue));
            }
            if given {
                return;
            }
        }
        w.free += 1;
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(places) = self.0.take() {
            places.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u32) -> PeerKey {
        PeerKey::V4(n)
    }

    /// One place; peer 1 holds it and has five more requests waiting when peer 2's one comes:
    /// peer 2 is served second, not sixth, and then peer 1's in their order.
    #[tokio::test]
    async fn a_peer_with_many_waiting_takes_turns_with_one_that_has_one() {
        let places = FairPlaces::new(1);
        let first = places.take(peer(1)).await.unwrap();
        let (tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        let mut waiting = Vec::new();
        for (who, n) in [(1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (2, 1)] {
            let (places, tx) = (places.clone(), tx.clone());
            waiting.push(tokio::spawn(async move {
                let p = places.take(peer(who)).await.unwrap();
                tx.send((who, n)).unwrap();
                tokio::task::yield_now().await;
                drop(p);
            }));
            // Each in line before the next.
            tokio::task::yield_now().await;
        }
        drop(first);
        for w in waiting {
            w.await.unwrap();
        }
        drop(tx);
        let mut got = Vec::new();
        while let Some(x) = order.recv().await {
            got.push(x);
        }
        assert_eq!(got, [(1, 1), (2, 1), (1, 2), (1, 3), (1, 4), (1, 5)]);
    }

    /// A request that stops waiting leaves its turn (and a place given to it) to the next.
    #[tokio::test]
    async fn a_request_that_stops_waiting_loses_no_place() {
        let places = FairPlaces::new(1);
        let held = places.take(peer(1)).await.unwrap();
        let gone = tokio::spawn({
            let places = places.clone();
            async move { places.take(peer(2)).await.map(drop) }
        });
        tokio::task::yield_now().await;
        gone.abort();
        let _ = gone.await;
        drop(held);
        let again = tokio::time::timeout(std::time::Duration::from_secs(5), places.take(peer(3)))
            .await
            .expect("the place was lost")
            .unwrap();
        drop(again);
        // Still one place, not two.
        let one = places.take(peer(4)).await.unwrap();
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), places.take(peer(5)))
                .await
                .is_err()
        );
        drop(one);
    }
}
