//! The attestation document (`/v1/attestation`) on the simulated platform: made by the server,
//! carried as JSON, and checked by a requester against the key it was presented and its own
//! nonce; a document replayed for another nonce, another key, or with an edited statement is
//! refused.
mod common;

use common::{now, tee, MRENCLAVE};
use teeserve_ratls::document::{bind, BINDING_TEXT};
use teeserve_ratls::{AttestationDoc, DocumentError, KeyOrigin, ModelDigest};

fn models() -> Vec<ModelDigest> {
    vec![ModelDigest {
        name: "digits".into(),
        version: 3,
        sha256: "ab".repeat(32),
        operators: "onnx".into(),
        shared_batches: false,
    }]
}

/// What a requester does with a document it fetched: parse it, verify its quote, and check
/// that the quote binds the key it was presented and its nonce.
fn requester_check(
    t: &common::Tee,
    json: &str,
    presented_spki: &[u8],
    nonce: Option<&[u8]>,
) -> Result<(), DocumentError> {
    let doc: AttestationDoc = serde_json::from_str(json).unwrap();
    let v = t
        .appraiser
        .verify_quote(&doc.quote_bytes()?, now())
        .unwrap();
    assert_eq!(v.sgx.as_ref().unwrap().mrenclave, hex::encode(MRENCLAVE));
    doc.check_binding(&v.report_data, presented_spki, nonce)
}

#[test]
fn a_document_binds_key_origin_nonce_and_models() {
    let t = tee();
    let spki = b"the server's SubjectPublicKeyInfo";
    let nonce = [7u8; 32];
    let doc = AttestationDoc::make(
        &t.platform,
        spki,
        KeyOrigin::Broker,
        Some(&nonce),
        models(),
        None,
    )
    .unwrap();
    assert_eq!(doc.platform, "simulated");
    assert_eq!(doc.binding, BINDING_TEXT);
    assert_eq!(doc.nonce.as_deref(), Some(hex::encode(nonce).as_str()));
    assert_eq!(
        doc.tls_spki_sha256,
        hex::encode(ring::digest::digest(&ring::digest::SHA256, spki))
    );
    // The quote's report data is the binding of exactly what the document states.
    let rd = bind(spki, KeyOrigin::Broker, Some(&nonce), &models()).unwrap();
    assert_eq!(doc.report_data, hex::encode(rd));
    let json = serde_json::to_string(&doc).unwrap();
    assert_eq!(serde_json::from_str::<AttestationDoc>(&json).unwrap(), doc);
    requester_check(&t, &json, spki, Some(&nonce)).unwrap();
    // A document without a nonce checks for a requester that sent none.
    let plain =
        AttestationDoc::make(&t.platform, spki, KeyOrigin::Tee, None, vec![], None).unwrap();
    requester_check(&t, &serde_json::to_string(&plain).unwrap(), spki, None).unwrap();
}

#[test]
fn a_replayed_or_edited_document_is_refused() {
    let t = tee();
    let spki = b"the server's SubjectPublicKeyInfo";
    let old_nonce = [1u8; 32];
    let doc = AttestationDoc::make(
        &t.platform,
        spki,
        KeyOrigin::Broker,
        Some(&old_nonce),
        models(),
        None,
    )
    .unwrap();
    let json = serde_json::to_string(&doc).unwrap();
    let fresh = [2u8; 32];
    // Replayed to a requester that sent another nonce.
    assert!(matches!(
        requester_check(&t, &json, spki, Some(&fresh)),
        Err(DocumentError::Nonce(_))
    ));
    // Replayed with its nonce field rewritten to the requester's: the quote does not bind it.
    let mut renonced = doc.clone();
    renonced.nonce = Some(hex::encode(fresh));
    assert!(matches!(
        requester_check(
            &t,
            &serde_json::to_string(&renonced).unwrap(),
            spki,
            Some(&fresh)
        ),
        Err(DocumentError::Binding(_))
    ));
    // A saved document without any nonce, to a requester that sent one.
    let saved =
        AttestationDoc::make(&t.platform, spki, KeyOrigin::Broker, None, models(), None).unwrap();
    assert!(matches!(
        requester_check(
            &t,
            &serde_json::to_string(&saved).unwrap(),
            spki,
            Some(&fresh)
        ),
        Err(DocumentError::Nonce(_))
    ));
    // Served over a connection that presented another key (another endpoint's evidence).
    assert!(matches!(
        requester_check(&t, &json, b"an impostor's key", Some(&old_nonce)),
        Err(DocumentError::Binding(_))
    ));
    // Edited statements: a host key claimed to come from the TEE, a model swapped.
    let mut origin = doc.clone();
    origin.key_origin = KeyOrigin::Tee;
    let mut model = doc.clone();
    model.models[0].sha256 = "cd".repeat(32);
    for edited in [origin, model] {
        assert!(matches!(
            requester_check(
                &t,
                &serde_json::to_string(&edited).unwrap(),
                spki,
                Some(&old_nonce)
            ),
            Err(DocumentError::Binding(_))
        ));
    }
    // The unedited document still checks: the refusals above are the edits'.
    requester_check(&t, &json, spki, Some(&old_nonce)).unwrap();
}
