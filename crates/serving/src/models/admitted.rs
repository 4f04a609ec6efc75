//! The owner's list of admitted model files, released by the key broker with the model key.

use std::collections::BTreeMap;

/// Which model files the owner admits, released by the key broker with the model key: per
/// model, the SHA-256 digests of the sealed files that may be served and/or the lowest version
/// that may be served. A server holding such a list refuses every other file, so a sealed
/// version the owner has retired cannot be brought back by the host.
///
/// JSON: `{"digits": {"sha256": ["<hex>", ...], "min_version": 2}}`; a model absent from the
/// list is not admitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(transparent)]
pub struct AdmittedModels(pub BTreeMap<String, ModelAdmission>);

/// What the owner admits of one model.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelAdmission {
    /// SHA-256 (hex) of the sealed files that may be served; empty: any digest.
    #[serde(default)]
    pub sha256: Vec<String>,
    /// The lowest version that may be served.
    #[serde(default)]
    pub min_version: Option<i64>,
    /// TensorFlow operators this model may use beyond the compute-only policy
    /// ([`crate::engine::tensorflow::ops`]), e.g. `["PrintV2"]`. Only the owner can widen it.
    #[serde(default)]
    pub tensorflow_ops: Vec<String>,
    /// The owner declares that every output row of this model depends only on the same row of
    /// its inputs, so that `--enable_batching` may run its requests in batches with other
    /// requesters' (otherwise a batch holds the requests of one connection only).
    #[serde(default)]
    pub row_independent: bool,
}

impl ModelAdmission {
    /// The operator policy of a model of this admission, for a SavedModel.
    pub fn tensorflow_policy(&self) -> String {
        let base = crate::engine::tensorflow::ops::POLICY_NAME;
        if self.tensorflow_ops.is_empty() {
            base.to_owned()
        } else {
            let mut ops = self.tensorflow_ops.clone();
            ops.sort();
            ops.dedup();
            format!("{base}+{}", ops.join(","))
        }
    }
}

/// The largest admitted-models list read (it comes from the key broker).
const MAX_ADMITTED_BYTES: usize = 1 << 20;

impl AdmittedModels {
    /// Reads the list from its JSON text.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > MAX_ADMITTED_BYTES {
            return Err(format!(
                "{} bytes; the list is at most {MAX_ADMITTED_BYTES}",
                bytes.len()
            ));
        }
        let mut list: Self = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        for (name, m) in list.0.iter_mut() {
            if m.sha256.is_empty() && m.min_version.is_none() {
                return Err(format!(
                    "model {name:?}: give \"sha256\" digests, \"min_version\", or both"
                ));
            }
            for op in &m.tensorflow_ops {
                if op.is_empty()
                    || op.len() > 128
                    || !op.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!(
                        "model {name:?}: tensorflow_ops entry {op:?} is not an operator name"
                    ));
                }
            }
            for d in m.sha256.iter_mut() {
                *d = d.to_ascii_lowercase();
                if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!(
                        "model {name:?}: {d:?} is not a SHA-256 digest (64 hex digits)"
                    ));
                }
            }
        }
        Ok(list)
    }

    /// Why version `version` of `model`, a file with digest `sha256`, is not admitted.
    pub fn refusal(&self, model: &str, version: i64, sha256: &str) -> Option<String> {
        let Some(m) = self.0.get(model) else {
            return Some(format!(
                "the owner's admitted-models list does not name model {model:?}"
            ));
        };
        if let Some(min) = m.min_version {
            if version < min {
                return Some(format!(
                    "version {version} is below the lowest version the owner admits ({min})"
                ));
            }
        }
        if !m.sha256.is_empty() && !m.sha256.iter().any(|d| d == sha256) {
            return Some(format!(
                "SHA-256 {sha256} is not among the digests the owner admits for model {model:?}"
            ));
        }
        None
    }
}
