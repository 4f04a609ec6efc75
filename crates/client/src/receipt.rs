//! Checking a receipt after the fact ([`teeserve_ratls::receipt`]): the attestation document
//! that carries the receipt key is verified as `--attest` verifies it (its quote, the policy, the
//! binding of the TLS key and the receipt key), at the time the receipt states; then the
//! receipt's signature under that key, and that the request and response it names are the bytes
//! shown with it, and that it names the very document shown.

use ring::digest::{digest, SHA256};
use teeserve_attest::{Policy, Verdict};
use teeserve_ratls::receipt::{verify, ReceiptClaims};
use teeserve_ratls::Appraiser;

use crate::attestation::{appraise_attestation, DocumentQuery, FetchedAttestation};
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

/// How far a receipt's time may be ahead of the verifier's clock (clocks differ a little).
const RECEIPT_CLOCK_SKEW_SECS: u64 = 300;

/// A receipt's time is the server host's clock, which the host sets (a TEE has no trusted
/// time), and the document is appraised as of it. A receipt dated after now cannot be one
/// made already, and appraised at that time it could pass with collateral that is not yet, or
/// no longer, what the policy would accept today: refused.
fn not_in_the_future(time: u64, now: std::time::SystemTime) -> Result<(), Refusal> {
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if time > now.saturating_add(RECEIPT_CLOCK_SKEW_SECS) {
        return Err(Refusal::new(
            "receipt time",
            format!(
                "the receipt is dated {time}, {} seconds after this verifier's clock ({now}): \
                 a receipt from the future is not one the server made (its time is the server \
                 host's clock)",
                time - now
            ),
        ));
    }
    Ok(())
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
    let key = receipt_key(doc)?;
    let claims = verify(receipt, &key).map_err(|e| Refusal::new("receipt", e.to_string()))?;
    not_in_the_future(claims.time, std::time::SystemTime::now())?;
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
    // The document exactly as served: a file that only parses to the same fields (reformatted,
    // with fields added, or a key repeated) could show another reader what the server never
    // sent.
    if claims.attestation_sha256 != sha(doc_json) {
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
    let key = receipt_key(&admitted.doc)?;
    if admitted.doc.nonce.is_none() {
        return Ok(admitted.doc_json.clone());
    }
    let standing = attest_server(AttestOptions {
        nonce: NonceChoice::Never,
        ..standing
    })
    .await?;
    same_server(&admitted.cert, &key, &standing.cert, &standing.doc)?;
    Ok(standing.doc_json)
}

/// The attestation document a receipt names, given `held`, the standing document a requester
/// holds (its JSON as served) and `cert`, the certificate its data connections are pinned to.
/// When the served models changed after `held` was fetched, the receipt names a later document:
/// that one is fetched by its SHA-256 (the server keeps its last few), admitted by `standing`
/// (its quote and the policy, without a nonce), and must come with the same certificate and
/// the same receipt key as `held`. The receipt's signature is checked first, under `held`'s
/// receipt key, so that only a document the key's holder named is fetched. A receipt that
/// names `held` is not verified here: `held` is returned, to be verified with it.
pub async fn document_of_receipt(
    receipt: &[u8],
    held: &[u8],
    cert: &[u8],
    standing: AttestOptions,
) -> Result<Vec<u8>, Refusal> {
    let named = teeserve_ratls::receipt::named_document(receipt)
        .map_err(|e| Refusal::new("receipt", e.to_string()))?;
    if digest(&SHA256, held).as_ref() == named.as_slice() {
        // Verified later, with the document, by whoever relies on the receipt.
        return Ok(held.to_vec());
    }
    let doc: teeserve_ratls::AttestationDoc = serde_json::from_slice(held)
        .map_err(|e| Refusal::new("receipt document", format!("the document held: {e}")))?;
    let key = receipt_key(&doc)?;
    // Another document is fetched only for a receipt that the held key signed.
    let claims = verify(receipt, &key).map_err(|e| Refusal::new("receipt", e.to_string()))?;
    let o = AttestOptions {
        nonce: NonceChoice::Never,
        ..standing
    };
    let (fetched, doc_json) =
        crate::attested::fetch_query(&o, DocumentQuery::Sha256(&claims.attestation_sha256)).await?;
    crate::attested::admit(&o, &fetched, None)?;
    same_server(cert, &key, &fetched.cert, &fetched.doc)?;
    Ok(doc_json)
}

/// The receipt key a document carries; refused when it carries none (the server signs no
/// receipts).
fn receipt_key(doc: &teeserve_ratls::AttestationDoc) -> Result<[u8; 32], Refusal> {
    doc.receipt_key()?.ok_or_else(|| {
        Refusal::new(
            "receipt key",
            "the attestation document carries no receipt key: the server signs no receipts",
        )
    })
}

/// A second document of one server: presented with the same certificate, naming the same
/// receipt key.
fn same_server(
    cert: &[u8],
    key: &[u8; 32],
    other_cert: &[u8],
    other: &teeserve_ratls::AttestationDoc,
) -> Result<(), Refusal> {
    if other_cert != cert {
        return Err(Refusal::new(
            "certificate",
            "the server presented another certificate with its standing attestation document than with the one first admitted",
        ));
    }
    if other.receipt_key()?.as_ref() != Some(key) {
        return Err(Refusal::new(
            "receipt key",
            "the server's standing attestation document names another receipt key than the one first admitted",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_receipt_from_the_future_is_refused_and_clock_skew_is_allowed() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert!(not_in_the_future(1_700_000_000, now).is_ok());
        assert!(not_in_the_future(1_800_000_000 + RECEIPT_CLOCK_SKEW_SECS, now).is_ok());
        let e = not_in_the_future(1_800_000_000 + RECEIPT_CLOCK_SKEW_SECS + 1, now).unwrap_err();
        assert_eq!(e.rule, "receipt time");
        assert!(e.message.contains("301 seconds after"), "{}", e.message);
        assert!(not_in_the_future(u64::MAX, now).is_err());
    }
}
