//! A listener: accepting connections under the connection limit, the TLS handshake within its
//! deadline, HTTP/1 and HTTP/2 on one port, each request counted and run in its scope, and the
//! drain at shutdown.

use std::sync::Arc;
use std::time::Duration;

use crate::api::shares::PeerKey;
use crate::network::options::{ConnectionLimits, ServeError};
use crate::network::port_peers::{PortPeers, Slot, Waiting};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub(crate) async fn bind(host: &str, port: u16) -> Result<TcpListener, ServeError> {
    let addr = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    TcpListener::bind(&addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// A loopback TCP port that is free now, for servers a caller starts in another process or a
/// moment later (the demo, tests, benchmarks). It is taken below Linux's default ephemeral
/// range (32768-60999), so that no connecting socket is given it in between; the process id
/// and a counter spread the choices, so callers in one process never get the same port twice
/// in a row of 12,000. Falls back to a port the system picks when none there is free.
pub fn free_loopback_port() -> std::io::Result<u16> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(7919);
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // 7 and 12,000 share no factor: 12,000 calls visit every port of the range once.
        let port = 20_000 + (base.wrapping_add(n.wrapping_mul(7)) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// Whether an accept error concerns only the connection being accepted (the next accept may
/// succeed at once), as opposed to the process being out of descriptors or memory.
pub(crate) fn only_that_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionAborted | K::ConnectionReset | K::ConnectionRefused | K::Interrupted
    )
}

pub(crate) async fn serve_listener(
    l: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
    limits: ConnectionLimits,
    drain: Duration,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let max = limits
        .max_connections
        .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
    let open = Arc::new(tokio::sync::Semaphore::new(max));
    let by_peer = Arc::new(PortPeers::default());
    let builder = http_builder(&limits);
    let life = crate::network::connection::Lifetime {
        idle: limits.idle_timeout,
        max_age: limits.max_age,
        grace: limits.grace,
        drain,
        send_timeout: limits.send_timeout,
    };
    let mut backoff = Duration::from_millis(10);
    loop {
        let (tcp, peer) = tokio::select! {
            r = l.accept() => match r {
                Ok(x) => {
                    backoff = Duration::from_millis(10);
                    x
                }
                Err(e) if only_that_connection(&e) => continue,
                Err(e) => {
                    // Out of descriptors (EMFILE) or memory: accepting again at once would
                    // fail again, so wait, longer each time, for connections to close.
                    tracing::warn!("accept: {e}; accepting again in {backoff:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let key = PeerKey::of(Some(peer.ip()));
        let Some(place) = Place::for_newcomer(&open, &by_peer, key) else {
            tracing::debug!(
                "{peer}: closed at once, {max} connections are open (--max_connections)"
            );
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let state = crate::network::connection::ConnectionState::new(peer);
        let slot = Slot::new(state.clone());
        let svc = Tracked {
            inner: hyper_util::service::TowerToHyperService::new(router.clone()),
            slot: slot.clone(),
            connection: crate::api::scope::next_connection(),
            peer: key,
        };
        let svc = crate::network::connection::Watched::new(svc, state.clone());
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        let stop = stop.clone();
        let conn = Connection {
            builder,
            svc,
            state,
            life,
            stop,
            slot,
        };
        let seat = Seat {
            port: by_peer.clone(),
            key,
            place,
        };
        tokio::spawn(conn.run(seat, acceptor, tcp, peer, limits.header_timeout));
    }
    // Close the port now rather than when the drain is over: a connection that arrives
    // meanwhile is refused at once (a balancer in front tries another replica) instead of
    // waiting, unaccepted, in the listen queue until the process exits and resets it.
    drop(l);
    // Drain: every connection task holds a permit until it ends.
    let _ = tokio::time::timeout(
        drain,
        open.acquire_many(u32::try_from(max).unwrap_or(u32::MAX)),
    )
    .await;
}

/// A new connection's place among the port's: taken, or being given up by a connection of
/// another peer ([`PortPeers::shed_for`]).
enum Place {
    Taken(tokio::sync::OwnedSemaphorePermit),
    Freeing(Arc<tokio::sync::Semaphore>),
}

/// How long a newcomer waits for the connection that gives it its place to close.
const FREEING: Duration = Duration::from_secs(2);

impl Place {
    /// A newcomer's place: a free one; or, every place taken, one that a connection of a peer
    /// holding more gives up for it (the newcomer counted under its peer meanwhile); None when
    /// none does, and the newcomer is closed.
    fn for_newcomer(
        open: &Arc<tokio::sync::Semaphore>,
        by_peer: &Arc<PortPeers>,
        key: PeerKey,
    ) -> Option<(Place, Option<Waiting>)> {
        match open.clone().try_acquire_owned() {
            Ok(p) => Some((Place::Taken(p), None)),
            Err(_) => by_peer
                .shed_for(key)
                .map(|waiting| (Place::Freeing(open.clone()), Some(waiting))),
        }
    }

    /// The place, once it is free ([`FREEING`] at most).
    async fn taken(self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        match self {
            Place::Taken(p) => Some(p),
            Place::Freeing(open) => tokio::time::timeout(FREEING, open.acquire_owned())
                .await
                .ok()?
                .ok(),
        }
    }
}

/// HTTP/1 and HTTP/2 on one port, with the header deadline and HTTP/2 flow-control windows
/// large enough for an image batch in one round trip (the protocol's default of 64 KiB makes a
/// 600 KB tensor wait for several WINDOW_UPDATEs); the request size limit still applies.
fn http_builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .initial_stream_window_size(teeserve_wire::H2_STREAM_WINDOW)
        .initial_connection_window_size(2 * teeserve_wire::H2_STREAM_WINDOW)
        .max_frame_size(teeserve_wire::H2_MAX_FRAME);
    builder
}

/// The service of one connection: the router, its requests counted and scoped, the connection
/// watched.
type ConnectionService = crate::network::connection::Watched<
    Tracked<hyper_util::service::TowerToHyperService<axum::Router>>,
>;

/// One accepted connection, and what serving it needs.
struct Connection {
    builder: auto::Builder<TokioExecutor>,
    svc: ConnectionService,
    state: Arc<crate::network::connection::ConnectionState>,
    life: crate::network::connection::Lifetime,
    stop: watch::Receiver<bool>,
    /// Its slot among the port's connections.
    slot: Arc<Slot>,
}

/// A connection's peer and its place among the port's connections ([`PortPeers`]).
struct Seat {
    port: Arc<PortPeers>,
    key: PeerKey,
    place: (Place, Option<Waiting>),
}

impl Connection {
    /// Serves the connection once it has its place (TLS first, with `acceptor`, within
    /// `header_timeout`), counted under its peer, until it ends. Told to give its place to
    /// another peer's newcomer ([`PortPeers::shed_for`]): cut at once during its handshake,
    /// asked to close (as when idle) after it.
    async fn run(
        self,
        seat: Seat,
        acceptor: Option<tokio_rustls::TlsAcceptor>,
        tcp: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
        header_timeout: Duration,
    ) {
        let (place, waiting) = seat.place;
        let Some(_permit) = place.taken().await else {
            tracing::debug!("{peer}: closed, no connection gave its place in time");
            return;
        };
        let _counted = seat.port.count(seat.key, self.slot.clone());
        if let Some(w) = waiting {
            w.placed();
        }
        let Some(a) = acceptor else {
            return self.serve(tcp).await;
        };
        let slot = self.slot.clone();
        let serve = self.serve_tls(a, tcp, peer, header_timeout);
        tokio::pin!(serve);
        let mut handed_over = false;
        loop {
            tokio::select! {
                _ = &mut serve => return,
                _ = slot.shed.notified(), if !handed_over => {
                    if !slot.is_serving() {
                        tracing::debug!(
                            "{peer}: closed in its TLS handshake to give its place to another peer (--max_connections)"
                        );
                        return;
                    }
                    // Past its handshake: the connection's own loop asks it to close.
                    slot.shed.notify_one();
                    handed_over = true;
                }
            }
        }
    }

    /// Serves the connection after its TLS handshake, which must end within `deadline`.
    async fn serve_tls(
        self,
        acceptor: tokio_rustls::TlsAcceptor,
        tcp: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
        deadline: Duration,
    ) {
        let tls = match tokio::time::timeout(deadline, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!("{peer}: TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!("{peer}: TLS handshake not done within {deadline:?}");
                return;
            }
        };
        if let Some(chain) = tls.get_ref().1.peer_certificates() {
            self.state.presented(chain);
        }
        self.serve(tls).await;
    }

    /// Serves HTTP on `io` (plaintext, or TLS after its handshake) until the connection ends.
    async fn serve<I>(self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        self.slot.serving();
        let io = crate::network::connection::Writes::new(io, self.state.clone());
        let conn = self.builder.serve_connection(TokioIo::new(io), self.svc);
        crate::network::connection::run(conn, self.state, self.life, self.stop, &*self.slot).await;
    }
}

/// A connection's service that counts the requests in progress on it (for the idle timeout)
/// and runs each in its [`crate::api::scope::RequestScope`].
#[derive(Clone)]
pub(crate) struct Tracked<S> {
    inner: S,
    /// The connection's slot among the port's, told when a request begins and ends.
    slot: Arc<Slot>,
    connection: u64,
    peer: PeerKey,
}

/// Counts a request as in progress on its connection's slot until dropped.
pub(crate) struct InProgress(Arc<Slot>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.end();
    }
}

impl<S, B> hyper::service::Service<hyper::Request<B>> for Tracked<S>
where
    S: hyper::service::Service<hyper::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, req: hyper::Request<B>) -> Self::Future {
        self.slot.begin();
        let guard = InProgress(self.slot.clone());
        let mut scope = crate::api::scope::RequestScope::of(self.connection, req.headers());
        scope.peer = self.peer;
        scope.held = req
            .extensions()
            .get::<crate::api::scope::ResponseHold>()
            .cloned();
        let fut = self.inner.call(req);
        Box::pin(crate::api::scope::scoped(scope, async move {
            let r = fut.await;
            drop(guard);
            r
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_loopback_ports_are_bindable_distinct_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_loopback_port().unwrap()).collect();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        for p in ports {
            assert!((20_000..32_000).contains(&p), "{p}");
            std::net::TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }
}
