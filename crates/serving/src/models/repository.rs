//! The model repository: TF Serving's layout (`base_path/<version>/`), version policies and
//! labels, polling for new and removed versions, and in-memory unsealing of sealed models. A
//! version's format picks its engine: `model.onnx` goes to the ONNX engine, `saved_model.pb`
//! to TensorFlow.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use teeserve_seal::SealKey;
use teeserve_seal::{binding, stream};

use crate::engine::{Engine, LoadedModel, TensorFlowEngine};
use crate::models::config::{ModelConfig, VersionPolicy};

/// The plaintext model file of a version directory.
pub const MODEL_FILE: &str = "model.onnx";
/// The sealed model file of a version directory.
pub const SEALED_FILE: &str = "model.onnx.sealed";
/// The largest model file accepted (for a SavedModel: all its files together).
pub const MAX_MODEL_BYTES: u64 = 4 << 30;
/// The SavedModel file of a version directory (TensorFlow's format; its engine is TensorFlow).
pub(crate) const SAVED_MODEL_FILE: &str = crate::engine::tensorflow::SAVED_MODEL_FILE;
/// The sealed SavedModel file; every other file of the version is sealed beside it the same way.
pub(crate) const SAVED_MODEL_SEALED_FILE: &str = "saved_model.pb.sealed";
/// The most files a SavedModel version may have.
pub(crate) const MAX_SAVED_MODEL_FILES: usize = 100_000;
/// The suffix `teeserve seal` gives sealed files.
const SEALED_SUFFIX: &str = ".sealed";

/// A version's lifecycle state (TF Serving's ModelVersionStatus.State).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Being loaded.
    Loading,
    /// Serving.
    Available,
    /// Failed to load (see the error) or unloaded.
    End,
}

/// One version of a model.
#[derive(Debug, Clone)]
pub struct VersionState {
    /// State.
    pub state: State,
    /// Why loading failed.
    pub error: Option<String>,
    /// The loaded model.
    pub model: Option<Arc<dyn LoadedModel>>,
    /// SHA-256 (hex) of the model file as it lies on disk (the sealed file when sealed).
    pub digest: Option<String>,
    /// What the model's code may do ([`ModelCode`]), when loaded.
    pub code: Option<ModelCode>,
    stamp: Option<(u64, SystemTime)>,
}

/// What a loaded version's code may do, as the attestation document states it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelCode {
    /// The operator policy its graph was checked against: `onnx` for ONNX models (whose
    /// operators only compute), [`crate::engine::tensorflow::ops::POLICY_NAME`] for
    /// SavedModels, followed by `+Op1,Op2` when the owner widened it for this model.
    pub operators: String,
    /// The owner declared that its rows are computed independently of each other, so its
    /// requests may be batched with other requesters' ([`ModelAdmission::row_independent`]).
    pub row_independent: bool,
}

/// A version being served, as the attestation document lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServedModel {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: i64,
    /// SHA-256 (hex) of the file the version was loaded from (the sealed file when sealed).
    pub sha256: String,
    /// What its code may do.
    pub code: ModelCode,
}

/// One model.
#[derive(Debug, Clone)]
pub struct ModelState {
    /// Its configuration.
    pub config: ModelConfig,
    /// Versions by number.
    pub versions: BTreeMap<i64, VersionState>,
}

/// Why a model cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// Unknown model, or no such available version.
    NotFound(String),
    /// Unknown label.
    BadLabel(String),
    /// No served version is one the request accepts (its `x-teeserve-accept-sha256`).
    NotAccepted(String),
}

/// A model version a request resolved to: the model's name, the version and the loaded model.
pub struct ResolvedModel {
    /// Model name.
    pub name: String,
    /// Version.
    pub version: i64,
    /// The model.
    pub model: Arc<dyn LoadedModel>,
    /// SHA-256 (hex) of the file it was loaded from.
    pub digest: String,
    /// Whether the owner declared its rows independent ([`ModelCode::row_independent`]).
    pub row_independent: bool,
}

/// The served models by name: their configured sources, loaded versions and states.
#[derive(Debug)]
pub struct ModelRepository {
    engine: Arc<dyn Engine>,
    tensorflow: Option<Arc<TensorFlowEngine>>,
    key: Option<SealKey>,
    /// The owner's admitted-models list; replaced when the broker releases a new one.
    admitted: RwLock<Option<Arc<AdmittedModels>>>,
    models: RwLock<BTreeMap<String, ModelState>>,
    generation: std::sync::atomic::AtomicU64,
    /// Held by [`ModelRepository::sync`]: the file-system poll and the admitted-list refresh
    /// never load the same version twice at once.
    syncing: std::sync::Mutex<()>,
}

fn stamp(p: &Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// A model's plaintext (kept in memory only) and the SHA-256 (hex) of the file it came from.
pub(crate) type ModelBytes = (zeroize::Zeroizing<Vec<u8>>, String);

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// Why a version's model file was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is larger than the server accepts.
    #[error("{path}: {len} bytes is larger than the 4 GiB accepted")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// A sealed file, and no key to open it.
    #[error("{path} is sealed but no model key was provisioned")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A plaintext model on a server that unseals its models: the host could choose the model.
    #[error("{path} is a plaintext model, and this server serves only sealed models (it holds a model key): a plaintext file on the host's disk would let the host choose what runs; seal it with `teeserve seal`")]
    PlaintextRefused {
        /// The file.
        path: PathBuf,
    },
    /// A SavedModel, and no TensorFlow engine.
    #[error("{dir} holds a TensorFlow SavedModel, and this server was given no TensorFlow library (--tensorflow-lib, or TEESERVE_TENSORFLOW_LIB)")]
    NoTensorFlow {
        /// The version directory.
        dir: PathBuf,
    },
    /// A SavedModel with more files than accepted.
    #[error("{dir}: more than {MAX_SAVED_MODEL_FILES} files")]
    TooManyFiles {
        /// The version directory.
        dir: PathBuf,
    },
    /// Neither file is there.
    #[error(
        "{dir} has none of model.onnx, model.onnx.sealed, saved_model.pb, saved_model.pb.sealed"
    )]
    Missing {
        /// The version directory.
        dir: PathBuf,
    },
    /// The sealed file is bound to another model, version or file.
    #[error("{path}: the file is sealed for {found:?}, not for {expected:?}; a sealed model cannot be moved to another model or version{}", binding_hint(found, expected))]
    WrongBinding {
        /// The file.
        path: PathBuf,
        /// The name in the file.
        found: String,
        /// The name this place in the repository needs.
        expected: String,
    },
    /// Unsealing failed (wrong key, tampering, bad format).
    #[error("{path}: {source}")]
    Unseal {
        /// The file.
        path: PathBuf,
        /// The error.
        source: teeserve_seal::SealError,
    },
    /// The owner's list of admitted model files does not admit this one.
    #[error("{path}: {reason}")]
    NotAdmitted {
        /// The file.
        path: PathBuf,
        /// Which rule of the list refused it.
        reason: String,
    },
}

/// The likely fix of a sealed file found in another place than it was sealed for.
fn binding_hint(found: &str, expected: &str) -> String {
    let split = |n: &str| -> Option<(String, String)> {
        let mut parts = n.splitn(3, '/');
        let model = parts.next()?.to_owned();
        let version = parts.next()?.to_owned();
        parts.next()?;
        Some((model, version))
    };
    match (split(found), split(expected)) {
        (Some((fm, fv)), Some((em, ev))) if fm != em && fv == ev => format!(
            ": it was sealed as model {fm:?}; serve it as --model_name {fm} (or name it so in the model config), or seal it again with `teeserve seal --name {em}`"
        ),
        (Some((_, fv)), Some((_, ev))) if fv != ev => format!(
            ": it was sealed as version {fv}; put it back in {fv}/, or seal the model again"
        ),
        _ => " (sealed by an older teeserve? seal it again: `teeserve seal --name <model>`)".into(),
    }
}

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

/// How a server reads model files.
#[derive(Debug, Default)]
pub struct ModelSource {
    /// The key that unseals sealed models. With a key, only sealed models are served.
    pub key: Option<SealKey>,
    /// The owner's list of admitted files, when the key broker released one.
    pub admitted: Option<AdmittedModels>,
}

/// The warmup file of a version (TF Serving's `assets.extra/tf_serving_warmup_requests`), in
/// memory: sealed and bound to `<model>/<version>/assets.extra/tf_serving_warmup_requests` when
/// the server holds a model key (a plaintext one is then refused, as any plaintext model file
/// is), plaintext otherwise. `None` when the version has none.
fn read_warmup(
    dir: &Path,
    model: &str,
    version: i64,
    key: Option<&SealKey>,
) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, ModelFileError> {
    use crate::api::warmup::{MAX_WARMUP_BYTES, WARMUP_FILE};
    let plain = dir.join(WARMUP_FILE);
    let sealed = dir.join(format!("{WARMUP_FILE}{SEALED_SUFFIX}"));
    let read = |p: &Path| -> Result<zeroize::Zeroizing<Vec<u8>>, ModelFileError> {
        let io = |source| ModelFileError::Io {
            path: p.to_owned(),
            source,
        };
        let len = std::fs::metadata(p).map_err(io)?.len();
        if len > MAX_WARMUP_BYTES {
            return Err(ModelFileError::TooLarge {
                path: p.to_owned(),
                len,
            });
        }
        Ok(zeroize::Zeroizing::new(std::fs::read(p).map_err(io)?))
    };
    let Some(key) = key else {
        return if plain.is_file() {
            read(&plain).map(Some)
        } else {
            Ok(None)
        };
    };
    if plain.exists() {
        return Err(ModelFileError::PlaintextRefused { path: plain });
    }
    if !sealed.is_file() {
        return Ok(None);
    }
    let bytes = read(&sealed)?;
    let unseal = |source| ModelFileError::Unseal {
        path: sealed.clone(),
        source,
    };
    let (header, _) = stream::SealedHeader::parse(&bytes).map_err(unseal)?;
    let expected = binding::model_file(model, version, WARMUP_FILE);
    if header.name != expected {
        return Err(ModelFileError::WrongBinding {
            path: sealed,
            found: header.name,
            expected,
        });
    }
    let plaintext = stream::unseal_to_vec(key, &bytes, Some(&expected)).map_err(unseal)?;
    Ok(Some(plaintext))
}

fn read_file(p: &Path) -> Result<Vec<u8>, ModelFileError> {
    let io = |source| ModelFileError::Io {
        path: p.to_owned(),
        source,
    };
    let len = std::fs::metadata(p).map_err(io)?.len();
    if len > MAX_MODEL_BYTES {
        return Err(ModelFileError::TooLarge {
            path: p.to_owned(),
            len,
        });
    }
    std::fs::read(p).map_err(io)
}

/// Reads version `version` of model `model` from its directory `dir`, unsealing it in memory
/// when sealed (the plaintext stays in memory). With a key, the version must be sealed, for
/// this model and version; with an admitted-models list, the list must admit it.
pub(crate) fn read_model(
    dir: &Path,
    model: &str,
    version: i64,
    key: Option<&SealKey>,
    admitted: Option<&AdmittedModels>,
) -> Result<ModelBytes, ModelFileError> {
    let sealed = dir.join(SEALED_FILE);
    let plain = dir.join(MODEL_FILE);
    let admit = |path: &Path, digest: &str| match admitted
        .and_then(|a| a.refusal(model, version, digest))
    {
        Some(reason) => Err(ModelFileError::NotAdmitted {
            path: path.to_owned(),
            reason,
        }),
        None => Ok(()),
    };
    if sealed.exists() {
        let key = key.ok_or_else(|| ModelFileError::NoKey {
            path: sealed.clone(),
        })?;
        let unseal = |source| ModelFileError::Unseal {
            path: sealed.clone(),
            source,
        };
        // The bound name is checked from the header alone, so a misplaced file is refused
        // without reading all of it.
        let io = |source| ModelFileError::Io {
            path: sealed.clone(),
            source,
        };
        let mut head = Vec::new();
        std::fs::File::open(&sealed)
            .map_err(io)?
            .take((stream::MAX_NAME + 1024) as u64)
            .read_to_end(&mut head)
            .map_err(io)?;
        let (header, _) = stream::SealedHeader::parse(&head).map_err(unseal)?;
        let expected = binding::model_file(model, version, MODEL_FILE);
        if header.name != expected {
            return Err(ModelFileError::WrongBinding {
                path: sealed,
                found: header.name,
                expected,
            });
        }
        let bytes = read_file(&sealed)?;
        let digest = sha256_hex(&bytes);
        admit(&sealed, &digest)?;
        let plaintext = stream::unseal_to_vec(key, &bytes, Some(&expected)).map_err(unseal)?;
        return Ok((plaintext, digest));
    }
    if plain.exists() {
        if key.is_some() {
            return Err(ModelFileError::PlaintextRefused { path: plain });
        }
        let bytes = zeroize::Zeroizing::new(read_file(&plain)?);
        let digest = sha256_hex(&bytes);
        admit(&plain, &digest)?;
        return Ok((bytes, digest));
    }
    Err(ModelFileError::Missing {
        dir: dir.to_owned(),
    })
}

/// Whether a version directory holds a TensorFlow SavedModel (plaintext or sealed).
pub(crate) fn is_saved_model(dir: &Path) -> bool {
    dir.join(SAVED_MODEL_FILE).is_file() || dir.join(SAVED_MODEL_SEALED_FILE).is_file()
}

/// A SavedModel version as read by [`read_saved_model`].
#[derive(Debug)]
pub(crate) struct SavedModelFiles {
    /// The files (path in the version, plaintext bytes), kept in memory only: unsealed when
    /// sealed, as read (and hashed) when plaintext. TensorFlow loads these bytes, never the
    /// directory again, so the host cannot swap a file between the hashing and the load.
    pub plaintext: Vec<(String, zeroize::Zeroizing<Vec<u8>>)>,
    /// SHA-256 (hex) of the version's manifest: the lines `<sha256 of the file> <path>\n`, one
    /// per file as it lies on disk (sealed files when sealed), sorted by path.
    pub digest: String,
}

/// The files under `dir`, as paths relative to it with `/` separators, sorted.
fn files_under(dir: &Path) -> Result<Vec<String>, ModelFileError> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_owned(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        let io = |source| ModelFileError::Io {
            path: d.clone(),
            source,
        };
        for e in std::fs::read_dir(&d).map_err(io)? {
            let e = e.map_err(io)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let t = e.file_type().map_err(io)?;
            if t.is_dir() {
                stack.push((e.path(), rel));
            } else if t.is_file() {
                out.push(rel);
            }
            if out.len() + stack.len() > MAX_SAVED_MODEL_FILES {
                return Err(ModelFileError::TooManyFiles {
                    dir: dir.to_owned(),
                });
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads the SavedModel version `version` of `model` in `dir`. A sealed version (every file
/// sealed by `teeserve seal`, each bound to `<model>/<version>/<path in the version>`) is
/// unsealed in memory; with a key, only sealed versions are served; with an admitted-models
/// list, the list must admit the version's manifest digest.
pub(crate) fn read_saved_model(
    dir: &Path,
    model: &str,
    version: i64,
    key: Option<&SealKey>,
    admitted: Option<&AdmittedModels>,
) -> Result<SavedModelFiles, ModelFileError> {
    let sealed = dir.join(SAVED_MODEL_SEALED_FILE).is_file();
    if !sealed && key.is_some() {
        return Err(ModelFileError::PlaintextRefused {
            path: dir.join(SAVED_MODEL_FILE),
        });
    }
    let mut manifest = String::new();
    let mut plaintext = Vec::new();
    let mut total = 0u64;
    for rel in files_under(dir)? {
        let path = dir.join(&rel);
        let bytes = zeroize::Zeroizing::new(read_file(&path)?);
        total = total.saturating_add(bytes.len() as u64);
        if total > MAX_MODEL_BYTES {
            return Err(ModelFileError::TooLarge { path, len: total });
        }
        manifest.push_str(&format!("{} {rel}\n", sha256_hex(&bytes)));
        if !sealed {
            plaintext.push((rel, bytes));
            continue;
        }
        let Some(inner) = rel.strip_suffix(SEALED_SUFFIX) else {
            // A plaintext file beside sealed ones would be a file the host chose.
            return Err(ModelFileError::PlaintextRefused { path });
        };
        let key = key.ok_or_else(|| ModelFileError::NoKey { path: path.clone() })?;
        let unseal = |source| ModelFileError::Unseal {
            path: path.clone(),
            source,
        };
        let (header, _) = stream::SealedHeader::parse(&bytes).map_err(unseal)?;
        let expected = binding::model_file(model, version, inner);
        if header.name != expected {
            return Err(ModelFileError::WrongBinding {
                path,
                found: header.name,
                expected,
            });
        }
        let plain = stream::unseal_to_vec(key, &bytes, Some(&expected)).map_err(unseal)?;
        plaintext.push((inner.to_owned(), plain));
    }
    let digest = sha256_hex(manifest.as_bytes());
    if let Some(reason) = admitted.and_then(|a| a.refusal(model, version, &digest)) {
        return Err(ModelFileError::NotAdmitted {
            path: dir.to_owned(),
            reason,
        });
    }
    Ok(SavedModelFiles { plaintext, digest })
}

fn version_dirs(base: &Path) -> Result<BTreeMap<i64, PathBuf>, String> {
    let mut out = BTreeMap::new();
    let rd = std::fs::read_dir(base).map_err(|e| format!("{}: {e}", base.display()))?;
    for e in rd.flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        if let Some(v) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<i64>().ok())
        {
            if v >= 0 {
                out.insert(v, p);
            }
        }
    }
    Ok(out)
}

impl ModelRepository {
    /// A repository of `configs`, loading with `engine`, reading model files from `source`.
    pub fn new(engine: Arc<dyn Engine>, source: ModelSource, configs: Vec<ModelConfig>) -> Self {
        let models = configs
            .into_iter()
            .map(|c| {
                (
                    c.name.clone(),
                    ModelState {
                        config: c,
                        versions: BTreeMap::new(),
                    },
                )
            })
            .collect();
        Self {
            engine,
            tensorflow: None,
            key: source.key,
            admitted: RwLock::new(source.admitted.map(Arc::new)),
            models: RwLock::new(models),
            generation: std::sync::atomic::AtomicU64::new(0),
            syncing: std::sync::Mutex::new(()),
        }
    }

    /// Serves SavedModels with `tensorflow` (without it, a SavedModel version fails to load
    /// with an error that names the flag).
    pub fn with_tensorflow(mut self, tensorflow: Option<Arc<TensorFlowEngine>>) -> Self {
        self.tensorflow = tensorflow;
        self
    }

    /// Replaces the model list (a new `--model_config_file`): new models are added, models not
    /// in the list are unloaded.
    pub fn set_configs(&self, configs: Vec<ModelConfig>) {
        if let Ok(mut m) = self.models.write() {
            let mut next = BTreeMap::new();
            for c in configs {
                let versions = m
                    .get(&c.name)
                    .map(|s| s.versions.clone())
                    .unwrap_or_default();
                next.insert(
                    c.name.clone(),
                    ModelState {
                        config: c,
                        versions,
                    },
                );
            }
            *m = next;
        }
        self.bump();
    }

    /// Scans every base path once: loads aspired versions that are new or changed, unloads the
    /// rest. A version that fails to load is reported in status; older versions keep serving.
    pub fn sync(&self) {
        let _one_at_a_time = self.syncing.lock();
        let snapshot: Vec<ModelConfig> = match self.models.read() {
            Ok(m) => m.values().map(|s| s.config.clone()).collect(),
            Err(_) => return,
        };
        for config in snapshot {
            let dirs = match version_dirs(Path::new(&config.base_path)) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!("model {}: {e}", config.name);
                    BTreeMap::new()
                }
            };
            // Latest(n) walks down from the newest version until n are available, so a broken
            // new version is reported in status while the previous one keeps serving
            // (TF Serving's availability-preserving behaviour).
            let mut aspired = Vec::new();
            match &config.policy {
                VersionPolicy::Latest(n) => {
                    let mut available = 0;
                    for (v, dir) in dirs.iter().rev() {
                        if available >= *n {
                            break;
                        }
                        aspired.push(*v);
                        if self.ensure(&config.name, *v, dir) {
                            available += 1;
                        }
                    }
                }
                VersionPolicy::All => {
                    for (v, dir) in &dirs {
                        aspired.push(*v);
                        self.ensure(&config.name, *v, dir);
                    }
                }
                VersionPolicy::Specific(want) => {
                    for v in want {
                        if let Some(dir) = dirs.get(v) {
                            aspired.push(*v);
                            self.ensure(&config.name, *v, dir);
                        }
                    }
                }
            }
            if let Ok(mut m) = self.models.write() {
                if let Some(s) = m.get_mut(&config.name) {
                    let before: Vec<i64> = s.versions.keys().copied().collect();
                    s.versions.retain(|v, _| aspired.contains(v));
                    for v in before.iter().filter(|v| !s.versions.contains_key(v)) {
                        tracing::info!(model = %config.name, version = v, "version unloaded");
                    }
                    if before.len() != s.versions.len() {
                        self.generation
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            }
        }
    }

    /// Loads version `v` from `dir` unless it is loaded and unchanged; true when available.
    fn ensure(&self, name: &str, v: i64, dir: &Path) -> bool {
        let file = [
            SEALED_FILE,
            MODEL_FILE,
            SAVED_MODEL_SEALED_FILE,
            SAVED_MODEL_FILE,
        ]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
        .unwrap_or_else(|| dir.join(MODEL_FILE));
        let st = stamp(&file);
        let current = self.models.read().ok().and_then(|m| {
            m.get(name)
                .and_then(|s| s.versions.get(&v).map(|x| (x.stamp, x.state)))
        });
        if let Some((stamp, state)) = current {
            if stamp == st {
                return state == State::Available;
            }
        }
        self.set_version(
            name,
            v,
            VersionState {
                state: State::Loading,
                error: None,
                model: None,
                digest: None,
                code: None,
                stamp: st,
            },
        );
        // The list as it is now; a list released later is applied by `set_admitted`.
        let admitted = self.admitted();
        let admission = admitted.as_ref().and_then(|a| a.0.get(name)).cloned();
        let loaded = if is_saved_model(dir) {
            self.load_saved_model(dir, name, v, admitted.as_deref())
        } else {
            read_model(dir, name, v, self.key.as_ref(), admitted.as_deref())
                .map_err(|e| e.to_string())
                .and_then(|(bytes, digest)| {
                    let model = self.engine.load(&bytes).map_err(|e| e.to_string())?;
                    Ok((model, digest))
                })
        };
        let loaded = loaded.and_then(|(model, digest)| {
            self.warm_up(dir, name, v, &*model)?;
            Ok((model, digest))
        });
        let (state, ok) = match loaded {
            Ok((model, digest)) => {
                tracing::info!(model = %name, version = v, engine = model.engine(), sha256 = %digest, "version loaded");
                let admission = admission.unwrap_or_default();
                let code = ModelCode {
                    operators: if model.engine() == "tensorflow" {
                        admission.tensorflow_policy()
                    } else {
                        "onnx".to_owned()
                    },
                    row_independent: admission.row_independent,
                };
                (
                    VersionState {
                        state: State::Available,
                        error: None,
                        model: Some(model),
                        digest: Some(digest),
                        code: Some(code),
                        stamp: st,
                    },
                    true,
                )
            }
            Err(e) => {
                tracing::error!(model = %name, version = v, "cannot load: {e}");
                (
                    VersionState {
                        state: State::End,
                        error: Some(e),
                        model: None,
                        digest: None,
                        code: None,
                        stamp: st,
                    },
                    false,
                )
            }
        };
        self.set_version(name, v, state);
        ok
    }

    /// Replays the version's warmup requests, if it has a warmup file, before it is served.
    fn warm_up(
        &self,
        dir: &Path,
        name: &str,
        v: i64,
        model: &dyn LoadedModel,
    ) -> Result<(), String> {
        let Some(file) = read_warmup(dir, name, v, self.key.as_ref()).map_err(|e| e.to_string())?
        else {
            return Ok(());
        };
        let n = crate::api::warmup::replay(model, &file).map_err(|e| e.to_string())?;
        tracing::info!(model = %name, version = v, records = n, "warmup requests replayed");
        Ok(())
    }

    /// Loads the SavedModel of version `v` in `dir` with TensorFlow, from the bytes that were
    /// hashed (and unsealed, when sealed: [`read_saved_model`]), once its operators pass the
    /// operator policy, widened only by what the owner's admitted-models list allows it.
    fn load_saved_model(
        &self,
        dir: &Path,
        name: &str,
        v: i64,
        admitted: Option<&AdmittedModels>,
    ) -> Result<(Arc<dyn LoadedModel>, String), String> {
        let tf = self.tensorflow.as_ref().ok_or_else(|| {
            ModelFileError::NoTensorFlow {
                dir: dir.to_owned(),
            }
            .to_string()
        })?;
        let files = read_saved_model(dir, name, v, self.key.as_ref(), admitted)
            .map_err(|e| e.to_string())?;
        let extra = admitted
            .and_then(|a| a.0.get(name))
            .map(|m| m.tensorflow_ops.clone())
            .unwrap_or_default();
        let refs: Vec<(String, &[u8])> = files
            .plaintext
            .iter()
            .map(|(p, b)| (p.clone(), b.as_slice()))
            .collect();
        let model = tf
            .load_files(&refs, &extra)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok((model, files.digest))
    }

    /// The owner's admitted-models list in force.
    pub fn admitted(&self) -> Option<Arc<AdmittedModels>> {
        self.admitted.read().ok().and_then(|a| a.clone())
    }

    /// Applies a new admitted-models list from the owner: every loaded version the new list
    /// does not admit stops serving at once (its status says why), versions refused before
    /// are tried again at the next [`ModelRepository::sync`], and what a version's code may do
    /// (operators, row independence) is taken from the new list when it is next loaded.
    /// Returns the versions retired, or None when the list is the one in force (nothing to do).
    pub fn set_admitted(&self, list: Option<AdmittedModels>) -> Option<Vec<(String, i64)>> {
        let list = list.map(Arc::new);
        if let Ok(mut a) = self.admitted.write() {
            if *a == list {
                return None;
            }
            *a = list.clone();
        }
        let mut retired = Vec::new();
        if let Ok(mut m) = self.models.write() {
            for (name, s) in m.iter_mut() {
                for (v, x) in s.versions.iter_mut() {
                    let Some(digest) = &x.digest else {
                        // Not loaded: try again with the new list.
                        x.stamp = None;
                        continue;
                    };
                    let refusal = list.as_ref().and_then(|l| l.refusal(name, *v, digest));
                    let adm = list
                        .as_ref()
                        .and_then(|l| l.0.get(name).cloned())
                        .unwrap_or_default();
                    let tensorflow = x.model.as_ref().is_some_and(|m| m.engine() == "tensorflow");
                    let mut code_changed = false;
                    if let Some(c) = x.code.as_mut() {
                        c.row_independent = adm.row_independent;
                        code_changed = tensorflow && c.operators != adm.tensorflow_policy();
                    }
                    if let Some(reason) = refusal {
                        tracing::warn!(model = %name, version = v, "retired by the owner: {reason}");
                        retired.push((name.clone(), *v));
                        x.state = State::End;
                        x.model = None;
                        x.code = None;
                        x.digest = None;
                        x.error = Some(format!(
                            "retired by the owner's admitted-models list: {reason}"
                        ));
                    } else if code_changed {
                        // Loaded under other terms: load again under the new ones.
                        x.stamp = None;
                    }
                }
            }
        }
        self.bump();
        Some(retired)
    }

    fn set_version(&self, name: &str, v: i64, state: VersionState) {
        if let Ok(mut m) = self.models.write() {
            if let Some(s) = m.get_mut(name) {
                s.versions.insert(v, state);
            }
        }
        self.bump();
    }

    fn bump(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// A counter that changes whenever the set of served versions may have changed (a version
    /// loaded, failed or unloaded, or the model list replaced): whoever describes the served
    /// models (the attestation document) compares it to know when to describe them again.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The versions available now, with the digests of the files they were loaded from,
    /// ordered by model name and version.
    pub fn served(&self) -> Vec<ServedModel> {
        let Ok(m) = self.models.read() else {
            return Vec::new();
        };
        m.iter()
            .flat_map(|(name, s)| {
                s.versions
                    .iter()
                    .filter(|(_, x)| x.state == State::Available && x.model.is_some())
                    .map(move |(v, x)| ServedModel {
                        name: name.clone(),
                        version: *v,
                        sha256: x.digest.clone().unwrap_or_default(),
                        code: x.code.clone().unwrap_or_default(),
                    })
            })
            .collect()
    }

    /// Resolves a model and version (a number, a label, or the newest available).
    pub fn resolve(
        &self,
        name: &str,
        version: Option<i64>,
        label: Option<&str>,
    ) -> Result<ResolvedModel, ResolveError> {
        self.resolve_accepting(name, version, label, None)
    }

    /// [`ModelRepository::resolve`] for a request that accepts only model files with one of
    /// the SHA-256 digests `accepted` (lower-case hex): a version or label must name such a
    /// file, and without one the newest version with such a file answers. The request's
    /// input is never given to another version.
    pub fn resolve_accepting(
        &self,
        name: &str,
        version: Option<i64>,
        label: Option<&str>,
        accepted: Option<&[String]>,
    ) -> Result<ResolvedModel, ResolveError> {
        let m = self
            .models
            .read()
            .map_err(|_| ResolveError::NotFound("repository unavailable".into()))?;
        let latest =
            || ResolveError::NotFound(format!("Servable not found for request: Latest({name})"));
        let s = m.get(name).ok_or_else(latest)?;
        let version = match (version, label) {
            (Some(v), _) => Some(v),
            (None, Some(l)) => Some(*s.config.labels.get(l).ok_or_else(|| {
                ResolveError::BadLabel(format!("Unrecognized servable version label: {l}"))
            })?),
            (None, None) => None,
        };
        let ok = |x: &VersionState| {
            accepted.is_none_or(|a| x.digest.as_ref().is_some_and(|d| a.contains(d)))
        };
        let not_accepted = |what: String| {
            let a = accepted.unwrap_or_default();
            ResolveError::NotAccepted(format!(
                "{what}: this request accepts only model files with SHA-256 {} (x-teeserve-accept-sha256), and no such file of model {name} is being served; the request was not run",
                a.join(" or ")
            ))
        };
        let found = match version {
            Some(v) => {
                let x = s.versions.get(&v).filter(|x| x.model.is_some());
                match x {
                    None => Err(ResolveError::NotFound(format!(
                        "Servable not found for request: Specific({name}, {v})"
                    ))),
                    Some(x) if !ok(x) => Err(not_accepted(format!(
                        "version {v} is served from a file with SHA-256 {}",
                        x.digest.as_deref().unwrap_or("unknown")
                    ))),
                    Some(x) => Ok((v, x)),
                }
            }
            None => match s
                .versions
                .iter()
                .rev()
                .find(|(_, x)| x.model.is_some() && ok(x))
            {
                Some((v, x)) => Ok((*v, x)),
                None if s.versions.values().any(|x| x.model.is_some()) => {
                    Err(not_accepted("no version it accepts".into()))
                }
                None => Err(latest()),
            },
        };
        let (version, x) = found?;
        let Some(model) = x.model.clone() else {
            return Err(latest());
        };
        Ok(ResolvedModel {
            name: name.to_owned(),
            version,
            model,
            digest: x.digest.clone().unwrap_or_default(),
            row_independent: x.code.as_ref().is_some_and(|c| c.row_independent),
        })
    }

    /// A copy of one model's state.
    pub fn model(&self, name: &str) -> Option<ModelState> {
        self.models.read().ok()?.get(name).cloned()
    }

    /// Names of all configured models.
    pub fn names(&self) -> Vec<String> {
        self.models
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// True when every configured model has an available version.
    pub fn ready(&self) -> bool {
        self.models
            .read()
            .map(|m| {
                !m.is_empty()
                    && m.values()
                        .all(|s| s.versions.values().any(|v| v.state == State::Available))
            })
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::binding_hint;

    #[test]
    fn a_misplaced_sealed_file_gets_the_fix_that_applies() {
        let h = binding_hint("prod/1/model.onnx", "mymodel/1/model.onnx");
        assert!(
            h.contains("--model_name prod") && h.contains("teeserve seal --name mymodel"),
            "{h}"
        );
        let h = binding_hint("prod/1/model.onnx", "prod/2/model.onnx");
        assert!(h.contains("sealed as version 1") && h.contains("1/"), "{h}");
        let h = binding_hint("1/model.onnx", "prod/1/model.onnx");
        assert!(h.contains("older teeserve"), "{h}");
    }
}
