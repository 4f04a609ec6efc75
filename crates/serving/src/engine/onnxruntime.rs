//! The ONNX Runtime engine, through the `ort` crate with the library loaded at run time from a
//! path the operator gives (`--onnxruntime_lib`, e.g. the `libonnxruntime.so` that PyPI's
//! onnxruntime wheel ships). Nothing is downloaded at build or run time, and a build without the
//! `onnxruntime` feature does not contain this engine at all.
//!
//! A model is one session, so its weights are in memory once whatever the number of workers (in
//! an enclave, memory is the scarcest resource). `ort` runs a session through `&mut` (its
//! maintainers do not trust ONNX Runtime's `Run` from several threads at once), so inferences on
//! one model take turns, and each spreads its operators over as many threads as there are
//! workers, as TensorFlow Serving runs one session with intra-op threads. Concurrent requests
//! still share a run through the batcher (`--enable_batching`). One session per worker was the
//! alternative: about 15% more throughput on ResNet-50 at 2 workers without batching, for a full
//! copy of the (layout-transformed) weights per worker; see docs/BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorElementType, TensorRef, ValueType};

use super::model::{Engine, EngineError, LoadedModel, RunCost};
use teeserve_tensor::{DType, Data, Tensor};
use teeserve_tensor::{Signature, Signatures, TensorSpec};

/// The library loaded in this process. ONNX Runtime is loaded once per process, so a second
/// engine must name the same library.
static LOADED: OnceLock<PathBuf> = OnceLock::new();

/// The ONNX Runtime engine.
pub struct OnnxRuntimeEngine {
    env: ort::environment::Environment,
    threads: usize,
    version: String,
}

impl std::fmt::Debug for OnnxRuntimeEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OnnxRuntimeEngine(version {}, {} threads per inference)",
            self.version, self.threads
        )
    }
}

impl OnnxRuntimeEngine {
    /// Loads ONNX Runtime from `lib`; each inference runs its operators on `threads` threads (the
    /// worker count).
    pub fn new(lib: &Path, threads: usize) -> Result<Self, EngineError> {
        let library = |detail: String| EngineError::Library {
            engine: "ONNX Runtime",
            path: lib.to_owned(),
            detail,
        };
        if !lib.is_file() {
            return Err(library(
                "no such file (give the path of libonnxruntime.so, e.g. \
                 onnxruntime/capi/libonnxruntime.so.1.* from the onnxruntime Python wheel)"
                    .into(),
            ));
        }
        let lib = lib.canonicalize().map_err(|e| library(e.to_string()))?;
        if let Some(first) = LOADED.get().filter(|first| **first != lib) {
            return Err(library(format!(
                "ONNX Runtime is already loaded from {} in this process",
                first.display(),
            )));
        }
        let env = ort::init_from(&lib)
            .map_err(|e| library(e.to_string()))?
            .with_name("teeserve")
            .build()
            .map_err(|e| library(format!("cannot start ONNX Runtime: {e}")))?;
        // Remembered only once loaded: a library that failed to load does not block another.
        let _ = LOADED.set(lib);
        let version = ort::info()
            .split(',')
            .find_map(|p| p.trim().strip_prefix("git-branch="))
            .unwrap_or("unknown")
            .to_owned();
        Ok(Self {
            env,
            threads: threads.max(1),
            version,
        })
    }

    fn session(&self, onnx_bytes: &[u8]) -> Result<Session, EngineError> {
        let e = |e: ort::Error<_>| load(format!("ONNX Runtime session options: {e}"));
        Session::builder(&self.env)
            .map_err(|e| load(format!("ONNX Runtime: {e}")))?
            .with_intra_threads(self.threads)
            .map_err(e)?
            .with_inter_threads(1)
            .map_err(e)?
            .with_optimization_level(ort::session::builder::GraphOptimizationLevel::All)
            .map_err(e)?
            .commit_from_memory(onnx_bytes)
            .map_err(|e| load(format!("ONNX Runtime cannot load the model: {e}")))
    }
}

fn load(detail: String) -> EngineError {
    EngineError::Load {
        engine: "onnxruntime",
        detail,
    }
}

/// ONNX element types this server speaks (onnxruntime_c_api.h `ONNXTensorElementDataType`).
fn dtype(t: TensorElementType) -> Option<DType> {
    use TensorElementType as T;
    Some(match t {
        T::Float32 => DType::F32,
        T::Float64 => DType::F64,
        T::Int8 => DType::I8,
        T::Int16 => DType::I16,
        T::Int32 => DType::I32,
        T::Int64 => DType::I64,
        T::Uint8 => DType::U8,
        T::Uint16 => DType::U16,
        T::Uint32 => DType::U32,
        T::Uint64 => DType::U64,
        T::Bool => DType::Bool,
        T::String => DType::Str,
        T::Float16 => DType::F16,
        T::Bfloat16 => DType::BF16,
        _ => return None,
    })
}

fn spec(o: &ort::value::Outlet) -> Result<TensorSpec, EngineError> {
    match o.dtype() {
        ValueType::Tensor { ty, shape, .. } => Ok(TensorSpec {
            name: o.name().to_owned(),
            dtype: dtype(*ty).ok_or_else(|| {
                EngineError::Format(format!(
                    "graph value {:?} has unsupported element type {ty}",
                    o.name()
                ))
            })?,
            shape: shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect(),
        }),
        other => Err(EngineError::Format(format!(
            "graph value {:?} is not a tensor ({other})",
            o.name()
        ))),
    }
}

impl Engine for OnnxRuntimeEngine {
    fn name(&self) -> &'static str {
        "onnxruntime"
    }

    fn load(&self, onnx_bytes: &[u8]) -> Result<Arc<dyn LoadedModel>, EngineError> {
        let session = self.session(onnx_bytes)?;
        let signature = Signature {
            inputs: session
                .inputs()
                .iter()
                .map(spec)
                .collect::<Result<_, _>>()?,
            outputs: session
                .outputs()
                .iter()
                .map(spec)
                .collect::<Result<_, _>>()?,
        };
        Ok(Arc::new(OnnxRuntimeModel {
            session: Mutex::new(session),
            signatures: Signatures::single(signature.clone()),
            signature,
            cost: RunCost::default(),
        }))
    }
}

/// A model loaded into ONNX Runtime: one session, which inferences take in turns.
pub(super) struct OnnxRuntimeModel {
    session: Mutex<Session>,
    signature: Signature,
    signatures: Signatures,
    cost: RunCost,
}

impl std::fmt::Debug for OnnxRuntimeModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OnnxRuntimeModel({:?})", self.signature)
    }
}

fn input_value<'a>(t: &'a Tensor, spec: &TensorSpec) -> Result<SessionInputValue<'a>, EngineError> {
    let input = |detail: String| EngineError::Input {
        name: spec.name.clone(),
        detail,
    };
    let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    macro_rules! view {
        ($v:expr) => {
            TensorRef::from_array_view((shape, &$v[..])).map(|t| t.into_dyn().into())
        };
    }
    let v = match &t.data {
        Data::F32(v) => view!(v),
        Data::F64(v) => view!(v),
        Data::I8(v) => view!(v),
        Data::I16(v) => view!(v),
        Data::I32(v) => view!(v),
        Data::I64(v) => view!(v),
        Data::U8(v) => view!(v),
        Data::U16(v) => view!(v),
        Data::U32(v) => view!(v),
        Data::U64(v) => view!(v),
        Data::Bool(v) => view!(v),
        Data::F16(v) => view!(v),
        Data::BF16(v) => view!(v),
        Data::C64(_) | Data::C128(_) => {
            return Err(input(format!(
                "{} tensors are not supported by the ONNX Runtime engine",
                t.dtype().tf_name()
            )))
        }
        Data::Str(v) => {
            let strings = v
                .iter()
                .map(|b| String::from_utf8(b.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| input("ONNX Runtime takes only UTF-8 strings".into()))?;
            ort::value::Tensor::from_string_array((shape, &strings[..]))
                .map(|t| SessionInputValue::Owned(t.into_dyn()))
        }
    };
    v.map_err(|e| input(e.to_string()))
}

fn output(v: &DynValue, name: &str) -> Result<Tensor, EngineError> {
    let output = |detail: String| EngineError::Output {
        name: name.to_owned(),
        detail,
    };
    let ValueType::Tensor { ty, .. } = v.dtype() else {
        return Err(output("not a tensor".into()));
    };
    macro_rules! get {
        ($t:ty, $variant:ident) => {{
            let (shape, data) = v
                .try_extract_tensor::<$t>()
                .map_err(|e| output(e.to_string()))?;
            (shape.to_vec(), Data::$variant(data.to_vec()))
        }};
    }
    use TensorElementType as T;
    let (shape, data) = match ty {
        T::Float32 => get!(f32, F32),
        T::Float64 => get!(f64, F64),
        T::Int8 => get!(i8, I8),
        T::Int16 => get!(i16, I16),
        T::Int32 => get!(i32, I32),
        T::Int64 => get!(i64, I64),
        T::Uint8 => get!(u8, U8),
        T::Uint16 => get!(u16, U16),
        T::Uint32 => get!(u32, U32),
        T::Uint64 => get!(u64, U64),
        T::Bool => get!(bool, Bool),
        T::Float16 => get!(half::f16, F16),
        T::Bfloat16 => get!(half::bf16, BF16),
        T::String => {
            let (shape, s) = v.try_extract_strings().map_err(|e| output(e.to_string()))?;
            (
                shape.to_vec(),
                Data::Str(s.into_iter().map(String::into_bytes).collect()),
            )
        }
        other => return Err(output(format!("unsupported type {other}"))),
    };
    let shape = shape
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| output(format!("dimension {d}"))))
        .collect::<Result<_, _>>()?;
    Ok(Tensor { shape, data })
}

fn run(detail: String) -> EngineError {
    EngineError::Run {
        engine: "onnxruntime",
        detail,
    }
}

impl LoadedModel for OnnxRuntimeModel {
    fn signatures(&self) -> &Signatures {
        &self.signatures
    }

    fn engine(&self) -> &'static str {
        "onnxruntime"
    }

    fn cost(&self) -> &RunCost {
        &self.cost
    }

    fn run(&self, _signature: &str, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        let values = inputs
            .iter()
            .zip(&self.signature.inputs)
            .map(|(t, s)| Ok((s.name.as_str(), input_value(t, s)?)))
            .collect::<Result<Vec<_>, EngineError>>()?;
        let mut guard = self
            .session
            .lock()
            .map_err(|_| run("an earlier inference on this session panicked".into()))?;
        let outputs = guard.run(values).map_err(|e| run(e.to_string()))?;
        self.signature
            .outputs
            .iter()
            .map(|s| {
                outputs
                    .get(&s.name)
                    .ok_or_else(|| run(format!("ONNX Runtime gave no output {:?}", s.name)))
                    .and_then(|v| output(v, &s.name))
            })
            .collect()
    }
}
