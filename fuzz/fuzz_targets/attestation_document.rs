//! The attestation document a requester fetches from a server (`GET /v1/attestation`): any
//! bytes are read as a document or refused; a document that is read has its quote, receipt key
//! and nonce read or refused with a reason, its statements checked against the report data it
//! states (as a verified quote would carry it) for a fixed TLS key, with and without a nonce
//! sent, and what it serves appraised by a policy that pins a model. The binding of what a
//! document states checks for that key only, with a nonce sent only when the document was made
//! over it, and no other report data checks.
//!
//! ```text
//! cargo fuzz run attestation_document -- -rss_limit_mb=512
//! ```
#![no_main]
use libfuzzer_sys::fuzz_target;
use teeserve_attest::Policy;
use teeserve_ratls::document::{bind_statements, parse_nonce, MAX_NONCE};
use teeserve_ratls::{AttestationDoc, ModelDigest};

/// The DER SubjectPublicKeyInfo the requester was presented (any bytes: only its hash is bound).
const SPKI: &[u8] = b"the key the requester's handshake presented";
/// The nonce the requester sent, when it sent one.
const NONCE: [u8; 32] = [0x6e; 32];

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = serde_json::from_slice::<AttestationDoc>(data) else {
        return;
    };
    let _ = doc.quote_bytes();
    let receipt_key = doc.receipt_key();
    let nonce = doc.nonce.as_deref().map(parse_nonce);
    if let Some(Ok(n)) = &nonce {
        assert!(!n.is_empty() && n.len() <= MAX_NONCE);
    }
    let unasked = doc.check_binding(&doc.report_data, SPKI, None);
    let asked = doc.check_binding(&doc.report_data, SPKI, Some(&NONCE));
    if unasked.is_err() {
        assert!(asked.is_err());
    }
    // The same statements as an honest server would have quoted them for this key: the binding
    // checks, for this key only, and with a nonce sent only when the document was made over it.
    if let (Ok(key), Ok(nonce)) = (receipt_key, nonce.transpose()) {
        let bound = bind_statements(
            SPKI,
            doc.key_origin,
            nonce.as_deref(),
            &doc.models,
            doc.key_release.as_ref(),
            key.as_ref(),
        );
        if let Ok(rd) = bound {
            let honest = AttestationDoc {
                report_data: hex::encode(rd),
                ..doc.clone()
            };
            let rd = &honest.report_data;
            honest
                .check_binding(rd, SPKI, None)
                .expect("the binding of what a document states checks");
            assert_eq!(
                honest.check_binding(rd, SPKI, Some(&NONCE)).is_ok(),
                nonce.as_deref() == Some(&NONCE[..])
            );
            assert!(honest.check_binding(rd, b"another key", None).is_err());
            assert_eq!(unasked.is_ok(), doc.report_data.eq_ignore_ascii_case(rd));
        }
    }
    let served: Vec<_> = doc.models.iter().map(ModelDigest::served).collect();
    let _ = Policy::default().appraise_served(doc.key_origin, &served);
    let pinned: Policy = serde_json::from_value(serde_json::json!({
        "models": {"digits": ["11".repeat(32)]},
        "tls_key_origin": ["tee", "broker", "host"],
    }))
    .expect("a policy");
    if pinned.appraise_served(doc.key_origin, &served).is_ok() {
        for m in doc.models.iter().filter(|m| m.name == "digits") {
            assert_eq!(m.sha256, "11".repeat(32));
        }
    }
});
