//! The server's side of `/v1/attestation`: the attestation document, quoted again whenever the
//! served models change, and fresh quotes over a requester's nonce, made in turns shared fairly
//! between peers ([`crate::network::fresh_quotes`]). The last [`KEPT_DOCUMENTS`] standing
//! documents stay available by their SHA-256 (`?sha256=<hex>`): a receipt names the document
//! standing when its answer was made, and a requester that fetched the one before (the models
//! changed since) gets the one its receipt names.

use std::collections::VecDeque;
use std::sync::Arc;

use teeserve_attest::platform::Platform;
use teeserve_ratls::document::Statements;
use teeserve_ratls::document::{parse_nonce, MAX_NONCE};
use teeserve_ratls::key_release::KeyRelease;
use teeserve_ratls::{AttestationDoc, DocumentError, KeyOrigin, ModelDigest};
use tokio::sync::Mutex;

use crate::models::ModelRepository;
use crate::network::fresh_quotes::{FreshQuotes, NoTurn, PeerKey, MAX_WAIT, PER_PEER, RETRY_AFTER};

/// Why `/v1/attestation` could not answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttestationRequestError {
    /// The query is malformed (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// No kept standing document has that SHA-256 (HTTP 404).
    #[error("no standing attestation document with SHA-256 {0} is kept: this server keeps its last {KEPT_DOCUMENTS} (since it started)")]
    NotKept(String),
    /// No turn at a fresh quote for this peer now (HTTP 429, with `Retry-After`).
    #[error("{}", match .0 {
        NoTurn::PeerFull => format!("this peer already has {PER_PEER} attestation requests with a nonce waiting or being quoted; retry after {RETRY_AFTER} s"),
        NoTurn::Waited => format!("no turn at a fresh quote within {} s (requests with a nonce are served in turn, one per peer at a time); retry after {RETRY_AFTER} s", MAX_WAIT.as_secs()),
    })]
    Busy(NoTurn),
    /// The platform failed (HTTP 500).
    #[error("{0}")]
    Quote(String),
}

impl AttestationRequestError {
    /// The HTTP status for this error.
    pub(crate) fn http_status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::NotKept(_) => 404,
            Self::Busy(_) => 429,
            Self::Quote(_) => 500,
        }
    }
}

/// A standing document (made without a nonce): the repository generation whose models it
/// lists, its JSON as served, and that JSON's SHA-256 (what receipts name).
#[derive(Debug, Clone)]
pub(crate) struct Standing {
    pub(crate) generation: u64,
    pub(crate) doc: Arc<String>,
    pub(crate) sha256: [u8; 32],
}

/// Makes and serves the attestation document of one server.
pub(crate) struct Attestor {
    platform: Arc<dyn Platform>,
    spki: Vec<u8>,
    origin: KeyOrigin,
    collateral: Option<serde_json::Value>,
    repo: Arc<ModelRepository>,
    /// The document without a nonce, with the repository generation it describes.
    current: Mutex<Option<Standing>>,
    /// The last standing documents made, newest last, with their SHA-256.
    kept: std::sync::Mutex<VecDeque<([u8; 32], Arc<String>)>>,
    fresh: Arc<FreshQuotes>,
    /// Whether the server batches (`--enable_batching`): row-independent models then share
    /// batches among requesters, and the document says so.
    batching: bool,
    /// The public key of the server's receipts, which the document carries.
    receipt_key: Option<[u8; 32]>,
    /// The key broker's grants and their log proofs, stated in every document.
    key_release: Option<KeyRelease>,
}

impl std::fmt::Debug for Attestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Attestor({}, key origin {})",
            self.platform.name(),
            self.origin
        )
    }
}

impl Attestor {
    /// An attestor for the TLS key `spki` (DER SubjectPublicKeyInfo) that came from `origin`.
    pub(crate) fn new(
        platform: Arc<dyn Platform>,
        spki: Vec<u8>,
        origin: KeyOrigin,
        collateral: Option<serde_json::Value>,
        repo: Arc<ModelRepository>,
    ) -> Self {
        Self {
            platform,
            spki,
            origin,
            collateral,
            repo,
            current: Mutex::new(None),
            kept: std::sync::Mutex::new(VecDeque::new()),
            fresh: FreshQuotes::new(),
            batching: false,
            receipt_key: None,
            key_release: None,
        }
    }

    /// States how the server got its secrets: the broker's grants and their log proofs.
    pub(crate) fn with_key_release(mut self, key_release: Option<KeyRelease>) -> Self {
        self.key_release = key_release;
        self
    }

    /// States the public key of the server's receipts in every document.
    pub(crate) fn with_receipt_key(mut self, key: [u8; 32]) -> Self {
        self.receipt_key = Some(key);
        self
    }

    /// States that the server batches requests (`--enable_batching`).
    pub(crate) fn with_batching(mut self, batching: bool) -> Self {
        self.batching = batching;
        self
    }

    fn served(&self) -> Vec<ModelDigest> {
        self.repo
            .served()
            .into_iter()
            .map(|m| ModelDigest {
                name: m.name,
                version: m.version,
                sha256: m.sha256,
                operators: m.code.operators,
                shared_batches: self.batching && m.code.row_independent,
            })
            .collect()
    }

    async fn make(&self, nonce: Option<Vec<u8>>) -> Result<String, AttestationRequestError> {
        let platform = self.platform.clone();
        let spki = self.spki.clone();
        let origin = self.origin;
        let models = self.served();
        let collateral = self.collateral.clone();
        // Quoting is blocking I/O on Gramine and TDX.
        let receipt_key = self.receipt_key;
        let key_release = self.key_release.clone();
        let doc = tokio::task::spawn_blocking(move || {
            AttestationDoc::make_from(
                platform.as_ref(),
                &spki,
                Statements {
                    origin,
                    nonce,
                    models,
                    collateral,
                    key_release,
                    receipt_key,
                },
            )
        })
        .await
        .map_err(|e| AttestationRequestError::Quote(e.to_string()))?
        .map_err(|e: DocumentError| AttestationRequestError::Quote(e.to_string()))?;
        serde_json::to_string(&doc).map_err(|e| AttestationRequestError::Quote(e.to_string()))
    }

    /// The document without a nonce, quoted again when the served models have changed since.
    pub(crate) async fn current(&self) -> Result<Arc<String>, AttestationRequestError> {
        Ok(self.standing().await?.doc)
    }

    /// The repository generation now: it changes whenever the served models do.
    pub(crate) fn generation(&self) -> u64 {
        self.repo.generation()
    }

    /// [`Self::current`], with the repository generation whose models it lists and its SHA-256
    /// (computed once per document).
    pub(crate) async fn standing(&self) -> Result<Standing, AttestationRequestError> {
        let mut cur = self.current.lock().await;
        // The generation is read before the models, so a change in between makes the next
        // call quote again rather than leave a stale list standing.
        let generation = self.repo.generation();
        if let Some(s) = cur.as_ref().filter(|s| s.generation == generation) {
            return Ok(s.clone());
        }
        let doc = Arc::new(self.make(None).await?);
        let sha256 = crate::network::receipt_request::digest32(ring::digest::digest(
            &ring::digest::SHA256,
            doc.as_bytes(),
        ));
        let s = Standing {
            generation,
            doc,
            sha256,
        };
        *cur = Some(s.clone());
        self.keep(&s);
        Ok(s)
    }

    /// Keeps a standing document among the last [`KEPT_DOCUMENTS`].
    fn keep(&self, s: &Standing) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.retain(|(sha, _)| *sha != s.sha256);
        if kept.len() == KEPT_DOCUMENTS {
            kept.pop_front();
        }
        kept.push_back((s.sha256, s.doc.clone()));
    }

    fn any_kept(&self) -> bool {
        !self
            .kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// The kept standing document whose SHA-256 is `sha256` (64 hex digits).
    fn kept_document(&self, sha256: &str) -> Result<Arc<String>, AttestationRequestError> {
        let mut want = [0u8; 32];
        hex::decode_to_slice(sha256, &mut want).map_err(|_| {
            let shown: String = sha256.chars().take(80).collect();
            AttestationRequestError::BadRequest(format!(
                "sha256={shown:?} is not 64 hexadecimal digits"
            ))
        })?;
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter()
            .rev()
            .find(|(s, _)| *s == want)
            .map(|(_, doc)| doc.clone())
            .ok_or_else(|| AttestationRequestError::NotKept(hex::encode(want)))
    }

    /// Answers `GET /v1/attestation[?nonce=<hex>|?sha256=<hex>]` from `peer`: the current
    /// document, one quoted now over the requester's nonce (1 to 64 bytes) in the peer's turn,
    /// or a kept standing document by its SHA-256.
    pub(crate) async fn answer(
        &self,
        query: Option<&str>,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Arc<String>, AttestationRequestError> {
        let (mut nonce, mut sha256) = (None, None);
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            match pair.split_once('=') {
                Some(("nonce", v)) if nonce.is_none() && sha256.is_none() => {
                    nonce = Some(
                        parse_nonce(v)
                            .map_err(|e| AttestationRequestError::BadRequest(e.to_string()))?,
                    )
                }
                Some(("sha256", v)) if nonce.is_none() && sha256.is_none() => sha256 = Some(v),
                _ => {
                    let shown: String = pair.chars().take(40).collect();
                    return Err(AttestationRequestError::BadRequest(format!(
                        "unknown or repeated query parameter {shown:?}: give at most one of nonce=<hex, at most {MAX_NONCE} bytes> and sha256=<hex of a standing document>"
                    )));
                }
            }
        }
        if let Some(sha) = sha256 {
            // Every document a receipt names was made (and kept) before it was named; the
            // current one is made only when none is kept yet, so that it can be asked for by
            // its hash first.
            return match self.kept_document(sha) {
                Err(AttestationRequestError::NotKept(_)) if !self.any_kept() => {
                    self.current().await?;
                    self.kept_document(sha)
                }
                found => found,
            };
        }
        match nonce {
            None => self.current().await,
            Some(n) => {
                let _turn = self
                    .fresh
                    .turn(PeerKey::of(peer))
                    .await
                    .map_err(AttestationRequestError::Busy)?;
                Ok(Arc::new(self.make(Some(n)).await?))
            }
        }
    }

    /// [`Attestor::answer`] as an HTTP answer.
    pub(crate) async fn respond(
        &self,
        query: Option<&str>,
        peer: Option<std::net::IpAddr>,
    ) -> Answer {
        match self.answer(query, peer).await {
            Ok(doc) => Answer {
                status: 200,
                retry_after: None,
                body: doc.as_ref().clone(),
            },
            Err(e) => Answer {
                status: e.http_status(),
                retry_after: matches!(e, AttestationRequestError::Busy(_)).then_some(RETRY_AFTER),
                body: serde_json::json!({ "error": e.to_string() }).to_string(),
            },
        }
    }
}

/// How many standing documents stay available by their SHA-256: a document is tens of
/// kilobytes with its collateral, and a new one is made only when the served models change.
pub(crate) const KEPT_DOCUMENTS: usize = 16;

/// An answer of `/v1/attestation`: the status, the `Retry-After` seconds of a 429, and the JSON
/// body.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// The HTTP status.
    pub(crate) status: u16,
    /// Seconds after which to ask again (429).
    pub(crate) retry_after: Option<u64>,
    /// The document, or `{"error": ...}`.
    pub(crate) body: String,
}

/// The answer of `/v1/attestation` on a server that publishes none.
pub(crate) fn no_attestation() -> Answer {
    Answer {
        status: 404,
        retry_after: None,
        body: serde_json::json!({
            "error": "this server publishes no attestation: it runs without a TEE platform, or its TLS key is a file the host gave it (serve --attest_host_tls_key publishes one anyway, with key origin \"host\")"
        })
        .to_string(),
    }
}
