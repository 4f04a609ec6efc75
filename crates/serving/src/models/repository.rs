//! The model repository: TF Serving's layout (`base_path/<version>/`), version policies and
//! labels, polling for new and removed versions, and in-memory unsealing of sealed models. A
//! version's format picks its engine: `model.onnx` goes to the ONNX engine, `saved_model.pb`
//! to TensorFlow.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use teeserve_seal::SealKey;

use super::admitted::AdmittedModels;
use super::config::ModelConfig;
use super::files::{
    is_saved_model, read_model, read_saved_model, ModelFileError, MODEL_FILE, SAVED_MODEL_FILE,
    SAVED_MODEL_SEALED_FILE, SEALED_FILE,
};
use super::version_policy::version_dirs;
use super::warmup_file::{read_warmup, records, WarmUp};
use crate::engine::{Engine, LoadedModel, TensorFlowEngine};

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
    /// requests may be batched with other requesters' ([`ModelAdmission::row_independent`](crate::models::ModelAdmission::row_independent)).
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
    warmup: Option<Arc<dyn WarmUp>>,
    key: Option<SealKey>,
    /// The owner's admitted-models list; replaced when the broker releases a new one.
    admitted: RwLock<Option<Arc<AdmittedModels>>>,
    models: RwLock<BTreeMap<String, ModelState>>,
    generation: std::sync::atomic::AtomicU64,
    /// Held by [`ModelRepository::sync`]: the file-system poll and the admitted-list refresh
    /// never load the same version twice at once.
    syncing: std::sync::Mutex<()>,
    /// Held by [`ModelRepository::reload`]: one new model list at a time.
    pub(crate) reloading: std::sync::Mutex<()>,
}

fn stamp(p: &Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// How a server reads model files.
#[derive(Debug, Default)]
pub struct ModelSource {
    /// The key that unseals sealed models. With a key, only sealed models are served.
    pub key: Option<SealKey>,
    /// The owner's list of admitted files, when the key broker released one.
    pub admitted: Option<AdmittedModels>,
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
            warmup: None,
            key: source.key,
            admitted: RwLock::new(source.admitted.map(Arc::new)),
            models: RwLock::new(models),
            generation: std::sync::atomic::AtomicU64::new(0),
            syncing: std::sync::Mutex::new(()),
            reloading: std::sync::Mutex::new(()),
        }
    }

    /// Serves SavedModels with `tensorflow` (without it, a SavedModel version fails to load
    /// with an error that names the flag).
    pub fn with_tensorflow(mut self, tensorflow: Option<Arc<TensorFlowEngine>>) -> Self {
        self.tensorflow = tensorflow;
        self
    }

    /// Replays each version's warmup requests with `warmup` before the version is served
    /// (without it, a warmup file is read and its framing checked, and nothing is replayed).
    pub fn with_warmup(mut self, warmup: Arc<dyn WarmUp>) -> Self {
        self.warmup = Some(warmup);
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
            let aspired = config
                .policy
                .aspire(&dirs, |v, dir| self.ensure(&config.name, v, dir));
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
        let Some(warmup) = &self.warmup else {
            let n = records(&file).map_err(|e| e.to_string())?.len();
            tracing::info!(model = %name, version = v, records = n, "warmup file read; no replay configured");
            return Ok(());
        };
        let n = warmup.replay(model, &file).map_err(|e| e.to_string())?;
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
