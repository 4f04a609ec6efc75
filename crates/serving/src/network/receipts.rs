//! Receipts for answers ([`teeserve_ratls::receipt`]): a request that asks for one
//! (`x-teeserve-receipt: 1`) gets a COSE_Sign1 signed by a key made inside the TEE at start,
//! whose public key the attestation document carries (so the quote binds it). It names the model
//! version that answered, the request as received and the response as sent (their SHA-256: the
//! gRPC message bytes, the REST body bytes), the time, a counter and the attestation document.
//!
//! gRPC: the receipt comes in the trailers as `x-teeserve-receipt-bin`; the layer here hashes
//! the request's and the response's messages as they stream by (the 5-byte gRPC frame headers
//! left out) and signs when the response's trailers pass. REST: the receipt comes in the
//! `X-Teeserve-Receipt` header (base64url), signed once the response body is made.
//!
//! Signing is amortised: answers queue their claims for one signer task, which signs everything
//! queued since its last signature as one Merkle tree (one Ed25519 signature over the root, an
//! inclusion path per receipt). An idle server signs each answer alone, at once; a busy one
//! signs a batch per turn of the signer, and nothing waits on a timer.
//! A server without a TEE refuses a request for a receipt instead of signing with a key no quote
//! vouches for.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use base64::Engine as _;
use bytes::Bytes;
use http_body::Frame;
use ring::digest::{Context as Sha256, SHA256};
use teeserve_ratls::receipt::{ReceiptClaims, ReceiptSigner, MAX_BATCH};
use tokio::sync::{mpsc, oneshot};
use tonic::Code;

use crate::api::error::ApiError;
use crate::api::scope::{self, Answered};
use crate::network::attestation::Attestor;

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
    /// The repository generation of the standing document last seen and the document's SHA-256
    /// (a document with collateral is tens of kilobytes: hashed once, not per receipt).
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
        let (generation, doc) = self
            .attestor
            .current_with_generation()
            .await
            .map_err(|e| ApiError::new(Code::Unavailable, format!("receipt: {e}")))?;
        let sha = sha256(doc.as_bytes());
        let mut seen = self.document.lock().map_err(|_| poisoned())?;
        if seen.is_none_or(|(g, _)| g < generation) {
            *seen = Some((generation, sha));
        }
        Ok(sha)
    }

    /// Queues the claims of an answer for the signer; the receipt comes on the returned
    /// channel.
    fn sign(
        &self,
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

    /// The receipt of a REST answer (`method`: `Predict`, `Classify`, `Regress`), base64url,
    /// or `None` when no model answered.
    pub(crate) async fn rest(
        &self,
        method: &str,
        request: &[u8],
        response: &[u8],
    ) -> Result<Option<String>, ApiError> {
        let Some(answered) = scope::current().receipt.and_then(|s| s.get().cloned()) else {
            return Ok(None);
        };
        let doc = self.attestation_sha256().await?;
        let r = self
            .sign(method, &answered, sha256(request), sha256(response), doc)?
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
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&SHA256, b).as_ref());
    out
}

/// The gRPC receipts layer (axum middleware): requests without `x-teeserve-receipt: 1` pass
/// untouched; the others have their messages hashed and get a receipt in the trailers.
pub(crate) async fn grpc_layer(
    axum::extract::State(receipts): axum::extract::State<Option<Arc<Receipts>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !scope::wants_receipt(req.headers()) {
        return next.run(req).await;
    }
    let Some(receipts) = receipts else {
        return no_receipts().into_status().into_http();
    };
    let method = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let request_hash = Arc::new(Mutex::new(GrpcHasher::default()));
    let (parts, body) = req.into_parts();
    let body = Body::new(Hashing {
        inner: body,
        hasher: request_hash.clone(),
        on_trailers: None,
        signing: None,
    });
    let resp = next
        .run(axum::extract::Request::from_parts(parts, body))
        .await;
    // The document is looked up once the answer is made, as REST does: a version loaded while
    // the request ran is listed in the document the receipt names.
    let attestation = match receipts.attestation_sha256().await {
        Ok(d) => d,
        Err(e) => return e.into_status().into_http(),
    };
    let slot = scope::current().receipt;
    let (parts, body) = resp.into_parts();
    let on_trailers: TrailerHook = Box::new(move |response_hash, trailers| {
        let ok = trailers
            .get("grpc-status")
            .is_none_or(|s| s.as_bytes() == b"0");
        let answered = slot.as_ref().and_then(|s| s.get()).filter(|_| ok)?;
        let request_hash = request_hash
            .lock()
            .map(|h| h.clone().finish())
            .unwrap_or_default();
        match receipts.sign(&method, answered, request_hash, response_hash, attestation) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!("receipt not signed: {}", e.message);
                None
            }
        }
    });
    let body = Body::new(Hashing {
        inner: body,
        hasher: Arc::new(Mutex::new(GrpcHasher::default())),
        on_trailers: Some(on_trailers),
        signing: None,
    });
    axum::response::Response::from_parts(parts, body)
}

/// Called with the response's hash when its trailers pass: the receipt to wait for, if any.
type TrailerHook =
    Box<dyn FnOnce([u8; 32], &hyper::HeaderMap) -> Option<oneshot::Receiver<Vec<u8>>> + Send>;

/// SHA-256 of the messages of a gRPC stream: each frame's 5-byte header (compressed flag and
/// length, gRPC's PROTOCOL-HTTP2 "Length-Prefixed-Message") skipped, the message bytes hashed.
#[derive(Clone)]
struct GrpcHasher {
    sha: Sha256,
    /// Header bytes still to skip before the next message.
    header: [u8; 5],
    header_len: usize,
    /// Message bytes still to hash.
    left: usize,
}

impl Default for GrpcHasher {
    fn default() -> Self {
        Self {
            sha: Sha256::new(&SHA256),
            header: [0; 5],
            header_len: 0,
            left: 0,
        }
    }
}

impl GrpcHasher {
    fn update(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            if self.left > 0 {
                let n = self.left.min(b.len());
                self.sha.update(&b[..n]);
                self.left -= n;
                b = &b[n..];
                continue;
            }
            let n = (5 - self.header_len).min(b.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&b[..n]);
            self.header_len += n;
            b = &b[n..];
            if self.header_len == 5 {
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                self.left = len as usize;
                self.header_len = 0;
            }
        }
    }

    fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.sha.finish().as_ref());
        out
    }
}

/// A body whose data frames are hashed as they pass, and whose trailers get the receipt.
struct Hashing {
    inner: Body,
    hasher: Arc<Mutex<GrpcHasher>>,
    on_trailers: Option<TrailerHook>,
    /// The trailers held back while the signer signs their receipt.
    signing: Option<(hyper::HeaderMap, oneshot::Receiver<Vec<u8>>)>,
}

impl http_body::Body for Hashing {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Some((trailers, receipt)) = self.signing.as_mut() {
            let receipt = match Pin::new(receipt).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r,
            };
            let mut trailers = std::mem::take(trailers);
            self.signing = None;
            match receipt {
                Ok(r) => {
                    let v = base64::engine::general_purpose::STANDARD_NO_PAD.encode(r);
                    if let Ok(mut v) = hyper::header::HeaderValue::from_str(&v) {
                        // Unique to this answer: HPACK sends it as a never-indexed literal
                        // rather than churn the connection's table with it.
                        v.set_sensitive(true);
                        trailers.insert(RECEIPT_TRAILER, v);
                    }
                }
                Err(_) => tracing::error!("receipt not signed: {}", signer_gone().message),
            }
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => f,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            if let Ok(mut h) = self.hasher.lock() {
                h.update(data);
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        match frame.into_trailers() {
            Ok(trailers) => {
                let Some(hook) = self.on_trailers.take() else {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                };
                let hash = self
                    .hasher
                    .lock()
                    .map(|h| h.clone().finish())
                    .unwrap_or_default();
                match hook(hash, &trailers) {
                    Some(receipt) => {
                        self.signing = Some((trailers, receipt));
                        self.poll_frame(cx)
                    }
                    None => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                }
            }
            Err(frame) => Poll::Ready(Some(Ok(frame))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.signing.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_messages_are_hashed_without_their_frame_headers_however_they_are_split() {
        let msg = b"a protobuf message of some length";
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        framed.extend_from_slice(msg);
        let want = sha256(msg);
        for split in 0..framed.len() {
            let mut h = GrpcHasher::default();
            h.update(&framed[..split]);
            h.update(&framed[split..]);
            assert_eq!(h.finish(), want, "{split}");
        }
    }
}
