//! Checking a receipt after the fact ([`teeserve_ratls::receipt`]): the attestation document
//! that carries the receipt key is verified as `--attest` verifies it (its quote, the policy, the
//! binding of the TLS key and the receipt key), at the time the receipt states; then the
//! receipt's signature under that key, and that the request and response it names are the bytes
//! shown with it, and that it names the very document shown.

use ring::digest::{digest, SHA256};
use teeserve_attest::{Policy, Verdict};
use teeserve_ratls::receipt::{verify, ReceiptClaims};
use teeserve_ratls::Appraiser;

use crate::attestation::{appraise_attestation, FetchedAttestation};
use crate::{attest_server, AttestOptions, Attested, NonceChoice, Refusal};

/// A receipt that verified: what it states, and the verdict on the document's quote.
#[derive(Debug, Clone)]
pub struct CheckedReceipt {
    /// What the receipt states.
    pub claims: ReceiptClaims,
    /// The verdict on the quote of the document that carries the receipt key.
    pub verdict: Verdict,
}

impl CheckedReceipt {
    /// The verdict as `teeserve receipt verify` prints it and the Python package returns it.
    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.claims;
        serde_json::json!({
            "verified": true,
            "model": c.model,
            "version": c.version,
            "model_sha256": hex::encode(c.model_sha256),
            "signature": c.signature,
            "api": c.api.as_str(),
            "method": c.method,
            "time": c.time,
            "counter": c.counter,
            "request_sha256": hex::encode(c.request_sha256),
            "response_sha256": hex::encode(c.response_sha256),
            "tee": self.verdict.tee,
            "tcb_status": self.verdict.tcb_status,
        })
    }
}

/// Verifies `receipt` against the attestation `attested` (its document as served, `doc_json`,
/// and the certificate whose key it binds), `policy`, and the `request` and `response` bytes.
pub fn check_receipt(
    appraiser: &Appraiser,
    policy: &Policy,
    attested: &FetchedAttestation,
    doc_json: &[u8],
    receipt: &[u8],
    request: &[u8],
    response: &[u8],
) -> Result<CheckedReceipt, Refusal> {
    let doc = &attested.doc;
    let key = doc.receipt_key()?.ok_or_else(|| {
        Refusal::new(
            "receipt key",
            "the attestation document carries no receipt key (the server signs no receipts)",
        )
    })?;
    let claims = verify(receipt, &key).map_err(|e| Refusal::new("receipt", e.to_string()))?;
    // The document is appraised as of the receipt's time: was the server admitted when it
    // answered?
    let nonce = doc
        .nonce
        .as_deref()
        .map(teeserve_ratls::document::parse_nonce)
        .transpose()?;
    let verdict = appraise_attestation(
        appraiser,
        policy,
        attested,
        nonce.as_deref(),
        i64::try_from(claims.time).unwrap_or(i64::MAX),
    )?;
    let sha = |b: &[u8]| -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest(&SHA256, b).as_ref());
        out
    };
    // The document as served, or as the same fields serialize again.
    // The re-serialization is made only when the bytes shown are not the ones named.
    let named = |b: &[u8]| claims.attestation_sha256 == sha(b);
    if !named(doc_json) && !named(&serde_json::to_vec(doc).unwrap_or_default()) {
        return Err(Refusal::new(
            "receipt document",
            format!(
                "the receipt names attestation document sha256 {}, not the one shown",
                hex::encode(claims.attestation_sha256)
            ),
        ));
    }
    if claims.request_sha256 != sha(request) {
        return Err(Refusal::new(
            "receipt request",
            format!(
                "the receipt is of a request with sha256 {}, not of the request shown (sha256 {})",
                hex::encode(claims.request_sha256),
                hex::encode(sha(request))
            ),
        ));
    }
    if claims.response_sha256 != sha(response) {
        return Err(Refusal::new(
            "receipt response",
            format!(
                "the receipt is of a response with sha256 {}, not of the response shown (sha256 {})",
                hex::encode(claims.response_sha256),
                hex::encode(sha(response))
            ),
        ));
    }
    let listed = doc.models.iter().any(|m| {
        m.name == claims.model
            && m.version == claims.version
            && m.sha256 == hex::encode(claims.model_sha256)
    });
    if !listed {
        return Err(Refusal::new(
            "receipt model",
            format!(
                "the receipt names {} version {} (sha256 {}), which the attestation document does not list",
                claims.model,
                claims.version,
                hex::encode(claims.model_sha256)
            ),
        ));
    }
    Ok(CheckedReceipt { claims, verdict })
}

/// The attestation document that a server's receipts name, as the server sent it (its JSON):
/// its standing document (the server hashes that one into every receipt). When the admitted
/// document was quoted over the requester's nonce, the standing one is fetched and admitted as
/// well (by `standing`, the same check without a nonce), and must come with the same
/// certificate and the same receipt key. Refuses a server whose document carries no receipt
/// key: it signs no receipts.
pub async fn receipt_document(
    admitted: &Attested,
    standing: AttestOptions,
) -> Result<Vec<u8>, Refusal> {
    let key = admitted.doc.receipt_key()?.ok_or_else(|| {
        Refusal::new(
            "receipt key",
            "the attestation document carries no receipt key: the server signs no receipts",
        )
    })?;
    if admitted.doc.nonce.is_none() {
        return Ok(admitted.doc_json.clone());
    }
    let standing = attest_server(AttestOptions {
        nonce: NonceChoice::Never,
        ..standing
    })
    .await?;
    if standing.cert != admitted.cert {
        return Err(Refusal::new(
            "certificate",
            "the server presented another certificate with its standing attestation document than with the one quoted over the nonce",
        ));
    }
    if standing.doc.receipt_key()? != Some(key) {
        return Err(Refusal::new(
            "receipt key",
            "the server's standing attestation document names another receipt key than the one quoted over the nonce",
        ));
    }
    Ok(standing.doc_json)
}
