//! Receipts for answers ([`teeserve_ratls::receipt`]): a request that asks for one
//! (`x-teeserve-receipt: 1`) gets a COSE_Sign1 signed by a key made inside the TEE at start,
//! whose public key the attestation document carries (so the quote binds it). It names the model
//! version that answered, the request as received and the response as sent (their SHA-256: the
//! gRPC message bytes, the REST body bytes), the time, a counter and the attestation document.
//!
//! gRPC: the receipt comes in the trailers as `x-teeserve-receipt-bin`. The admission layer hashes
//! the request's messages (the 5-byte gRPC frame headers left out) as its frames arrive, and
//! [`grpc_answer`] accepts a call that asks for a receipt only if it carries exactly one whole
//! message; the response's messages are hashed as they pass and held back with their trailers
//! until the receipt is signed, so that the answer leaves in one write. REST: the body is hashed
//! as it arrives, and the receipt comes in the `X-Teeserve-Receipt` header (base64url), signed
//! once the response body is made.
//!
//! Signing is amortised: answers queue their claims for one signer task, which signs everything
//! queued since its last signature as one Merkle tree (one Ed25519 signature over the root, an
//! inclusion path per receipt). An idle server signs each answer alone, at once; a busy one
//! signs a batch per turn of the signer, and nothing waits on a timer.
//! A server without a TEE refuses a request for a receipt instead of signing with a key no quote
//! vouches for.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use base64::Engine as _;
use bytes::Bytes;
use http_body::Frame;
use ring::digest::SHA256;
use teeserve_ratls::receipt::{Api, ReceiptClaims, ReceiptSigner, MAX_BATCH};
use tokio::sync::{mpsc, oneshot};
use tonic::Code;

use crate::api::error::ApiError;
use crate::api::scope::{self, Answered};
use crate::network::attestation::Attestor;
use crate::network::receipt_request::{digest32, GrpcHasher};

/// The trailer (gRPC, binary metadata) that carries a receipt.
pub(crate) const RECEIPT_TRAILER: &str = "x-teeserve-receipt-bin";
/// The response header (REST) that carries a receipt, base64url without padding.
pub(crate) const RECEIPT_HEADER: &str = "x-teeserve-receipt";

/// Claims waiting for the signer, and where their receipt goes.
type Waiting = (ReceiptClaims, oneshot::Sender<Vec<u8>>);

/// The receipt key and the document that vouches for it.
pub(crate) struct Receipts {
    signer: Arc<ReceiptSigner>,
    queue: mpsc::UnboundedSender<Waiting>,
    attestor: Arc<Attestor>,
    /// The repository generation of the standing document last seen and the document's SHA-256,
    /// read without the attestor's lock on every receipt.
    document: Mutex<Option<(u64, [u8; 32])>>,
}

impl std::fmt::Debug for Receipts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Receipts({:?})", self.signer)
    }
}

/// How many times the signer steps aside for other ready tasks before it signs a batch.
const SIGNER_YIELDS: usize = 8;

/// The signer task: everything queued when it wakes is one batch, under one signature. Before
/// signing it steps aside while other tasks are ready to run and their answers join the batch:
/// on an idle server the step is immediate and an answer is signed alone, at once; on a busy
/// one the batch grows with the load, and no timer holds an answer back. It ends when the
/// server's [`Receipts`] (the queue's only sender) is dropped.
async fn sign_batches(signer: Arc<ReceiptSigner>, mut queue: mpsc::UnboundedReceiver<Waiting>) {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        for _ in 0..SIGNER_YIELDS {
            if batch.len() >= MAX_BATCH {
                break;
            }
            tokio::task::yield_now().await;
            let before = batch.len();
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            if batch.len() == before {
                break;
            }
        }
        let (claims, replies): (Vec<ReceiptClaims>, Vec<_>) = batch.drain(..).unzip();
        for (reply, receipt) in replies.into_iter().zip(signer.sign_batch(&claims)) {
            // A requester gone since has nobody to give the receipt to.
            let _ = reply.send(receipt);
        }
    }
}

/// Why a request that asked for a receipt gets none.
pub(crate) fn no_receipts() -> ApiError {
    ApiError::new(
        Code::FailedPrecondition,
        "this server cannot sign receipts: it runs without a TEE platform (or publishes no attestation), so no quote would vouch for its receipt key",
    )
}

impl Receipts {
    /// Receipts signed by `signer`, whose key `attestor`'s documents carry; the signer task
    /// is spawned on the current runtime.
    pub(crate) fn new(signer: ReceiptSigner, attestor: Arc<Attestor>) -> Self {
        let signer = Arc::new(signer);
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(sign_batches(signer.clone(), waiting));
        Self {
            signer,
            queue,
            attestor,
            document: Mutex::new(None),
        }
    }

    /// SHA-256 of the standing attestation document (the one that carries the receipt key),
    /// looked up again only when the served models have changed.
    async fn attestation_sha256(&self) -> Result<[u8; 32], ApiError> {
        let poisoned = || ApiError::new(Code::Internal, "receipt: document lock poisoned");
        let generation = self.attestor.generation();
        if let Some((g, sha)) = *self.document.lock().map_err(|_| poisoned())? {
            if g == generation {
                return Ok(sha);
            }
        }
        let standing = self
            .attestor
            .standing()
            .await
            .map_err(|e| ApiError::new(Code::Unavailable, format!("receipt: {e}")))?;
        let mut seen = self.document.lock().map_err(|_| poisoned())?;
        if seen.is_none_or(|(g, _)| g < standing.generation) {
            *seen = Some((standing.generation, standing.sha256));
        }
        Ok(standing.sha256)
    }

    /// Queues the claims of an answer for the signer; the receipt comes on the returned
    /// channel.
    fn sign(
        &self,
        api: Api,
        method: &str,
        answered: &Answered,
        request_sha256: [u8; 32],
        response_sha256: [u8; 32],
        attestation_sha256: [u8; 32],
    ) -> Result<oneshot::Receiver<Vec<u8>>, ApiError> {
        let mut model_sha256 = [0u8; 32];
        hex::decode_to_slice(&answered.sha256, &mut model_sha256).map_err(|_| {
            ApiError::new(
                Code::Internal,
                format!("receipt: model digest {:?} is not hex", answered.sha256),
            )
        })?;
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = ReceiptClaims {
            model: answered.model.clone(),
            version: answered.version,
            model_sha256,
            signature: answered.signature.clone(),
            api,
            method: method.to_owned(),
            request_sha256,
            response_sha256,
            time,
            counter: self.signer.next_counter(),
            attestation_sha256,
        };
        let (reply, receipt) = oneshot::channel();
        self.queue
            .send((claims, reply))
            .map_err(|_| signer_gone())?;
        Ok(receipt)
    }

    /// The receipt of a REST answer (`method`: `Predict`, `Classify`, `Regress`,
    /// `ModelInfer`) to the request whose body hashed to `request_sha256`, base64url, or `None`
    /// when no model answered.
    pub(crate) async fn rest(
        &self,
        method: &str,
        request_sha256: [u8; 32],
        response: &[u8],
    ) -> Result<Option<String>, ApiError> {
        let Some(answered) = scope::current().receipt.and_then(|s| s.get().cloned()) else {
            return Ok(None);
        };
        let doc = self.attestation_sha256().await?;
        let r = self
            .sign(
                Api::Rest,
                method,
                &answered,
                request_sha256,
                sha256(response),
                doc,
            )?
            .await
            .map_err(|_| signer_gone())?;
        Ok(Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r),
        ))
    }
}

fn signer_gone() -> ApiError {
    ApiError::new(
        Code::Unavailable,
        "receipt: the signer has stopped (the server is shutting down)",
    )
}

fn sha256(b: &[u8]) -> [u8; 32] {
    digest32(ring::digest::digest(&SHA256, b))
}

/// Answers a gRPC call whose request body the admission layer has read (`body`, the
/// length-prefixed messages): calls without `x-teeserve-receipt: 1` go on untouched; the others
/// get a receipt in the trailers of the answer. `request_hash` has hashed the request's messages
/// as their frames arrived (the admission layer feeds it when the call asks for a receipt).
/// `admission` (the places the call holds) is dropped as soon as the handler has answered, so
/// that waiting for the document or the signer holds none of them.
pub(crate) async fn grpc_answer<A: Send>(
    receipts: Option<&Arc<Receipts>>,
    parts: hyper::http::request::Parts,
    body: Bytes,
    request_hash: Option<GrpcHasher>,
    next: axum::middleware::Next,
    admission: A,
) -> axum::response::Response {
    let wants = scope::wants_receipt(&parts.headers);
    if !wants {
        let resp = next
            .run(axum::extract::Request::from_parts(parts, Body::from(body)))
            .await;
        drop(admission);
        return resp;
    }
    let Some(receipts) = receipts.cloned() else {
        return no_receipts().into_status().into_http();
    };
    let method = parts
        .uri
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let request_hash = match one_message(request_hash) {
        Ok(h) => h,
        Err(e) => return e.into_status().into_http(),
    };
    let resp = next
        .run(axum::extract::Request::from_parts(parts, Body::from(body)))
        .await;
    drop(admission);
    // The document is looked up once the answer is made, as REST does: a version loaded while
    // the request ran is listed in the document the receipt names.
    let attestation = match receipts.attestation_sha256().await {
        Ok(d) => d,
        Err(e) => return e.into_status().into_http(),
    };
    let slot = scope::current().receipt;
    let (parts, body) = resp.into_parts();
    let on_trailers: TrailerHook = Box::new(move |response_hash, trailers| {
        // An answer is signed only when it says OK.
        let ok = trailers
            .get("grpc-status")
            .is_some_and(|s| s.as_bytes() == b"0");
        let answered = slot.as_ref().and_then(|s| s.get()).filter(|_| ok)?;
        let Some(response_hash) = response_hash else {
            tracing::error!("receipt not signed: the answer is not one whole uncompressed message");
            return None;
        };
        match receipts.sign(
            Api::Grpc,
            &method,
            answered,
            request_hash,
            response_hash,
            attestation,
        ) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!("receipt not signed: {}", e.message);
                None
            }
        }
    });
    let mut body = Hashing::new(body, on_trailers);
    // The head waits for the body's first frame, which (a unary answer held with its trailers)
    // comes with the receipt: head, message and trailers then leave in one write.
    std::future::poll_fn(|cx| body.poll_fill(cx)).await;
    axum::response::Response::from_parts(parts, Body::new(body))
}

/// The hash of a call's request for its receipt: a receipt names one request. Two messages A
/// and B hash as one message A||B would, and the handler answers A alone: a receipt of that call
/// could be shown with A||B, which decodes as A merged with B. So a call that asks for a receipt
/// carries exactly one whole message, as every unary call does, and sends it uncompressed (the
/// hash would name the compressed bytes; tonic is built without compression and refuses such a
/// call anyway, and a receipt must not depend on that).
fn one_message(request_hash: Option<GrpcHasher>) -> Result<[u8; 32], ApiError> {
    let h = request_hash.ok_or_else(|| {
        ApiError::new(
            Code::Internal,
            "receipt: the request was not hashed as it was read",
        )
    })?;
    if h.compressed() {
        return Err(ApiError::new(
            Code::InvalidArgument,
            "a call that asks for a receipt sends its message uncompressed",
        ));
    }
    match h.whole_messages() {
        Some(1) => Ok(h.finish()),
        n => {
            let carries = match n {
                Some(n) => format!("{n} messages"),
                None => "an unfinished message".to_owned(),
            };
            Err(ApiError::new(
                Code::InvalidArgument,
                format!(
                    "a call that asks for a receipt carries exactly one whole request message; \
                     this one carries {carries}"
                ),
            ))
        }
    }
}

/// Called when the response's trailers pass, with the response's hash when it was one whole
/// uncompressed message (as every unary answer is): the receipt to wait for, if any.
type TrailerHook = Box<
    dyn FnOnce(Option<[u8; 32]>, &hyper::HeaderMap) -> Option<oneshot::Receiver<Vec<u8>>> + Send,
>;

/// The most response bytes held back while a receipt is signed. A unary answer (every method
/// served here) is one message, so its data and its trailers leave in one write; a longer stream
/// passes on once this much is held.
const HOLD_LIMIT: usize = 64 * 1024;

/// A response body whose messages are hashed as they pass, and whose trailers get the receipt.
///
/// The data frames are held back until the trailers and their receipt are ready, so the
/// message and its trailers go out together: passed on at once, the message would leave in one
/// write and the trailers, a signer's turn later, in another, two TLS records and two wake-ups
/// of the requester instead of one.
struct Hashing {
    inner: Body,
    hasher: GrpcHasher,
    on_trailers: Option<TrailerHook>,
    /// The trailers held back while the signer signs their receipt.
    signing: Option<(hyper::HeaderMap, oneshot::Receiver<Vec<u8>>)>,
    /// Data frames held back (response side), and their length.
    held: VecDeque<Bytes>,
    held_len: usize,
    /// Frames ready to go, in order.
    out: VecDeque<Frame<Bytes>>,
    /// The inner body has ended.
    done: bool,
    /// The inner body's failure, to pass on.
    error: Option<axum::Error>,
}

impl Hashing {
    fn new(inner: Body, on_trailers: TrailerHook) -> Self {
        Self {
            inner,
            hasher: GrpcHasher::default(),
            on_trailers: Some(on_trailers),
            signing: None,
            held: VecDeque::new(),
            held_len: 0,
            out: VecDeque::new(),
            done: false,
            error: None,
        }
    }

    /// Moves the held data frames to the frames ready to go.
    fn release(&mut self) {
        self.held_len = 0;
        let held = std::mem::take(&mut self.held);
        self.out.extend(held.into_iter().map(Frame::data));
    }

    /// The trailers with the signed receipt added, once the signer has answered.
    fn with_receipt(
        mut trailers: hyper::HeaderMap,
        receipt: Result<Vec<u8>, oneshot::error::RecvError>,
    ) -> hyper::HeaderMap {
        match receipt {
            Ok(r) => {
                let v = base64::engine::general_purpose::STANDARD_NO_PAD.encode(r);
                if let Ok(mut v) = hyper::header::HeaderValue::from_str(&v) {
                    // Unique to this answer: HPACK sends it as a never-indexed literal rather
                    // than churn the connection's table with it.
                    v.set_sensitive(true);
                    trailers.insert(RECEIPT_TRAILER, v);
                }
            }
            Err(_) => tracing::error!("receipt not signed: {}", signer_gone().message),
        }
        trailers
    }
}

impl Hashing {
    /// Works until a frame is ready to go (or the body has ended or failed): the frames go to
    /// `out`, a failure to `error`.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if !self.out.is_empty() || self.error.is_some() {
                return Poll::Ready(());
            }
            if let Some((trailers, receipt)) = self.signing.as_mut() {
                let receipt = match Pin::new(receipt).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => r,
                };
                let trailers = Self::with_receipt(std::mem::take(trailers), receipt);
                self.signing = None;
                self.release();
                self.out.push_back(Frame::trailers(trailers));
                continue;
            }
            if self.done {
                return Poll::Ready(());
            }
            let frame = match http_body::Body::poll_frame(Pin::new(&mut self.inner), cx) {
                Poll::Ready(Some(Ok(f))) => f,
                Poll::Ready(Some(Err(e))) => {
                    // What was held goes first, then the failure.
                    self.release();
                    self.error = Some(e);
                    self.done = true;
                    continue;
                }
                Poll::Ready(None) => {
                    self.done = true;
                    self.release();
                    continue;
                }
                // A stream that pauses gets what it has sent so far.
                Poll::Pending if !self.held.is_empty() => {
                    self.release();
                    continue;
                }
                Poll::Pending => return Poll::Pending,
            };
            let frame = match frame.into_data() {
                Ok(data) => {
                    if self.on_trailers.is_none() {
                        // After the trailers: nothing is left to sign.
                        self.out.push_back(Frame::data(data));
                        continue;
                    }
                    self.hasher.update(&data);
                    self.held_len += data.len();
                    self.held.push_back(data);
                    if self.held_len > HOLD_LIMIT {
                        self.release();
                    }
                    continue;
                }
                Err(frame) => frame,
            };
            let trailers = match frame.into_trailers() {
                Ok(t) => t,
                Err(frame) => {
                    self.release();
                    self.out.push_back(frame);
                    continue;
                }
            };
            let Some(hook) = self.on_trailers.take() else {
                self.release();
                self.out.push_back(Frame::trailers(trailers));
                continue;
            };
            let hasher = std::mem::take(&mut self.hasher);
            let hash = (hasher.whole_messages() == Some(1) && !hasher.compressed())
                .then(|| hasher.finish());
            match hook(hash, &trailers) {
                Some(receipt) => self.signing = Some((trailers, receipt)),
                None => {
                    self.release();
                    self.out.push_back(Frame::trailers(trailers));
                }
            }
        }
    }
}

impl http_body::Body for Hashing {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if this.poll_fill(cx).is_pending() {
            return Poll::Pending;
        }
        if let Some(frame) = this.out.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Poll::Ready(this.error.take().map(Err))
    }

    fn is_end_stream(&self) -> bool {
        self.signing.is_none()
            && self.error.is_none()
            && self.out.is_empty()
            && self.held.is_empty()
            && (self.done || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let hint = self.inner.size_hint();
        let pending: usize = self.held_len
            + self
                .out
                .iter()
                .filter_map(|f| f.data_ref().map(Bytes::len))
                .sum::<usize>();
        let pending = pending as u64;
        // The upper bound first: `set_lower` refuses a lower bound above the upper one.
        let mut with_held = http_body::SizeHint::new();
        if let Some(upper) = hint.upper() {
            with_held.set_upper(upper.saturating_add(pending));
        }
        with_held.set_lower(hint.lower().saturating_add(pending));
        with_held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gRPC's framing of one message.
    fn framed(msg: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8];
        f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        f.extend_from_slice(msg);
        f
    }

    /// A body of `frames`, each data unless it is the trailers.
    fn body(frames: Vec<Frame<Bytes>>) -> Body {
        let s = futures::stream::iter(frames.into_iter().map(Ok::<_, std::io::Error>));
        Body::new(http_body_util::StreamBody::new(s))
    }

    fn trailers() -> hyper::HeaderMap {
        let mut t = hyper::HeaderMap::new();
        t.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
        t
    }

    /// A hook that records the response hash and hands out the receipt channel's end.
    fn hook(
        seen: Arc<Mutex<Option<[u8; 32]>>>,
        receipt: oneshot::Receiver<Vec<u8>>,
    ) -> TrailerHook {
        Box::new(move |hash, _| {
            *seen.lock().unwrap() = hash;
            Some(receipt)
        })
    }

    #[tokio::test]
    async fn an_answer_is_held_until_its_receipt_is_signed_then_leaves_whole() {
        let msg = b"the answer".repeat(10);
        let wire = framed(&msg);
        let (a, b) = wire.split_at(7);
        let seen = Arc::new(Mutex::new(None));
        let (reply, receipt) = oneshot::channel();
        let mut h = Hashing::new(
            body(vec![
                Frame::data(Bytes::copy_from_slice(a)),
                Frame::data(Bytes::copy_from_slice(b)),
                Frame::trailers(trailers()),
            ]),
            hook(seen.clone(), receipt),
        );
        // Nothing is ready while the signer has not answered: the message is held.
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(h.poll_fill(&mut cx).is_pending());
        assert!(h.out.is_empty());
        assert_eq!(seen.lock().unwrap().unwrap(), sha256(&msg));
        reply.send(b"signed".to_vec()).unwrap();
        let collected = http_body_util::BodyExt::collect(h).await.unwrap();
        let t = collected.trailers().cloned().unwrap();
        assert_eq!(t.get("grpc-status").unwrap(), "0");
        let r = t.get(RECEIPT_TRAILER).unwrap().to_str().unwrap().to_owned();
        assert_eq!(
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(r)
                .unwrap(),
            b"signed"
        );
        assert_eq!(collected.to_bytes(), Bytes::from(wire));
    }

    #[tokio::test]
    async fn an_answer_of_two_messages_or_a_compressed_one_is_not_hashed_for_a_receipt() {
        // (The hook records the hash it is given: none, so no receipt is signed.)
        let mut compressed = framed(b"the answer");
        compressed[0] = 1;
        for (wire, what) in [
            (
                [framed(b"the"), framed(b" answer")].concat(),
                "two messages",
            ),
            (compressed, "compressed"),
            (framed(b"the answer")[..8].to_vec(), "an unfinished message"),
        ] {
            let seen = Arc::new(Mutex::new(Some([0u8; 32])));
            let (_reply, receipt) = oneshot::channel();
            let mut h = Hashing::new(
                body(vec![
                    Frame::data(Bytes::from(wire)),
                    Frame::trailers(trailers()),
                ]),
                hook(seen.clone(), receipt),
            );
            let waker = futures::task::noop_waker();
            let _ = h.poll_fill(&mut Context::from_waker(&waker));
            assert_eq!(*seen.lock().unwrap(), None, "{what}");
        }
    }

    #[tokio::test]
    async fn a_long_answer_is_passed_on_before_its_trailers() {
        let msg = vec![7u8; HOLD_LIMIT * 2];
        let wire = framed(&msg);
        let chunks: Vec<Frame<Bytes>> = wire
            .chunks(16 * 1024)
            .map(|c| Frame::data(Bytes::copy_from_slice(c)))
            .chain(std::iter::once(Frame::trailers(trailers())))
            .collect();
        let seen = Arc::new(Mutex::new(None));
        let (reply, receipt) = oneshot::channel();
        let mut h = Hashing::new(body(chunks), hook(seen.clone(), receipt));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // More than the limit is not held back waiting for the signer.
        assert!(h.poll_fill(&mut cx).is_ready());
        assert!(h.out.front().is_some_and(Frame::is_data));
        reply.send(b"signed".to_vec()).unwrap();
        let collected = http_body_util::BodyExt::collect(h).await.unwrap();
        assert!(collected.trailers().unwrap().get(RECEIPT_TRAILER).is_some());
        assert_eq!(collected.to_bytes(), Bytes::from(wire));
        assert_eq!(seen.lock().unwrap().unwrap(), sha256(&msg));
    }

    /// A body fed frame by frame from a channel: Pending while nothing has been sent.
    fn fed() -> (
        futures::channel::mpsc::UnboundedSender<Result<Frame<Bytes>, std::io::Error>>,
        Body,
    ) {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        (tx, Body::new(http_body_util::StreamBody::new(rx)))
    }

    #[tokio::test]
    async fn a_stream_that_pauses_gets_what_it_has_sent_so_far() {
        let (tx, inner) = fed();
        let (_reply, receipt) = oneshot::channel();
        let mut h = Hashing::new(inner, hook(Arc::new(Mutex::new(None)), receipt));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(h.poll_fill(&mut cx).is_pending());
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"first"))))
            .unwrap();
        // The inner body now waits: what it sent is passed on rather than held.
        assert!(h.poll_fill(&mut cx).is_ready());
        let f = http_body::Body::poll_frame(Pin::new(&mut h), &mut cx);
        let Poll::Ready(Some(Ok(f))) = f else {
            panic!("no frame: {f:?}");
        };
        assert_eq!(f.into_data().unwrap(), "first");
        assert!(h.poll_fill(&mut cx).is_pending());
    }

    #[tokio::test]
    async fn a_failing_stream_passes_on_what_it_held_before_its_error() {
        let (tx, inner) = fed();
        let (_reply, receipt) = oneshot::channel();
        let mut h = Hashing::new(inner, hook(Arc::new(Mutex::new(None)), receipt));
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"held"))))
            .unwrap();
        tx.unbounded_send(Err(std::io::Error::other("the stream broke")))
            .unwrap();
        let first = http_body_util::BodyExt::frame(&mut h)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.into_data().unwrap(), "held");
        let second = http_body_util::BodyExt::frame(&mut h).await.unwrap();
        assert!(second.unwrap_err().to_string().contains("the stream broke"));
        assert!(http_body_util::BodyExt::frame(&mut h).await.is_none());
    }

    #[tokio::test]
    async fn a_failed_answer_passes_on_without_a_receipt() {
        let mut failed = hyper::HeaderMap::new();
        failed.insert("grpc-status", hyper::header::HeaderValue::from_static("3"));
        let h = Hashing::new(
            body(vec![Frame::trailers(failed)]),
            Box::new(|_, t: &hyper::HeaderMap| {
                assert_eq!(t.get("grpc-status").unwrap(), "3");
                None
            }),
        );
        let collected = http_body_util::BodyExt::collect(h).await.unwrap();
        let t = collected.trailers().unwrap();
        assert_eq!(t.get("grpc-status").unwrap(), "3");
        assert!(t.get(RECEIPT_TRAILER).is_none());
    }
}
