//! What a requester reads from a server's attestation document about the key broker's grants,
//! and what `teeserve kbs log check-proof` reads: any bytes as an inclusion proof (C2SP
//! tlog-proof), a consistency proof, a signed note, a checkpoint body or a verifier key, and
//! as a document's `key_release` checked against a policy with a log key. Each is read or
//! refused with a reason; nothing made of these bytes verifies under the fixed key.
//!
//! ```text
//! cargo fuzz run log_proof -- -rss_limit_mb=512
//! ```
#![no_main]
use libfuzzer_sys::fuzz_target;
use teeserve_attest::Policy;
use teeserve_ratls::key_release::{appraise, Grant, KeyRelease};
use teeserve_ratls::tlog::checkpoint::Checkpoint;
use teeserve_ratls::tlog::note::{self, VerifierKey};
use teeserve_ratls::tlog::proof::{ConsistencyProof, InclusionProof};

// golang.org/x/mod/sumdb/note's test key: its private half is public, so a fuzzer could sign
// with it; what must hold is that nothing panics and that a proof accepted is a real proof.
const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = VerifierKey::parse(VKEY).unwrap();
    let _ = VerifierKey::parse(text);
    let _ = Checkpoint::parse_body(text);
    let _ = note::open(text, &key);
    if let Ok(p) = InclusionProof::parse(text) {
        assert_eq!(InclusionProof::parse(&p.to_text()).unwrap(), p);
        let _ = p.verify(&key, None);
    }
    if let Ok(p) = ConsistencyProof::parse(text) {
        assert_eq!(ConsistencyProof::parse(&p.to_text()).unwrap(), p);
        let _ = p.verify(&key);
    }
    let policy = Policy {
        log_key: Some(VKEY.into()),
        ..Policy::default()
    };
    let release = KeyRelease {
        client_key_sha256: "ab".repeat(32),
        grants: vec![Grant {
            secret: "model-key".into(),
            proof: text.to_owned(),
        }],
    };
    let _ = appraise(&policy, Some(&release));
});
