//! Checking a server's attestation before any data leaves: fetch `/v1/attestation` over a fresh
//! nonce, verify and appraise it, and pin the attested TLS key for the data connections.

use crate::error::{Refusal, RequesterError};
use std::sync::Arc;

use teeserve_attest::{Policy, Verdict};
use teeserve_ratls::{Appraiser, AttestationDoc, ModelDigest, PinnedKeyVerifier};

use serde_json::Value;

use crate::transport::{Capture, ClientIdentity, RestClient};

/// What a server answered at `/v1/attestation`, and the certificate of the connection it came
/// over.
#[derive(Debug, Clone)]
pub struct FetchedAttestation {
    /// The document.
    pub doc: AttestationDoc,
    /// The certificate (DER) the server presented on that connection.
    pub cert: Vec<u8>,
}

/// Largest attestation document a requester reads (a document with collateral is tens of KB).
const MAX_DOCUMENT: usize = 4 << 20;

/// How many times a fetch answered 429 is tried again, each after the answer's `Retry-After`.
const BUSY_RETRIES: u32 = 8;
/// The longest `Retry-After` honoured (a longer one is waited this long), and the wait when
/// a 429 gives none.
const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(10);
const DEFAULT_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The wait a 429 asks for: its `Retry-After` in seconds, bounded by [`MAX_RETRY_AFTER`] (an
/// HTTP date, or no header, waits [`DEFAULT_RETRY_AFTER`]).
fn retry_after(headers: &hyper::HeaderMap) -> std::time::Duration {
    headers
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(std::time::Duration::from_secs)
        .unwrap_or(DEFAULT_RETRY_AFTER)
        .min(MAX_RETRY_AFTER)
}

/// A fresh random nonce for [`fetch_attestation`].
pub fn fresh_nonce() -> Result<[u8; 32], RequesterError> {
    let mut n = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut n)
        .map_err(|_| RequesterError::attestation("no randomness for the attestation nonce"))?;
    Ok(n)
}

/// Fetches the server's attestation document (quoted over `nonce` when given) and the
/// certificate it served. Only the nonce leaves on this connection; it is closed after.
pub async fn fetch_attestation(
    addr: &str,
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
    server_name: &str,
    nonce: Option<&[u8]>,
) -> Result<FetchedAttestation, RequesterError> {
    fetch_attestation_as(addr, verifier, None, server_name, nonce).await
}

/// [`fetch_attestation`] presenting a client certificate (a server that requires mutual TLS
/// answers nothing without one).
///
/// A server busy making quotes (429) is asked again after its `Retry-After` (at most
/// 10 s), up to 8 times, on the same connection.
///
/// Every failure is a [`RequesterError::Attestation`]: without the document nothing is sent.
pub async fn fetch_attestation_as(
    addr: &str,
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
    identity: Option<ClientIdentity>,
    server_name: &str,
    nonce: Option<&[u8]>,
) -> Result<FetchedAttestation, RequesterError> {
    fetch_attestation_served(addr, verifier, identity, server_name, nonce)
        .await
        .map(|(fetched, _)| fetched)
}

/// Which document to ask `/v1/attestation` for.
#[derive(Debug, Clone, Copy)]
pub enum DocumentQuery<'a> {
    /// The standing document (no query).
    Standing,
    /// One quoted now over this nonce.
    Nonce(&'a [u8]),
    /// The standing document whose SHA-256 this is, current or one of the last the server
    /// keeps (a receipt names the document standing when its answer was made).
    Sha256(&'a [u8; 32]),
}

impl<'a> From<Option<&'a [u8]>> for DocumentQuery<'a> {
    fn from(nonce: Option<&'a [u8]>) -> Self {
        nonce.map_or(Self::Standing, Self::Nonce)
    }
}

/// [`fetch_attestation_as`], and the document's JSON as the server sent it: the bytes whose
/// SHA-256 the server's receipts name, which a requester keeps to verify them (serializing the
/// parsed document again gives other bytes when the server states a field this requester
/// does not know).
pub async fn fetch_attestation_served(
    addr: &str,
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
    identity: Option<ClientIdentity>,
    server_name: &str,
    nonce: Option<&[u8]>,
) -> Result<(FetchedAttestation, Vec<u8>), RequesterError> {
    fetch_document(addr, verifier, identity, server_name, nonce.into()).await
}

/// [`fetch_attestation_served`] for any [`DocumentQuery`]. A document asked for by its
/// SHA-256 must hash to it.
pub async fn fetch_document(
    addr: &str,
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
    identity: Option<ClientIdentity>,
    server_name: &str,
    query: DocumentQuery<'_>,
) -> Result<(FetchedAttestation, Vec<u8>), RequesterError> {
    let cap = Capture::new(verifier);
    let cfg = crate::transport::client_config(cap.clone(), identity, &[b"http/1.1"])
        .map_err(RequesterError::attestation)?;
    let mut c = RestClient::connect(addr, Some(Arc::new(cfg)), server_name)
        .await
        .map_err(RequesterError::attestation)?;
    let path = match query {
        DocumentQuery::Standing => "/v1/attestation".to_owned(),
        DocumentQuery::Nonce(n) => format!("/v1/attestation?nonce={}", hex::encode(n)),
        DocumentQuery::Sha256(d) => format!("/v1/attestation?sha256={}", hex::encode(d)),
    };
    let mut busy = 0;
    let (status, body) = loop {
        // The server is not trusted yet: its answer is bounded as it arrives.
        let (status, body) = c
            .request_within(hyper::Method::GET, &path, Vec::new(), MAX_DOCUMENT)
            .await
            .map_err(RequesterError::attestation)?;
        if status != 429 || busy == BUSY_RETRIES {
            break (status, body);
        }
        busy += 1;
        tokio::time::sleep(retry_after(c.last_headers())).await;
    };
    if status == 429 {
        return Err(RequesterError::attestation(format!(
            "GET /v1/attestation answered HTTP 429 (busy making quotes) {} times",
            busy + 1
        )));
    }
    if status != 200 {
        let why = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_default();
        // A document asked for by its SHA-256 may be one the server no longer keeps.
        let what = match query {
            DocumentQuery::Sha256(_) => "",
            _ => ": the server publishes no attestation",
        };
        return Err(RequesterError::attestation(format!(
            "GET /v1/attestation answered HTTP {status}{what}{}",
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            }
        )));
    }
    if let DocumentQuery::Sha256(want) = query {
        let got = ring::digest::digest(&ring::digest::SHA256, &body);
        if got.as_ref() != want.as_slice() {
            return Err(RequesterError::attestation(format!(
                "asked for the attestation document with SHA-256 {}, the server sent one with SHA-256 {}",
                hex::encode(want),
                hex::encode(got.as_ref())
            )));
        }
    }
    let doc: AttestationDoc = serde_json::from_slice(&body)
        .map_err(|e| RequesterError::attestation(format!("attestation document: {e}")))?;
    let cert = cap
        .captured()
        .ok_or_else(|| RequesterError::attestation("no server certificate was seen"))?;
    Ok((FetchedAttestation { doc, cert }, body))
}

/// DER SubjectPublicKeyInfo of a certificate.
pub fn spki_of(cert: &[u8]) -> Result<Vec<u8>, RequesterError> {
    server_spki(cert).map_err(RequesterError::attestation)
}

fn server_spki(cert: &[u8]) -> Result<Vec<u8>, String> {
    teeserve_ratls::spki_of(cert).map_err(|e| format!("server certificate: {e}"))
}

/// Checks that the server's TLS key lives in an attested TEE that `policy` admits: the
/// document's quote verifies and binds the key the server presented with the document's
/// statements (key origin, `nonce`, models, the key broker's grants); the policy admits the
/// evidence and the statements (with `log_key`, the grants' proofs in the broker's signed
/// log); and a certificate that carries RA-TLS evidence of its own is appraised as well.
pub fn check_attestation(
    appraiser: &Appraiser,
    policy: &Policy,
    fetched: &FetchedAttestation,
    nonce: Option<&[u8]>,
    at: i64,
) -> Result<Verdict, RequesterError> {
    appraise_attestation(appraiser, policy, fetched, nonce, at)
        .map_err(|r| RequesterError::Attestation(r.message))
}

/// [`check_attestation`], naming the rule that refused.
pub fn appraise_attestation(
    appraiser: &Appraiser,
    policy: &Policy,
    fetched: &FetchedAttestation,
    nonce: Option<&[u8]>,
    at: i64,
) -> Result<Verdict, Refusal> {
    let (doc, cert) = (&fetched.doc, &fetched.cert);
    if teeserve_ratls::parse_cert(cert).is_ok() {
        let v = appraiser.verify_cert(cert, at)?;
        policy.appraise(&v)?;
    }
    let quote = doc.quote_bytes()?;
    let v = appraiser.verify_quote(&quote, at)?;
    policy.appraise(&v)?;
    // What the document states is appraised before its binding is checked: a statement the
    // policy refuses needs no proof, and the refusal then names the rule.
    let served: Vec<_> = doc.models.iter().map(ModelDigest::served).collect();
    policy.appraise_served(doc.key_origin, &served)?;
    // How the server got its secrets: with `log_key`, each grant must be in the key broker's
    // signed log, made to the key this server presented, under a listed configuration.
    teeserve_ratls::key_release::appraise(policy, doc.key_release.as_ref())?;
    let spki = server_spki(cert).map_err(|e| Refusal::new("certificate", e))?;
    doc.check_binding(&v.report_data, &spki, nonce)?;
    Ok(v)
}

/// A TLS client configuration for the data connections to an attested server: every handshake
/// must present the attested key (`attested_cert`'s), and also satisfy `ca` when given; a
/// certificate with RA-TLS evidence has that evidence appraised too when `evidence` is given.
pub fn attested_client_config(
    attested_cert: &[u8],
    ca: Option<Arc<dyn rustls::client::danger::ServerCertVerifier>>,
    evidence: Option<(Arc<Appraiser>, Policy)>,
    identity: Option<ClientIdentity>,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, RequesterError> {
    let mut v = PinnedKeyVerifier::for_cert(attested_cert).map_err(RequesterError::tls)?;
    if let Some(ca) = ca {
        v = v.with_ca(ca);
    }
    if let Some((a, p)) = evidence {
        v = v.with_evidence(a, p);
    }
    crate::transport::client_config(Arc::new(v), identity, alpn)
}

/// The value of [`teeserve_ratls::document::ACCEPT_HEADER`] for a requester with `policy`:
/// one `model=<sha256>,...` entry per model the policy pins, so that the attested server
/// answers every request for those models from a pinned file only. None without pins.
pub fn accept_header(policy: &Policy) -> Option<String> {
    let entries: Vec<String> = policy
        .models
        .iter()
        .filter(|(_, d)| !d.is_empty())
        .map(|(m, d)| {
            let d: Vec<&str> = d.iter().map(|x| x.as_str()).collect();
            format!("{m}={}", d.join(","))
        })
        .collect();
    (!entries.is_empty()).then(|| entries.join(";"))
}

/// The model file that answered: the version the answer names (gRPC), else the one asked for,
/// else the only version of the model the document lists; None when it cannot be told.
pub fn answered_by<'a>(
    doc: &'a AttestationDoc,
    model: &str,
    answered_version: Option<i64>,
    asked_version: Option<i64>,
) -> Option<&'a ModelDigest> {
    let mut versions = doc.models.iter().filter(|m| m.name == model);
    match answered_version.or(asked_version) {
        Some(v) => doc
            .models
            .iter()
            .find(|m| m.name == model && m.version == v),
        None => {
            let first = versions.next()?;
            versions.next().is_none().then_some(first)
        }
    }
}
