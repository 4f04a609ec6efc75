//! The server's side of `/v1/attestation`: the attestation document, quoted again whenever the
//! served models change, and fresh quotes over a requester's nonce, bounded in number.

use std::sync::Arc;

use teeserve_attest::platform::Platform;
use teeserve_ratls::document::{parse_nonce, MAX_NONCE};
use teeserve_ratls::{AttestationDoc, DocumentError, KeyOrigin, ModelDigest};
use tokio::sync::{Mutex, Semaphore};

use crate::repository::ModelRepository;

/// Fresh quotes (over a requester's nonce) made at the same time; more are refused with 429
/// rather than queued, so that a flood of nonces costs the server at most this many quotes
/// in flight.
pub(crate) const MAX_FRESH_QUOTES: usize = 2;

/// Why `/v1/attestation` could not answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttestationRequestError {
    /// The query is malformed (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// Too many fresh quotes are being made (HTTP 429).
    #[error(
        "too many attestation requests with a nonce at once ({} are being quoted); retry",
        MAX_FRESH_QUOTES
    )]
    Busy,
    /// The platform failed (HTTP 500).
    #[error("{0}")]
    Quote(String),
}

impl AttestationRequestError {
    /// The HTTP status for this error.
    pub(crate) fn http_status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Busy => 429,
            Self::Quote(_) => 500,
        }
    }
}

/// Makes and serves the attestation document of one server.
pub(crate) struct Attestor {
    platform: Arc<dyn Platform>,
    spki: Vec<u8>,
    origin: KeyOrigin,
    collateral: Option<serde_json::Value>,
    repo: Arc<ModelRepository>,
    /// The document without a nonce, and the repository generation it describes.
    current: Mutex<Option<(u64, Arc<String>)>>,
    fresh: Semaphore,
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
            fresh: Semaphore::new(MAX_FRESH_QUOTES),
        }
    }

    fn served(&self) -> Vec<ModelDigest> {
        self.repo
            .served()
            .into_iter()
            .map(|m| ModelDigest {
                name: m.name,
                version: m.version,
                sha256: m.sha256,
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
        let doc = tokio::task::spawn_blocking(move || {
            AttestationDoc::make(
                platform.as_ref(),
                &spki,
                origin,
                nonce.as_deref(),
                models,
                collateral,
            )
        })
        .await
        .map_err(|e| AttestationRequestError::Quote(e.to_string()))?
        .map_err(|e: DocumentError| AttestationRequestError::Quote(e.to_string()))?;
        serde_json::to_string(&doc).map_err(|e| AttestationRequestError::Quote(e.to_string()))
    }

    /// The document without a nonce, quoted again when the served models have changed since.
    pub(crate) async fn current(&self) -> Result<Arc<String>, AttestationRequestError> {
        let mut cur = self.current.lock().await;
        // The generation is read before the models, so a change in between makes the next
        // call quote again rather than leave a stale list standing.
        let generation = self.repo.generation();
        if let Some((g, doc)) = cur.as_ref() {
            if *g == generation {
                return Ok(doc.clone());
            }
        }
        let doc = Arc::new(self.make(None).await?);
        *cur = Some((generation, doc.clone()));
        Ok(doc)
    }

    /// Answers `GET /v1/attestation[?nonce=<hex>]`: the current document, or one quoted now
    /// over the requester's nonce (1 to 64 bytes).
    pub(crate) async fn answer(
        &self,
        query: Option<&str>,
    ) -> Result<Arc<String>, AttestationRequestError> {
        let mut nonce = None;
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            match pair.split_once('=') {
                Some(("nonce", v)) if nonce.is_none() => {
                    nonce = Some(
                        parse_nonce(v)
                            .map_err(|e| AttestationRequestError::BadRequest(e.to_string()))?,
                    )
                }
                _ => {
                    let shown: String = pair.chars().take(40).collect();
                    return Err(AttestationRequestError::BadRequest(format!(
                        "unknown or repeated query parameter {shown:?}: the only one is nonce=<hex, at most {MAX_NONCE} bytes>"
                    )));
                }
            }
        }
        match nonce {
            None => self.current().await,
            Some(n) => {
                let _permit = self
                    .fresh
                    .try_acquire()
                    .map_err(|_| AttestationRequestError::Busy)?;
                Ok(Arc::new(self.make(Some(n)).await?))
            }
        }
    }

    /// [`Attestor::answer`] as an HTTP status and a JSON body.
    pub(crate) async fn respond(&self, query: Option<&str>) -> (u16, String) {
        match self.answer(query).await {
            Ok(doc) => (200, doc.as_ref().clone()),
            Err(e) => (
                e.http_status(),
                serde_json::json!({ "error": e.to_string() }).to_string(),
            ),
        }
    }
}

/// The answer of `/v1/attestation` on a server that publishes none.
pub(crate) fn no_attestation() -> (u16, String) {
    (
        404,
        serde_json::json!({
            "error": "this server publishes no attestation: it runs without a TEE platform, or its TLS key is a file the host gave it (serve --attest-host-tls-key publishes one anyway, with key origin \"host\")"
        })
        .to_string(),
    )
}
