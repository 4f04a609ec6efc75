//! The attestation document a teeserve server publishes at `/v1/attestation`, and the one
//! definition of what its quote's report data binds.
//!
//! A requester that does not find evidence in the server's certificate (the certificate comes
//! from a CA) fetches this document, verifies its quote, and recomputes [`bind`] from the TLS
//! key the server presented and from what the document states: where that key came from, the
//! requester's own nonce, and the model files being served. A document copied from another
//! endpoint, replayed without the nonce, or edited in any field no longer matches the quote.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use teeserve_attest::platform::Platform;
pub use teeserve_attest::policy::KeyOrigin;

use crate::binding::report_data_over;
pub use crate::key_release::{Grant, KeyRelease};

/// The header (REST) and metadata key (gRPC) in which a requester lists the SHA-256 digests of
/// the model files it accepts an answer from: `[model=]<sha256>[,<sha256>...]` entries
/// separated by `;` (hex as the document lists them; an entry without a model applies to the
/// model the request names). The attested server answers only from such a file, or refuses
/// the request without running it. This is how a requester's pin holds for every request,
/// not only at the handshake.
pub const ACCEPT_HEADER: &str = "x-teeserve-accept-sha256";

/// Largest requester nonce, in bytes (the report data it ends up in is 64 bytes; a longer
/// nonce adds nothing and costs the server hashing and the requester bandwidth).
pub const MAX_NONCE: usize = 64;

/// The text that starts every document binding, so that no other SHA-256 input teeserve or
/// Gramine quotes over (a public key, RA-TLS claims) can be mistaken for one.
const DOMAIN: &[u8] = b"teeserve attestation document v2\0";

/// The label before a receipt key in the binding.
const RECEIPT_KEY_LABEL: &[u8] = b"teeserve receipt key ed25519\0";

/// What the `binding` field of every document says, for a reader of the JSON.
pub const BINDING_TEXT: &str = "report_data = SHA-256(\"teeserve attestation document v2\\0\" || SHA-256(DER SubjectPublicKeyInfo of the served TLS certificate) || key origin (1 tee, 2 broker, 3 host) || nonce length (1 byte) || nonce || model count (4 bytes BE) || per model, sorted by name and version: name length (2 bytes BE) || name || version (8 bytes BE, signed) || SHA-256 of its file || operator policy length (2 bytes BE) || operator policy || shared batches (1 byte, 0 or 1) || [with key_release: SHA-256 of the RA-TLS key presented to the key broker (32 bytes) || grant count (4 bytes BE) || per grant: secret name length (2 bytes BE) || name || SHA-256 of its proof text] || [with receipt_key: \"teeserve receipt key ed25519\\0\" || the 32-byte Ed25519 public key]) || 32 zero bytes";

/// Why a document could not be made, read, or does not bind what it must.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// A field has the wrong shape.
    #[error("attestation document {field}: {reason}")]
    Field {
        /// The JSON field.
        field: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The nonce is missing, too long, or not the requester's.
    #[error("attestation nonce: {0}")]
    Nonce(String),
    /// The quote's report data is not the binding of what the document states and the key the
    /// server presented.
    #[error("attestation binding: {0}")]
    Binding(String),
    /// The platform could not quote.
    #[error("attestation quote: {0}")]
    Platform(#[from] teeserve_attest::platform::PlatformError),
}

/// One served model version and the SHA-256 of the file it was loaded from (the sealed file
/// when sealed).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModelDigest {
    /// Model name.
    pub name: String,
    /// Version.
    pub version: i64,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: String,
    /// The operator policy the server enforced on the model's graph when it loaded it:
    /// `onnx` (ONNX operators only compute), or `teeserve-tensorflow-compute-v1` for a
    /// SavedModel, followed by `+Op1,Op2` when the owner widened it for this model.
    #[serde(default)]
    pub operators: String,
    /// Whether this model's requests may be batched with other requesters' (the owner
    /// declared its rows independent, and batching is on); otherwise a batch holds one
    /// connection's requests only.
    #[serde(default)]
    pub shared_batches: bool,
}

impl ModelDigest {
    /// This version as a requester policy appraises what a server serves
    /// ([`teeserve_attest::Policy::appraise_served`]).
    pub fn served(&self) -> teeserve_attest::policy::ServedVersion<'_> {
        teeserve_attest::policy::ServedVersion {
            name: &self.name,
            version: self.version,
            sha256: &self.sha256,
            operators: &self.operators,
            shared_batches: self.shared_batches,
        }
    }
}

fn field(field: &'static str, reason: impl Into<String>) -> DocumentError {
    DocumentError::Field {
        field,
        reason: reason.into(),
    }
}

/// The canonical encoding of everything a document binds, and its report data
/// ([`report_data_over`] of that encoding; the layout is [`BINDING_TEXT`]). Models are encoded
/// in (name, version) order whatever order they are given in.
pub fn bind(
    spki: &[u8],
    origin: KeyOrigin,
    nonce: Option<&[u8]>,
    models: &[ModelDigest],
) -> Result<[u8; 64], DocumentError> {
    bind_document(spki, origin, nonce, models, None)
}

/// [`bind`] of a document that also states how the server got its secrets: the key release
/// is encoded after the models (a document without one binds exactly as [`bind`]).
pub fn bind_document(
    spki: &[u8],
    origin: KeyOrigin,
    nonce: Option<&[u8]>,
    models: &[ModelDigest],
    key_release: Option<&KeyRelease>,
) -> Result<[u8; 64], DocumentError> {
    bind_statements(spki, origin, nonce, models, key_release, None)
}

/// [`bind_document`] of a document that also carries a receipt key (the Ed25519 public key
/// that signs the server's receipts, [`crate::receipt`]): encoded last, after a label of its
/// own (a document without one binds exactly as [`bind_document`]).
pub fn bind_statements(
    spki: &[u8],
    origin: KeyOrigin,
    nonce: Option<&[u8]>,
    models: &[ModelDigest],
    key_release: Option<&KeyRelease>,
    receipt_key: Option<&[u8; 32]>,
) -> Result<[u8; 64], DocumentError> {
    let nonce = nonce.unwrap_or_default();
    if nonce.len() > MAX_NONCE {
        return Err(DocumentError::Nonce(format!(
            "{} bytes is longer than {MAX_NONCE}",
            nonce.len()
        )));
    }
    let mut sorted: Vec<&ModelDigest> = models.iter().collect();
    sorted.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
    let mut enc = Vec::with_capacity(DOMAIN.len() + 40 + nonce.len() + models.len() * 64);
    enc.extend_from_slice(DOMAIN);
    enc.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, spki).as_ref());
    enc.push(match origin {
        KeyOrigin::Tee => 1,
        KeyOrigin::Broker => 2,
        KeyOrigin::Host => 3,
    });
    enc.push(nonce.len() as u8);
    enc.extend_from_slice(nonce);
    let count = u32::try_from(sorted.len()).map_err(|_| field("models", "too many entries"))?;
    enc.extend_from_slice(&count.to_be_bytes());
    for m in sorted {
        let name = m.name.as_bytes();
        let len = u16::try_from(name.len()).map_err(|_| {
            field(
                "models",
                format!("name of {} bytes is too long", name.len()),
            )
        })?;
        let digest = hex::decode(&m.sha256)
            .ok()
            .filter(|d| d.len() == 32 && m.sha256.bytes().all(|c| !c.is_ascii_uppercase()))
            .ok_or_else(|| {
                field(
                    "models",
                    format!(
                        "{:?} version {}: sha256 {:?} is not 64 lower-case hex digits",
                        m.name, m.version, m.sha256
                    ),
                )
            })?;
        let ops = m.operators.as_bytes();
        let ops_len = u16::try_from(ops.len()).map_err(|_| {
            field(
                "models",
                format!("operator policy of {} bytes is too long", ops.len()),
            )
        })?;
        enc.extend_from_slice(&len.to_be_bytes());
        enc.extend_from_slice(name);
        enc.extend_from_slice(&m.version.to_be_bytes());
        enc.extend_from_slice(&digest);
        enc.extend_from_slice(&ops_len.to_be_bytes());
        enc.extend_from_slice(ops);
        enc.push(u8::from(m.shared_batches));
    }
    if let Some(k) = key_release {
        k.encode_binding(&mut enc)
            .map_err(|e| field("key_release", e))?;
    }
    if let Some(k) = receipt_key {
        enc.extend_from_slice(RECEIPT_KEY_LABEL);
        enc.extend_from_slice(k);
    }
    Ok(report_data_over(&enc))
}

/// Reads a nonce given as hex (as in `GET /v1/attestation?nonce=<hex>`): 1 to [`MAX_NONCE`]
/// bytes.
pub fn parse_nonce(hex_text: &str) -> Result<Vec<u8>, DocumentError> {
    if hex_text.len() > 2 * MAX_NONCE {
        return Err(DocumentError::Nonce(format!(
            "{} hex digits is more than {} ({MAX_NONCE} bytes)",
            hex_text.len(),
            2 * MAX_NONCE
        )));
    }
    let n = hex::decode(hex_text)
        .map_err(|e| DocumentError::Nonce(format!("{hex_text:?} is not hex: {e}")))?;
    if n.is_empty() {
        return Err(DocumentError::Nonce("empty".into()));
    }
    Ok(n)
}

/// The attestation document (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttestationDoc {
    /// The platform that quoted (`gramine`, `tdx`, `simulated`).
    pub platform: String,
    /// The quote, base64.
    pub quote: String,
    /// The quote's report data, hex (what [`bind`] gives for the fields below).
    pub report_data: String,
    /// What the report data binds, in words ([`BINDING_TEXT`]).
    pub binding: String,
    /// SHA-256 (hex) of the DER SubjectPublicKeyInfo of the served TLS certificate. For
    /// reading only: a requester binds the key it was actually presented.
    pub tls_spki_sha256: String,
    /// Where the served TLS key came from.
    pub key_origin: KeyOrigin,
    /// The requester's nonce (hex) this quote was made over, if one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The model versions being served when the quote was made.
    #[serde(default)]
    pub models: Vec<ModelDigest>,
    /// Collateral for verifying the quote offline (dcap-qvl's JSON bundle layout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collateral: Option<serde_json::Value>,
    /// How the server got its secrets from the key broker: the grants and their proofs from
    /// the broker's signed log (when the broker signs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_release: Option<KeyRelease>,
    /// The Ed25519 public key (hex) that signs this server's receipts ([`crate::receipt`]),
    /// made inside the TEE at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_key: Option<String>,
}

/// What a document states besides the TLS key it is about.
#[derive(Debug, Clone)]
pub struct Statements {
    /// Where the TLS key came from.
    pub origin: KeyOrigin,
    /// The requester's nonce, when it gave one.
    pub nonce: Option<Vec<u8>>,
    /// The model versions being served.
    pub models: Vec<ModelDigest>,
    /// Collateral for verifying the quote offline.
    pub collateral: Option<serde_json::Value>,
    /// How the server got its secrets.
    pub key_release: Option<KeyRelease>,
    /// The public key of the server's receipts.
    pub receipt_key: Option<[u8; 32]>,
}

impl AttestationDoc {
    /// Quotes over the binding of `spki`, `origin`, `nonce` and `models` on `platform`.
    pub fn make(
        platform: &dyn Platform,
        spki: &[u8],
        origin: KeyOrigin,
        nonce: Option<&[u8]>,
        models: Vec<ModelDigest>,
        collateral: Option<serde_json::Value>,
    ) -> Result<Self, DocumentError> {
        Self::make_with_key_release(platform, spki, origin, nonce, models, collateral, None)
    }

    /// [`AttestationDoc::make`] of a server that states how it got its secrets.
    pub fn make_with_key_release(
        platform: &dyn Platform,
        spki: &[u8],
        origin: KeyOrigin,
        nonce: Option<&[u8]>,
        models: Vec<ModelDigest>,
        collateral: Option<serde_json::Value>,
        key_release: Option<KeyRelease>,
    ) -> Result<Self, DocumentError> {
        Self::make_from(
            platform,
            spki,
            Statements {
                origin,
                nonce: nonce.map(<[u8]>::to_vec),
                models,
                collateral,
                key_release,
                receipt_key: None,
            },
        )
    }

    /// The document of `statements` about the TLS key `spki`, quoted on `platform`.
    pub fn make_from(
        platform: &dyn Platform,
        spki: &[u8],
        statements: Statements,
    ) -> Result<Self, DocumentError> {
        let Statements {
            origin,
            nonce,
            models,
            collateral,
            key_release,
            receipt_key,
        } = statements;
        let rd = bind_statements(
            spki,
            origin,
            nonce.as_deref(),
            &models,
            key_release.as_ref(),
            receipt_key.as_ref(),
        )?;
        let quote = platform.quote(&rd)?;
        Ok(Self {
            platform: platform.name().to_owned(),
            quote: base64::engine::general_purpose::STANDARD.encode(&quote),
            report_data: hex::encode(rd),
            binding: BINDING_TEXT.to_owned(),
            tls_spki_sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, spki)),
            key_origin: origin,
            nonce: nonce.as_deref().map(hex::encode),
            models,
            collateral,
            key_release,
            receipt_key: receipt_key.map(hex::encode),
        })
    }

    /// The receipt key the document states, if any.
    pub fn receipt_key(&self) -> Result<Option<[u8; 32]>, DocumentError> {
        self.receipt_key
            .as_deref()
            .map(|k| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(k, &mut out)
                    .map_err(|_| field("receipt_key", "not 64 hex digits"))?;
                Ok(out)
            })
            .transpose()
    }

    /// The quote's bytes.
    pub fn quote_bytes(&self) -> Result<Vec<u8>, DocumentError> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.quote)
            .map_err(|e| field("quote", format!("not base64: {e}")))
    }

    /// Checks that `quote_report_data` (hex, from the *verified* quote) is the binding of the
    /// key the server presented (`presented_spki`) and of what this document states, and, when
    /// the requester sent a nonce, that the document was made over it.
    pub fn check_binding(
        &self,
        quote_report_data: &str,
        presented_spki: &[u8],
        expected_nonce: Option<&[u8]>,
    ) -> Result<(), DocumentError> {
        let nonce = self.nonce.as_deref().map(parse_nonce).transpose()?;
        if let Some(want) = expected_nonce {
            match &nonce {
                Some(got) if got[..] == want[..] => {}
                Some(_) => {
                    return Err(DocumentError::Nonce(
                        "the document answers another nonce than the one sent (a replayed document?)"
                            .into(),
                    ))
                }
                None => {
                    return Err(DocumentError::Nonce(
                        "the document was not made over the nonce sent (a saved document replayed, or a server that ignores nonces)"
                            .into(),
                    ))
                }
            }
        }
        let want = bind_statements(
            presented_spki,
            self.key_origin,
            nonce.as_deref(),
            &self.models,
            self.key_release.as_ref(),
            self.receipt_key()?.as_ref(),
        )?;
        if !quote_report_data.eq_ignore_ascii_case(&hex::encode(want)) {
            return Err(DocumentError::Binding(
                "the quote's report data does not bind the TLS key this server presented together with the document's key origin, nonce and models (another endpoint's evidence, or an edited document)"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models() -> Vec<ModelDigest> {
        vec![
            ModelDigest {
                name: "digits".into(),
                version: 2,
                sha256: "22".repeat(32),
                operators: "onnx".into(),
                shared_batches: false,
            },
            ModelDigest {
                name: "digits".into(),
                version: 1,
                sha256: "11".repeat(32),
                operators: "onnx".into(),
                shared_batches: false,
            },
        ]
    }

    #[test]
    fn every_bound_statement_changes_the_report_data() {
        let base = bind(b"key", KeyOrigin::Broker, Some(b"n"), &models()).unwrap();
        let mut reordered = models();
        reordered.reverse();
        assert_eq!(
            base,
            bind(b"key", KeyOrigin::Broker, Some(b"n"), &reordered).unwrap()
        );
        assert_eq!(base[32..], [0u8; 32]);
        let mut other_digest = models();
        other_digest[0].sha256 = "33".repeat(32);
        let mut other_version = models();
        other_version[0].version = 3;
        let mut other_name = models();
        other_name[0].name = "digitz".into();
        let mut other_ops = models();
        other_ops[0].operators = "teeserve-tensorflow-compute-v1+PrintV2".into();
        let mut shared = models();
        shared[1].shared_batches = true;
        for variant in [
            bind(b"kez", KeyOrigin::Broker, Some(b"n"), &models()),
            bind(b"key", KeyOrigin::Host, Some(b"n"), &models()),
            bind(b"key", KeyOrigin::Tee, Some(b"n"), &models()),
            bind(b"key", KeyOrigin::Broker, Some(b"m"), &models()),
            bind(b"key", KeyOrigin::Broker, None, &models()),
            bind(b"key", KeyOrigin::Broker, Some(b"n"), &models()[..1]),
            bind(b"key", KeyOrigin::Broker, Some(b"n"), &other_digest),
            bind(b"key", KeyOrigin::Broker, Some(b"n"), &other_version),
            bind(b"key", KeyOrigin::Broker, Some(b"n"), &other_name),
            bind(b"key", KeyOrigin::Broker, Some(b"n"), &other_ops),
            bind(b"key", KeyOrigin::Broker, Some(b"n"), &shared),
        ] {
            assert_ne!(variant.unwrap(), base);
        }
        // Not the RA-TLS binding of the same key, so neither can stand in for the other.
        assert_ne!(
            bind(b"key", KeyOrigin::Tee, None, &[]).unwrap(),
            report_data_over(b"key")
        );
    }

    #[test]
    fn the_key_release_is_bound_and_its_absence_binds_as_before() {
        let release = KeyRelease {
            client_key_sha256: "ab".repeat(32),
            grants: vec![Grant {
                secret: "model-key".into(),
                proof: "c2sp.org/tlog-proof@v1\nindex 0\n\ncheckpoint".into(),
            }],
        };
        let plain = bind(b"key", KeyOrigin::Broker, None, &models()).unwrap();
        assert_eq!(
            plain,
            bind_document(b"key", KeyOrigin::Broker, None, &models(), None).unwrap()
        );
        let with = bind_document(b"key", KeyOrigin::Broker, None, &models(), Some(&release));
        assert_ne!(with.as_ref().unwrap(), &plain);
        let mut other_proof = release.clone();
        other_proof.grants[0].proof.push('x');
        let mut other_key = release.clone();
        other_key.client_key_sha256 = "cd".repeat(32);
        let mut other_name = release.clone();
        other_name.grants[0].secret = "tls-key".into();
        let mut none = release.clone();
        none.grants.clear();
        for variant in [other_proof, other_key, other_name, none] {
            let rd = bind_document(b"key", KeyOrigin::Broker, None, &models(), Some(&variant));
            assert_ne!(rd.unwrap(), with.as_ref().unwrap()[..]);
        }
        let mut bad = release;
        bad.client_key_sha256 = "xyz".into();
        assert!(bind_document(b"key", KeyOrigin::Broker, None, &models(), Some(&bad)).is_err());
    }

    #[test]
    fn the_receipt_key_is_bound_and_its_absence_binds_as_before() {
        let plain = bind(b"key", KeyOrigin::Tee, None, &models()).unwrap();
        let none = bind_statements(b"key", KeyOrigin::Tee, None, &models(), None, None).unwrap();
        assert_eq!(plain, none);
        let a = bind_statements(
            b"key",
            KeyOrigin::Tee,
            None,
            &models(),
            None,
            Some(&[1; 32]),
        );
        let b = bind_statements(
            b"key",
            KeyOrigin::Tee,
            None,
            &models(),
            None,
            Some(&[2; 32]),
        );
        assert_ne!(a.as_ref().unwrap(), &plain);
        assert_ne!(a.unwrap(), b.unwrap());
    }

    #[test]
    fn bad_nonces_and_digests_are_named() {
        assert!(parse_nonce("").is_err());
        assert!(parse_nonce("xyz")
            .unwrap_err()
            .to_string()
            .contains("not hex"));
        assert!(parse_nonce(&"00".repeat(MAX_NONCE + 1))
            .unwrap_err()
            .to_string()
            .contains("more than"));
        assert_eq!(parse_nonce("0a0B").unwrap(), vec![10, 11]);
        let mut m = models();
        m[1].sha256 = "AB".repeat(32);
        assert!(bind(b"k", KeyOrigin::Tee, None, &m)
            .unwrap_err()
            .to_string()
            .contains("lower-case hex"));
        assert!(bind(b"k", KeyOrigin::Tee, Some(&[0; MAX_NONCE + 1]), &[]).is_err());
    }

    #[test]
    fn a_document_checks_only_against_its_own_key_nonce_and_statements() {
        let rd = bind(b"key", KeyOrigin::Broker, Some(b"nonce"), &models()).unwrap();
        let doc = AttestationDoc {
            platform: "simulated".into(),
            quote: String::new(),
            report_data: hex::encode(rd),
            binding: BINDING_TEXT.into(),
            tls_spki_sha256: String::new(),
            key_origin: KeyOrigin::Broker,
            nonce: Some(hex::encode(b"nonce")),
            models: models(),
            collateral: None,
            key_release: None,
            receipt_key: None,
        };
        let rd = hex::encode(rd);
        doc.check_binding(&rd, b"key", Some(b"nonce")).unwrap();
        doc.check_binding(&rd, b"key", None).unwrap();
        assert!(matches!(
            doc.check_binding(&rd, b"other key", Some(b"nonce")),
            Err(DocumentError::Binding(_))
        ));
        assert!(matches!(
            doc.check_binding(&rd, b"key", Some(b"fresh")),
            Err(DocumentError::Nonce(_))
        ));
        let mut claims_tee = doc.clone();
        claims_tee.key_origin = KeyOrigin::Tee;
        assert!(matches!(
            claims_tee.check_binding(&rd, b"key", Some(b"nonce")),
            Err(DocumentError::Binding(_))
        ));
        let mut no_nonce = doc.clone();
        no_nonce.nonce = None;
        assert!(matches!(
            no_nonce.check_binding(&rd, b"key", Some(b"nonce")),
            Err(DocumentError::Nonce(_))
        ));
    }
}
