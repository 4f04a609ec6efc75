//! How a server got its secrets, as its attestation document states it: the key broker's
//! grants, each with the proof that the broker's signed audit log holds it, and the
//! requester's check of them against its policy (`log_key`, `policy_sha256`).
//!
//! The broker answers a granted `GET /v1/secrets/{name}` with the header [`LOG_PROOF_HEADER`]:
//! base64 of a C2SP tlog-proof whose extra data is the grant's log entry (a JSON line naming
//! the secret, the policy that admitted the peer, the SHA-256 of the broker's configuration
//! file, and the SHA-256 of the RA-TLS key the peer presented). The server copies these proofs,
//! and the key it presented, into its document, where the quote's binding covers them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use teeserve_attest::{Policy, PolicyError};

use crate::tlog::checkpoint::Checkpoint;
use crate::tlog::note::VerifierKey;
use crate::tlog::proof::{InclusionProof, MAX_PROOF_TEXT};

/// The response header that carries a grant's inclusion proof (base64 of the proof text).
pub const LOG_PROOF_HEADER: &str = "teeserve-log-proof";

/// One secret the key broker granted, and the proof that its log holds the grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The secret's name.
    pub secret: String,
    /// The inclusion proof of the grant's log entry (C2SP tlog-proof text, the entry in its
    /// extra line).
    pub proof: String,
}

/// The grants a server received from the key broker, and the key it presented to get them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRelease {
    /// SHA-256 (hex) of the DER SubjectPublicKeyInfo of the RA-TLS certificate the server
    /// presented to the broker; each grant's entry names the key it was granted to.
    pub client_key_sha256: String,
    /// The grants, in the order received.
    pub grants: Vec<Grant>,
}

/// A grant's log entry, the fields a requester checks.
#[derive(Debug, Clone, Deserialize)]
pub struct GrantEntry {
    /// `granted`.
    pub decision: String,
    /// The secret.
    #[serde(default)]
    pub secret: Option<String>,
    /// The broker policy that admitted the peer.
    #[serde(default)]
    pub policy: Option<String>,
    /// SHA-256 (hex) of the broker's configuration file as loaded when it granted.
    #[serde(default)]
    pub policy_sha256: Option<String>,
    /// SHA-256 (hex) of the RA-TLS key the peer presented.
    #[serde(default)]
    pub peer_key_sha256: Option<String>,
}

/// The header value for a proof text.
pub fn encode_proof_header(proof: &str) -> String {
    STANDARD.encode(proof.as_bytes())
}

/// The proof text of a header value.
pub fn decode_proof_header(value: &[u8]) -> Result<String, String> {
    if value.len() > MAX_PROOF_TEXT * 2 {
        return Err(format!(
            "{LOG_PROOF_HEADER}: {} bytes is too long",
            value.len()
        ));
    }
    let bytes = STANDARD
        .decode(value)
        .map_err(|e| format!("{LOG_PROOF_HEADER} is not base64: {e}"))?;
    String::from_utf8(bytes).map_err(|_| format!("{LOG_PROOF_HEADER} is not UTF-8 text"))
}

impl KeyRelease {
    /// Appends what the quote binds of the grants: the presented key's hash (32 bytes), the
    /// grant count (4 bytes BE), and per grant the name's length (2 bytes BE), the name and
    /// SHA-256 of the proof text.
    pub(crate) fn encode_binding(&self, enc: &mut Vec<u8>) -> Result<(), String> {
        let key = hex::decode(&self.client_key_sha256)
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| {
                format!(
                    "client_key_sha256 {:?} is not 64 hex digits",
                    self.client_key_sha256
                )
            })?;
        enc.extend_from_slice(&key);
        let count = u32::try_from(self.grants.len()).map_err(|_| "too many grants".to_owned())?;
        enc.extend_from_slice(&count.to_be_bytes());
        for g in &self.grants {
            let len = u16::try_from(g.secret.len())
                .map_err(|_| format!("secret name of {} bytes is too long", g.secret.len()))?;
            enc.extend_from_slice(&len.to_be_bytes());
            enc.extend_from_slice(g.secret.as_bytes());
            enc.extend_from_slice(
                ring::digest::digest(&ring::digest::SHA256, g.proof.as_bytes()).as_ref(),
            );
        }
        Ok(())
    }
}

fn refuse(policy: &Policy, rule: &'static str, detail: String) -> PolicyError {
    PolicyError {
        policy: policy.name.clone(),
        rule,
        detail,
    }
}

/// Checks a server's grants against `policy`: with `log_key` set, every grant's proof must
/// verify in a checkpoint signed by that key, its entry must grant that secret to the key the
/// server states it presented, and (with `policy_sha256`) under a listed broker
/// configuration; there must be at least one grant. Returns each grant's checkpoint and
/// entry (none without `log_key`).
pub fn appraise(
    policy: &Policy,
    release: Option<&KeyRelease>,
) -> Result<Vec<(Checkpoint, GrantEntry)>, PolicyError> {
    let Some(log_key) = &policy.log_key else {
        return Ok(Vec::new());
    };
    let key = VerifierKey::parse(log_key)
        .map_err(|e| refuse(policy, "log_key", format!("the policy's log_key: {e}")))?;
    let release = release.filter(|r| !r.grants.is_empty()).ok_or_else(|| {
        refuse(
            policy,
            "log_key",
            format!(
                "the server's attestation document carries no key-broker grant with a proof from the log {}: it did not get its secrets from a broker that signs its log with this key",
                key.label()
            ),
        )
    })?;
    let mut out = Vec::with_capacity(release.grants.len());
    for g in &release.grants {
        let what = |e: String| refuse(policy, "log_key", format!("grant of {:?}: {e}", g.secret));
        let proof = InclusionProof::parse(&g.proof).map_err(|e| what(e.to_string()))?;
        let checkpoint = proof.verify(&key, None).map_err(|e| what(e.to_string()))?;
        let entry: GrantEntry = serde_json::from_slice(proof.extra.as_deref().unwrap_or_default())
            .map_err(|e| what(format!("the logged entry is not a grant: {e}")))?;
        if entry.decision != "granted" || entry.secret.as_deref() != Some(g.secret.as_str()) {
            return Err(what(format!(
                "entry {} of the log is not a grant of this secret (decision {:?}, secret {:?})",
                proof.index, entry.decision, entry.secret
            )));
        }
        if entry.peer_key_sha256.as_deref() != Some(release.client_key_sha256.as_str()) {
            return Err(what(format!(
                "entry {} granted it to RA-TLS key sha256 {}, not to the key this server states it presented ({}): a grant replayed from another server",
                proof.index,
                entry.peer_key_sha256.as_deref().unwrap_or("(none)"),
                release.client_key_sha256
            )));
        }
        if !policy.policy_sha256.is_empty() {
            let got = entry.policy_sha256.as_deref().unwrap_or("(none)");
            if !policy.policy_sha256.iter().any(|p| p == got) {
                return Err(refuse(
                    policy,
                    "policy_sha256",
                    format!(
                        "the key broker granted {:?} (log entry {}, tree size {}) under configuration sha256 {got}, which is not one of {:?}",
                        g.secret, proof.index, checkpoint.size, policy.policy_sha256
                    ),
                ));
            }
        }
        out.push((checkpoint, entry));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlog::merkle::{leaf_hash, CompactTree};
    use crate::tlog::note::SigningKey;

    /// A log of a refusal and one grant of `model-key` to `peer` under configuration `conf`,
    /// and the grant's proof.
    fn grant(key: &SigningKey, peer: &str, conf: &str) -> String {
        let mut t = CompactTree::new();
        t.push(leaf_hash(br#"{"decision":"refused","rule":"mrenclave"}"#));
        let entry = format!(
            r#"{{"decision":"granted","secret":"model-key","policy":"p","policy_sha256":"{conf}","peer_key_sha256":"{peer}"}}"#
        );
        let path = t.push(leaf_hash(entry.as_bytes()));
        let checkpoint = Checkpoint {
            origin: key.name().into(),
            size: t.size(),
            root: t.root(),
        }
        .sign(key)
        .unwrap();
        InclusionProof {
            extra: Some(entry.into_bytes()),
            index: 1,
            path,
            checkpoint,
        }
        .to_text()
    }

    fn policy(key: &SigningKey, confs: &[String]) -> Policy {
        Policy {
            log_key: Some(key.verifier().to_string()),
            policy_sha256: confs.to_vec(),
            ..Policy::default()
        }
    }

    #[test]
    fn grants_are_admitted_only_from_the_log_to_this_server_under_a_listed_policy() {
        let key = SigningKey::generate("teeserve.test/kbs").unwrap();
        let (me, other) = ("aa".repeat(32), "bb".repeat(32));
        let (v1, v2) = ("11".repeat(32), "22".repeat(32));
        let release = |proof: String| KeyRelease {
            client_key_sha256: me.clone(),
            grants: vec![Grant {
                secret: "model-key".into(),
                proof,
            }],
        };
        let good = release(grant(&key, &me, &v2));
        let got = appraise(&policy(&key, std::slice::from_ref(&v2)), Some(&good)).unwrap();
        assert_eq!(got[0].0.size, 2);
        assert_eq!(got[0].1.policy.as_deref(), Some("p"));
        // No log key in the policy: nothing is required.
        assert!(appraise(&Policy::default(), None).unwrap().is_empty());
        let rule = |p: &Policy, r: Option<&KeyRelease>| {
            let e = appraise(p, r).unwrap_err();
            (e.rule, e.detail)
        };
        let (r, d) = rule(&policy(&key, &[]), None);
        assert_eq!(r, "log_key");
        assert!(d.contains("no key-broker grant"), "{d}");
        // Another server's grant, replayed.
        let (r, d) = rule(&policy(&key, &[]), Some(&release(grant(&key, &other, &v2))));
        assert_eq!(r, "log_key");
        assert!(d.contains("replayed"), "{d}");
        // Granted under the configuration before a change.
        let (r, d) = rule(
            &policy(&key, std::slice::from_ref(&v2)),
            Some(&release(grant(&key, &me, &v1))),
        );
        assert_eq!(r, "policy_sha256");
        assert!(d.contains(&v1), "{d}");
        // Signed by another key of the same name.
        let forged = SigningKey::generate("teeserve.test/kbs").unwrap();
        let (r, d) = rule(&policy(&key, &[]), Some(&release(grant(&forged, &me, &v2))));
        assert_eq!(r, "log_key");
        assert!(d.contains("not signed by"), "{d}");
        // An entry edited after the checkpoint was signed.
        let edited = grant(&key, &me, &v2).replacen("extra ", "extra X", 1);
        assert_eq!(
            rule(&policy(&key, &[]), Some(&release(edited))).0,
            "log_key"
        );
        // A grant of another secret named as this one.
        let mut renamed = good.clone();
        renamed.grants[0].secret = "tls-key".into();
        assert_eq!(rule(&policy(&key, &[]), Some(&renamed)).0, "log_key");
        let mut bad_key = policy(&key, &[]);
        bad_key.log_key = Some("nonsense".into());
        assert!(rule(&bad_key, Some(&good))
            .1
            .contains("the policy's log_key"));
    }

    #[test]
    fn the_header_round_trips_a_proof() {
        let text = "c2sp.org/tlog-proof@v1\nindex 0\n\ncp\n";
        assert_eq!(
            decode_proof_header(encode_proof_header(text).as_bytes()).unwrap(),
            text
        );
        assert!(decode_proof_header(b"not base64!").is_err());
    }
}
