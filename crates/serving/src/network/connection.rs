//! One connection's life after its TLS handshake: the responses its peer has not read (for the
//! send timeout), the requests in progress on it (for the idle timeout), and its close.
//!
//! A connection is asked to close (HTTP/2: GOAWAY) when it has been idle, when it reaches its
//! maximum age, or when the server stops; whatever is still open on it a grace period later is
//! cut. Without that deadline a peer holds its connection slot for ever with a stream that
//! never ends (a health `Watch`) or a response it never reads (an HTTP/2 window of 0).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::api::scope::ResponseHold;
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::sync::watch;

/// The peer a request came from (a request extension).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// The certificate chain the peer presented in its TLS handshake, which the port's client
/// verifier accepted (a request extension; absent when it presented none).
#[derive(Debug, Clone)]
pub(crate) struct ClientCertificates(pub(crate) Arc<[rustls::pki_types::CertificateDer<'static>]>);

/// Turns true when the connection a request came on starts closing (a request extension), so
/// that a response that would otherwise never end (a health `Watch`) ends then.
#[derive(Debug, Clone)]
pub(crate) struct Closing(pub(crate) watch::Receiver<bool>);

/// The bounds on one connection's life.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifetime {
    /// With no request in progress for this long, the connection is asked to close.
    pub(crate) idle: Duration,
    /// Asked to close at this age, busy or not (None: no maximum).
    pub(crate) max_age: Option<Duration>,
    /// Time between the request to close and the cut.
    pub(crate) grace: Duration,
    /// Time between the request to close on shutdown and the cut.
    pub(crate) drain: Duration,
    /// A response whose peer has read none of what is ready for it for this long cuts the
    /// connection (None: no limit).
    pub(crate) send_timeout: Option<Duration>,
}

/// A connection's byte stream, noting in its [`ConnectionState`] when a write waits for the
/// peer to read ([`ConnectionState::stalled`]).
pub(crate) struct Writes<I> {
    inner: I,
    state: Arc<ConnectionState>,
}

impl<I> Writes<I> {
    /// `inner`, the stream of the connection whose state is `state`.
    pub(crate) fn new(inner: I, state: Arc<ConnectionState>) -> Self {
        Self { inner, state }
    }

    fn note<T>(&self, r: Poll<T>) -> Poll<T> {
        let b = &self.state.write_blocked;
        if r.is_pending() {
            let _ = b.compare_exchange(
                NOT_OWED,
                self.state.now_ms(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        } else {
            b.store(NOT_OWED, Ordering::Relaxed);
        }
        r
    }
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Writes<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Writes<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.note(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// [`Sending::since`] of a response that owes its peer nothing.
const NOT_OWED: u64 = u64::MAX;

/// Largest piece of a response body handed to the connection at once: the connection asks for
/// the next piece only once the peer has taken enough of the last, so pieces this size show
/// whether a slow peer is reading at all.
const SEND_PIECE: usize = 64 << 10;

/// What a connection's service and the task that runs the connection share.
#[derive(Debug)]
pub(crate) struct ConnectionState {
    peer: SocketAddr,
    start: Instant,
    /// Each open response body's [`Sending::since`]: one that has something ready for the
    /// peer (a piece handed over, or the body just made) holds when it last handed a piece
    /// over, in milliseconds after `start`; one that owes nothing holds [`NOT_OWED`]. Each
    /// response is timed on its own, so that new responses on a connection do not hide an old
    /// one the peer never reads.
    waiting: std::sync::Mutex<Vec<std::sync::Weak<AtomicU64>>>,
    /// Since when (ms after `start`) a write to the peer has waited for it to read, or
    /// [`NOT_OWED`]: what shows a peer that reads nothing when every response is already in
    /// the connection's buffers (small HTTP/1.1 answers it pipelines and never reads).
    write_blocked: AtomicU64,
    /// Response bodies not yet ended (a health `Watch`, a large answer being read).
    open: AtomicUsize,
    closing: watch::Sender<bool>,
    /// Set once the TLS handshake is done, if the peer presented a certificate.
    client: std::sync::OnceLock<ClientCertificates>,
}

impl ConnectionState {
    /// The state of a connection from `peer`, accepted now.
    pub(crate) fn new(peer: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            peer,
            start: Instant::now(),
            waiting: std::sync::Mutex::new(Vec::new()),
            write_blocked: AtomicU64::new(NOT_OWED),
            open: AtomicUsize::new(0),
            closing: watch::channel(false).0,
            client: std::sync::OnceLock::new(),
        })
    }

    /// Records the certificate chain the peer presented in its TLS handshake.
    pub(crate) fn presented(&self, chain: &[rustls::pki_types::CertificateDer<'_>]) {
        let chain: Vec<_> = chain.iter().map(|c| c.clone().into_owned()).collect();
        let _ = self.client.set(ClientCertificates(chain.into()));
    }

    /// Response bodies of the connection not yet ended.
    pub(crate) fn responses_open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Milliseconds since the connection was accepted.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NOT_OWED - 1)
    }

    /// Whether some response has had data ready for the peer for `limit` with none of it read.
    fn stalled(&self, limit: Duration) -> bool {
        let now = self.now_ms();
        let limit = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        let blocked = self.write_blocked.load(Ordering::Relaxed);
        if blocked != NOT_OWED && now.saturating_sub(blocked) > limit {
            return true;
        }
        let Ok(mut waiting) = self.waiting.lock() else {
            return false;
        };
        waiting.retain(|w| w.strong_count() > 0);
        waiting
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .any(|since| {
                let t = since.load(Ordering::Relaxed);
                t != NOT_OWED && now.saturating_sub(t) > limit
            })
    }
}

/// A connection's service: adds [`Peer`] and [`Closing`] to each request and wraps each
/// response body in a [`Sending`].
#[derive(Clone)]
pub(crate) struct Watched<S> {
    inner: S,
    state: Arc<ConnectionState>,
}

impl<S> Watched<S> {
    /// `inner` serving the connection whose state is `state`.
    pub(crate) fn new(inner: S, state: Arc<ConnectionState>) -> Self {
        Self { inner, state }
    }
}

impl<S, B> hyper::service::Service<hyper::Request<B>> for Watched<S>
where
    S: hyper::service::Service<hyper::Request<B>, Response = hyper::Response<axum::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = hyper::Response<Sending>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, mut req: hyper::Request<B>) -> Self::Future {
        req.extensions_mut().insert(Peer(self.state.peer));
        if let Some(c) = self.state.client.get() {
            req.extensions_mut().insert(c.clone());
        }
        req.extensions_mut()
            .insert(Closing(self.state.closing.subscribe()));
        let hold = ResponseHold::default();
        req.extensions_mut().insert(hold.clone());
        let fut = self.inner.call(req);
        let state = self.state.clone();
        Box::pin(async move {
            fut.await
                .map(|resp| resp.map(|body| Sending::new(body, state, hold)))
        })
    }
}

/// A response body that tells its connection whether the peer has data waiting to be read,
/// handing the data over in pieces of at most [`SEND_PIECE`].
pub(crate) struct Sending {
    inner: axum::body::Body,
    /// What is left of the inner body's last data frame.
    rest: Bytes,
    /// When it last handed a piece over while it had more ready for the peer (ms after the
    /// connection's start), or [`NOT_OWED`]; the connection reads it ([`ConnectionState::stalled`]).
    since: Arc<AtomicU64>,
    state: Arc<ConnectionState>,
    /// The memory the answer holds of the in-flight budget, given back when this body has been
    /// sent or dropped (pieces of at most [`SEND_PIECE`] are handed over as the peer reads, so
    /// what is not yet handed over is still here).
    _hold: ResponseHold,
}

impl Sending {
    fn new(inner: axum::body::Body, state: Arc<ConnectionState>, hold: ResponseHold) -> Self {
        // The response's head is ready for the peer; its body will be as soon as asked for.
        let since = Arc::new(AtomicU64::new(state.now_ms()));
        if let Ok(mut w) = state.waiting.lock() {
            // Ended responses are dropped from the list now and then, so it holds about as
            // many entries as the connection has open responses.
            if w.len() >= 32 && w.len().is_power_of_two() {
                w.retain(|x| x.strong_count() > 0);
            }
            w.push(Arc::downgrade(&since));
        }
        state.open.fetch_add(1, Ordering::Relaxed);
        Self {
            inner,
            rest: Bytes::new(),
            since,
            state,
            _hold: hold,
        }
    }

    /// Something is ready for the peer as of now (`owed`), or nothing is.
    fn set_owed(&mut self, owed: bool) {
        let t = if owed { self.state.now_ms() } else { NOT_OWED };
        self.since.store(t, Ordering::Relaxed);
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.state.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Body for Sending {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let me = self.get_mut();
        if !me.rest.is_empty() {
            let piece = me.rest.split_to(me.rest.len().min(SEND_PIECE));
            me.set_owed(true);
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        match Pin::new(&mut me.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_data() {
                    Ok(mut data) => {
                        if data.len() > SEND_PIECE {
                            me.rest = data.split_off(SEND_PIECE);
                        }
                        Frame::data(data)
                    }
                    Err(other) => other,
                };
                me.set_owed(true);
                Poll::Ready(Some(Ok(frame)))
            }
            // Nothing to send yet: it is the server that is waiting, not the peer.
            Poll::Pending => {
                me.set_owed(false);
                Poll::Pending
            }
            done => {
                me.set_owed(false);
                done
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut h = SizeHint::new();
        h.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            h.set_upper(upper + rest);
        }
        h
    }
}

/// How long a connection with nothing in progress, asked to close for another peer's newcomer,
/// has before it is cut.
const SHED_GRACE: Duration = Duration::from_millis(500);

/// A connection that may be told to give its place to another peer's newcomer
/// (`port_peers`).
pub(crate) trait Shed {
    /// Told when it is to give its place.
    fn told(&self) -> &tokio::sync::Notify;
    /// Whether nothing is in progress on it: no request handled, no response being sent.
    fn quiet(&self) -> bool;
    /// How long no request has been in progress on it (none while one is).
    fn idle(&self) -> Option<Duration>;
}

/// The ticks at which a connection checks whether a response waits for its peer past
/// `send_timeout` (none: hourly, and the check's branch is off).
fn send_checks(send_timeout: Option<Duration>) -> tokio::time::Interval {
    let every = send_timeout
        .map(|t| (t / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)))
        .unwrap_or(Duration::from_secs(3600));
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check
}

/// Resolves once no request has been in progress on the connection (as `slot` counts them)
/// for `idle`. The count is read when the timer fires, not waited on: a request that begins or
/// ends wakes no task and sets no timer (the connection's task would otherwise be woken twice per
/// request, and a worker thread with it), and the timer fires at most once per `idle` while
/// requests keep coming.
async fn idle_for(slot: &impl Shed, idle: Duration) {
    // At least a millisecond between looks, so that an idle timeout of 0 does not spin.
    let idle = idle.max(Duration::from_millis(1));
    let mut wait = idle;
    loop {
        tokio::time::sleep(wait).await;
        match slot.idle() {
            Some(quiet) if quiet >= idle => return,
            Some(quiet) => wait = idle - quiet,
            None => wait = idle,
        }
    }
}

/// Why a connection is asked to close.
#[derive(Debug, Clone, Copy)]
enum Close {
    Idle,
    MaxAge,
    Shutdown,
    /// Its place goes to another peer's newcomer (`port_peers`).
    Shed,
}

/// What happened while a connection ran.
enum Event {
    Ended(Result<(), Box<dyn std::error::Error + Send + Sync>>),
    Close(Close),
    /// Told to give its place to another peer's newcomer.
    Shed,
    GraceOver,
    Check,
}

/// Runs one connection until it ends: asks it to close (HTTP/2: GOAWAY) when idle, at its
/// maximum age, on shutdown or when `shed` tells it to give its place to another peer, cuts it when the grace period after that is over, and cuts it
/// at once when a response has waited for the peer to read it for the send timeout.
///
/// `slot` counts the requests in progress on the connection (their handlers have not answered
/// yet); `state` is the one its [`Watched`] service shares.
pub(crate) async fn run<I, S>(
    conn: auto::Connection<'_, I, Watched<S>, TokioExecutor>,
    state: Arc<ConnectionState>,
    life: Lifetime,
    mut stop: watch::Receiver<bool>,
    slot: &impl Shed,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
        Response = hyper::Response<axum::body::Body>,
        Error = std::convert::Infallible,
    >,
    S::Future: Send + 'static,
{
    let peer = state.peer;
    let idle_for = idle_for(slot, life.idle);
    let age = tokio::time::sleep(life.max_age.unwrap_or(Duration::MAX));
    // Reset to the end of the grace period once the connection is asked to close.
    let cut = tokio::time::sleep(Duration::ZERO);
    let mut check = send_checks(life.send_timeout);
    tokio::pin!(conn, idle_for, age, cut);
    let mut closing = None;
    let mut grace = Duration::ZERO;
    loop {
        let event = tokio::select! {
            r = conn.as_mut() => Event::Ended(r),
            _ = &mut idle_for, if closing.is_none() => Event::Close(Close::Idle),
            _ = &mut age, if closing.is_none() && life.max_age.is_some() => Event::Close(Close::MaxAge),
            _ = stop.changed(), if closing.is_none() => Event::Close(Close::Shutdown),
            _ = slot.told().notified() => Event::Shed,
            _ = &mut cut, if closing.is_some() => Event::GraceOver,
            _ = check.tick(), if life.send_timeout.is_some() => Event::Check,
        };
        match event {
            Event::Ended(r) => {
                if let Err(e) = r {
                    tracing::debug!("{peer}: connection ended: {e}");
                }
                return;
            }
            Event::Close(why) => {
                closing = Some(why);
                conn.as_mut().graceful_shutdown();
                state.closing.send_replace(true);
                grace = match why {
                    Close::Shutdown => life.drain,
                    Close::Idle | Close::MaxAge | Close::Shed => life.grace,
                };
                cut.as_mut().reset(tokio::time::Instant::now() + grace);
            }
            // Asked to close as when idle (HTTP/2: GOAWAY, so that the peer knows which of its
            // streams were not taken and may send them again elsewhere); with nothing in
            // progress it is cut soon after, so that its place is free for the newcomer, else
            // its responses finish within the grace period. One already closing is cut now if
            // nothing is in progress on it.
            Event::Shed if closing.is_none() => {
                closing = Some(Close::Shed);
                conn.as_mut().graceful_shutdown();
                state.closing.send_replace(true);
                grace = if slot.quiet() {
                    life.grace.min(SHED_GRACE)
                } else {
                    life.grace
                };
                cut.as_mut().reset(tokio::time::Instant::now() + grace);
            }
            Event::Shed if slot.quiet() => {
                tracing::debug!(
                    "{peer}: closing ({closing:?}) with nothing in progress; cut to give its place to another peer"
                );
                return;
            }
            Event::Shed => {}
            Event::GraceOver => {
                tracing::debug!(
                    "{peer}: still open {grace:?} after it was asked to close ({closing:?}); closed"
                );
                return;
            }
            Event::Check => {
                if let Some(limit) = life.send_timeout {
                    if state.stalled(limit) {
                        tracing::debug!(
                            "{peer}: a response waited {limit:?} for the peer to read it; closed"
                        );
                        return;
                    }
                }
            }
        }
    }
}
