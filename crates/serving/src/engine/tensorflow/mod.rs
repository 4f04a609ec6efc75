//! The TensorFlow engine: SavedModels (`saved_model.pb` with `variables/` and `assets/`) loaded
//! through TensorFlow's C API from the library the operator names (`--tensorflow_lib`, e.g.
//! `tensorflow/libtensorflow_cc.so.2` of PyPI's tensorflow-cpu wheel). Nothing is downloaded;
//! a server given no library serves ONNX models only.
//!
//! A model is one TensorFlow session (its weights once per process), shared by every request:
//! TensorFlow sessions run concurrently, spreading each run over the intra-op threads of
//! `--tensorflow_intra_op_parallelism`. Its signatures are those of the loaded MetaGraphDef.
//!
//! A SavedModel is handed to TensorFlow from memory, from the very bytes that were hashed (and
//! unsealed, when sealed), through TensorFlow's built-in `ram://` file system (TensorFlow reads
//! models by path): its files are written there under a unique prefix, loaded, and deleted as
//! soon as the session holds what it needs. Before that, its operators must pass the operator
//! policy ([`ops`]): a graph that could write, print or keep requesters' data is refused.

mod allowlist;
mod ffi;
pub mod ops;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message as _;

use super::model::{EngineError, LoadedModel, RunCost};
use teeserve_tensor::{DType, Data, Tensor};
use teeserve_tensor::{Signature, Signatures, TensorSpec};
use teeserve_wire::tensorflow::{tensor_info, MetaGraphSignatures, TensorInfo};

/// The file that marks a version directory as a SavedModel.
pub const SAVED_MODEL_FILE: &str = "saved_model.pb";
/// The largest outputs one run may give, all together.
const MAX_OUTPUT_BYTES: usize = 2 << 30;

/// How the TensorFlow engine is started (TF Serving's flags of the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorFlowOptions {
    /// The library (`libtensorflow_cc.so.2`, with `libtensorflow_framework.so.2` beside it).
    pub lib: PathBuf,
    /// The MetaGraphDef tags to load (`--saved_model_tags`, default `serve`).
    pub tags: Vec<String>,
    /// Threads of one operation (0: TensorFlow's choice, the cores).
    pub intra_op_parallelism: i32,
    /// Operations run at once (0: TensorFlow's choice).
    pub inter_op_parallelism: i32,
}

impl TensorFlowOptions {
    /// Options with TF Serving's defaults for the library at `lib`.
    pub fn new(lib: PathBuf) -> Self {
        Self {
            lib,
            tags: vec!["serve".into()],
            intra_op_parallelism: 0,
            inter_op_parallelism: 0,
        }
    }

    /// The session's ConfigProto (tensorflow/core/protobuf/config.proto:
    /// `intra_op_parallelism_threads` = 2, `inter_op_parallelism_threads` = 5).
    fn config_proto(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (field, v) in [
            (2u32, self.intra_op_parallelism),
            (5, self.inter_op_parallelism),
        ] {
            if v > 0 {
                prost::encoding::int32::encode(field, &v, &mut out);
            }
        }
        out
    }
}

/// The TensorFlow engine.
///
/// The library (over a gigabyte) is opened when the first SavedModel is loaded, so a server
/// that is given it but serves only ONNX models does not pay for it.
#[derive(Debug)]
pub struct TensorFlowEngine {
    lib: std::sync::OnceLock<Result<&'static ffi::Library, String>>,
    options: TensorFlowOptions,
}

fn load_error(detail: String) -> EngineError {
    EngineError::Load {
        engine: "tensorflow",
        detail,
    }
}

fn run_error(detail: String) -> EngineError {
    EngineError::Run {
        engine: "tensorflow",
        detail,
    }
}

impl TensorFlowEngine {
    /// The engine for TensorFlow at `options.lib`, which must exist; it is loaded (once per
    /// process) when the first SavedModel is.
    pub fn new(options: TensorFlowOptions) -> Result<Self, EngineError> {
        if !options.lib.is_file() {
            return Err(EngineError::Library {
                engine: "TensorFlow",
                path: options.lib.clone(),
                detail: "no such file (give the path of libtensorflow_cc.so.2, e.g. \
                 tensorflow/libtensorflow_cc.so.2 from the tensorflow-cpu Python wheel)"
                    .into(),
            });
        }
        Ok(Self {
            lib: std::sync::OnceLock::new(),
            options,
        })
    }

    fn lib(&self) -> Result<&'static ffi::Library, EngineError> {
        self.lib
            .get_or_init(|| {
                let lib = ffi::Library::open(&self.options.lib)?;
                tracing::info!(version = %lib.version, path = %lib.path.display(), "TensorFlow loaded");
                Ok(lib)
            })
            .clone()
            .map_err(|detail| EngineError::Library {
                engine: "TensorFlow",
                path: self.options.lib.clone(),
                detail,
            })
    }

    /// The library's version (loading it).
    pub fn version(&self) -> Result<&'static str, EngineError> {
        Ok(&self.lib()?.version)
    }

    /// Loads the SavedModel in directory `dir` by path, once its `saved_model.pb` passes the
    /// operator policy (for tools and benchmarks on the owner's machine; the server loads
    /// from memory, [`TensorFlowEngine::load_files`]).
    pub fn load_dir(&self, dir: &Path) -> Result<Arc<dyn LoadedModel>, EngineError> {
        let path = dir
            .to_str()
            .ok_or_else(|| load_error(format!("{}: not a UTF-8 path", dir.display())))?;
        let pb = std::fs::read(dir.join(SAVED_MODEL_FILE))
            .map_err(|e| load_error(format!("{}: {e}", dir.join(SAVED_MODEL_FILE).display())))?;
        ops::check(&pb, &self.options.tags, &[]).map_err(|e| load_error(e.to_string()))?;
        self.load_path(path)
    }

    /// Loads a SavedModel from its files in memory (`saved_model.pb`, `variables/...`, paths
    /// relative to the version directory, `/`-separated), once the operators its serving
    /// signatures reach pass the operator policy widened by `extra_ops` ([`ops::check`]): the
    /// files are written to TensorFlow's `ram://` file system under a unique prefix, loaded,
    /// and deleted right after.
    pub fn load_files(
        &self,
        files: &[(String, &[u8])],
        extra_ops: &[String],
    ) -> Result<Arc<dyn LoadedModel>, EngineError> {
        let pb = files
            .iter()
            .find(|(p, _)| p == SAVED_MODEL_FILE)
            .ok_or_else(|| load_error(format!("no {SAVED_MODEL_FILE} among the files")))?;
        ops::check(pb.1, &self.options.tags, extra_ops).map_err(|e| EngineError::Load {
            engine: "tensorflow",
            detail: format!("operator policy: {e}"),
        })?;
        use ring::rand::SecureRandom as _;
        let mut nonce = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| load_error("no randomness for the ram:// prefix".into()))?;
        let lib = self.lib()?;
        let root = format!("ram://teeserve-{}", hex::encode(nonce));
        let written = self.write_tree(lib, &root, files);
        let loaded = written.and_then(|()| self.load_path(&root));
        let deleted = lib.delete_recursively(&root);
        if let Err(e) = &deleted {
            tracing::error!("cannot delete the unsealed SavedModel from {root}: {e}");
        }
        let model = loaded?;
        deleted.map_err(|e| load_error(format!("deleting the unsealed files: {e}")))?;
        Ok(model)
    }

    fn write_tree(
        &self,
        lib: &'static ffi::Library,
        root: &str,
        files: &[(String, &[u8])],
    ) -> Result<(), EngineError> {
        let mut dirs = std::collections::BTreeSet::new();
        dirs.insert(String::new());
        for (rel, _) in files {
            if rel.is_empty()
                || rel.starts_with('/')
                || rel
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..")
            {
                return Err(load_error(format!("{rel:?} is not a relative file path")));
            }
            let mut parts: Vec<&str> = rel.split('/').collect();
            parts.pop();
            for i in 1..=parts.len() {
                dirs.insert(parts[..i].join("/"));
            }
        }
        for d in &dirs {
            let path = if d.is_empty() {
                root.to_owned()
            } else {
                format!("{root}/{d}")
            };
            lib.create_dir(&path)
                .map_err(|e| load_error(format!("{path}: {e}")))?;
        }
        for (rel, bytes) in files {
            let path = format!("{root}/{rel}");
            lib.write_file(&path, bytes)
                .map_err(|e| load_error(format!("{path}: {e}")))?;
        }
        Ok(())
    }

    fn load_path(&self, path: &str) -> Result<Arc<dyn LoadedModel>, EngineError> {
        let (session, meta) = ffi::Session::load(
            self.lib()?,
            path,
            &self.options.tags,
            &self.options.config_proto(),
        )
        .map_err(|e| {
            load_error(format!(
                "TensorFlow cannot load the SavedModel (tags {:?}): {e}",
                self.options.tags
            ))
        })?;
        let meta = MetaGraphSignatures::decode(meta.as_slice())
            .map_err(|e| EngineError::Format(format!("the loaded MetaGraphDef: {e}")))?;
        let mut signatures = Signatures::default();
        let mut runs = HashMap::new();
        for (name, def) in &meta.signature_def {
            match signature_run(&session, def) {
                Ok((sig, run)) => {
                    signatures.insert(name.clone(), Some(sig), def.clone());
                    runs.insert(name.clone(), run);
                }
                Err(why) => {
                    if !name.starts_with("__") {
                        tracing::warn!("signature {name:?} cannot be served: {why}");
                    }
                    signatures.insert(name.clone(), None, def.clone());
                }
            }
        }
        Ok(Arc::new(TensorFlowModel {
            session,
            runs,
            signatures,
            cost: RunCost::default(),
        }))
    }
}

/// Whether directory `dir` holds a SavedModel.
pub fn is_saved_model(dir: &Path) -> bool {
    dir.join(SAVED_MODEL_FILE).is_file()
}

/// How one signature runs: the graph tensors it feeds and fetches, in signature order.
struct SignatureRun {
    feeds: Vec<(ffi::TfOutput, i32)>,
    fetches: Vec<ffi::TfOutput>,
}

fn tensor_name(i: &TensorInfo) -> Option<&str> {
    match &i.encoding {
        Some(tensor_info::Encoding::Name(n)) => Some(n),
        None => None,
    }
}

fn spec(alias: &str, i: &TensorInfo) -> Result<TensorSpec, String> {
    let dtype = DType::from_tf(i.dtype).map_err(|e| format!("{alias}: {e}"))?;
    let shape = match &i.tensor_shape {
        Some(s) if !s.unknown_rank => s.dim.iter().map(|d| d.size.max(-1)).collect(),
        _ => Vec::new(),
    };
    Ok(TensorSpec {
        name: alias.to_owned(),
        dtype,
        shape,
    })
}

fn signature_run(
    session: &ffi::Session,
    def: &teeserve_wire::tensorflow::SignatureDef,
) -> Result<(Signature, SignatureRun), String> {
    let mut inputs: Vec<(&String, &TensorInfo)> = def.inputs.iter().collect();
    inputs.sort_by(|a, b| a.0.cmp(b.0));
    let mut outputs: Vec<(&String, &TensorInfo)> = def.outputs.iter().collect();
    outputs.sort_by(|a, b| a.0.cmp(b.0));
    if outputs.is_empty() {
        return Err("it has no outputs".into());
    }
    let resolve = |alias: &str, i: &TensorInfo| {
        let name = tensor_name(i).ok_or_else(|| format!("{alias}: not a dense tensor"))?;
        session.output(name)
    };
    let mut sig = Signature::default();
    let mut run = SignatureRun {
        feeds: Vec::new(),
        fetches: Vec::new(),
    };
    for (alias, i) in inputs {
        sig.inputs.push(spec(alias, i)?);
        run.feeds.push((resolve(alias, i)?, i.dtype));
    }
    for (alias, i) in outputs {
        sig.outputs.push(spec(alias, i)?);
        run.fetches.push(resolve(alias, i)?);
    }
    Ok((sig, run))
}

/// A SavedModel loaded into TensorFlow.
pub(super) struct TensorFlowModel {
    session: ffi::Session,
    runs: HashMap<String, SignatureRun>,
    signatures: Signatures,
    cost: RunCost,
}

impl std::fmt::Debug for TensorFlowModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.signatures.names().collect();
        write!(f, "TensorFlowModel(signatures {names:?})")
    }
}

fn from_le<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect()
}

fn output(name: &str, t: ffi::OutTensor) -> Result<Tensor, EngineError> {
    let dtype = DType::from_tf(t.dtype).map_err(|e| EngineError::Output {
        name: name.to_owned(),
        detail: e.to_string(),
    })?;
    let b = &t.bytes;
    let data = match dtype {
        DType::F16 | DType::BF16 | DType::C64 | DType::C128 => {
            teeserve_tensor::from_le_bytes(dtype, b)
        }
        DType::F32 => Data::F32(from_le(b, f32::from_le_bytes)),
        DType::F64 => Data::F64(from_le(b, f64::from_le_bytes)),
        DType::I8 => Data::I8(from_le(b, i8::from_le_bytes)),
        DType::I16 => Data::I16(from_le(b, i16::from_le_bytes)),
        DType::I32 => Data::I32(from_le(b, i32::from_le_bytes)),
        DType::I64 => Data::I64(from_le(b, i64::from_le_bytes)),
        DType::U8 => Data::U8(b.clone()),
        DType::U16 => Data::U16(from_le(b, u16::from_le_bytes)),
        DType::U32 => Data::U32(from_le(b, u32::from_le_bytes)),
        DType::U64 => Data::U64(from_le(b, u64::from_le_bytes)),
        DType::Bool => Data::Bool(b.iter().map(|&x| x != 0).collect()),
        DType::Str => Data::Str(t.strings),
    };
    Tensor::new(t.shape, data).map_err(|e| EngineError::Output {
        name: name.to_owned(),
        detail: e.to_string(),
    })
}

impl LoadedModel for TensorFlowModel {
    fn signatures(&self) -> &Signatures {
        &self.signatures
    }

    fn engine(&self) -> &'static str {
        "tensorflow"
    }

    fn cost(&self) -> &RunCost {
        &self.cost
    }

    fn run_within(
        &self,
        signature: &str,
        inputs: Vec<Tensor>,
        max_output_bytes: usize,
    ) -> Result<Vec<Tensor>, EngineError> {
        let key = if signature.is_empty() {
            teeserve_tensor::DEFAULT_SIGNATURE
        } else {
            signature
        };
        let (Some(run), Some(sig)) = (self.runs.get(key), self.signatures.get(key)) else {
            return Err(run_error(format!("no signature {key:?}")));
        };
        if inputs.len() != run.feeds.len() {
            return Err(run_error(format!(
                "{} inputs for the {} of signature {key:?}",
                inputs.len(),
                run.feeds.len()
            )));
        }
        let mut feeds = Vec::with_capacity(inputs.len());
        for (t, ((out, dtype), spec)) in inputs.iter().zip(run.feeds.iter().zip(&sig.inputs)) {
            if t.dtype().to_tf() as i32 != *dtype {
                return Err(EngineError::Input {
                    name: spec.name.clone(),
                    detail: format!(
                        "{} given, {} expected",
                        t.dtype().tf_name(),
                        spec.dtype.tf_name()
                    ),
                });
            }
            let contents = match &t.data {
                Data::Str(s) => ffi::Contents::Strings(s),
                _ => ffi::Contents::Values(t),
            };
            feeds.push((*out, *dtype, t.shape.as_slice(), contents));
        }
        let limit = MAX_OUTPUT_BYTES.min(max_output_bytes);
        let outs = self
            .session
            .run(&feeds, &run.fetches, limit)
            .map_err(|e| match e {
                ffi::RunFailure::Failed(detail) => run_error(detail),
                ffi::RunFailure::TooLarge { output, bytes } => EngineError::OutputTooLarge {
                    name: sig
                        .outputs
                        .get(output)
                        .map_or_else(|| format!("#{output}"), |s| s.name.clone()),
                    bytes,
                    limit,
                },
            })?;
        outs.into_iter()
            .zip(&sig.outputs)
            .map(|(t, s)| output(&s.name, t))
            .collect()
    }
}
