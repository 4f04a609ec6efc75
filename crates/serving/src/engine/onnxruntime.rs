//! The ONNX Runtime engine, through the `ort` crate with the library loaded at run time from a
//! path the operator gives (`--onnxruntime_lib`, e.g. the `libonnxruntime.so` that PyPI's
//! onnxruntime wheel ships). Nothing is downloaded at build or run time, and a build without the
//! `onnxruntime` feature does not contain this engine at all.
//!
//! A model is one session, so its weights are in memory once whatever the number of workers (in
//! an enclave, memory is the scarcest resource), and concurrent requests run on it at once:
//! [`OnnxRuntimeModel::run`] calls the C API's `Run` on the shared session, as TensorFlow
//! Serving calls `Session::Run` from every request thread and onnxruntime's Python binding
//! calls `Run` with the GIL released. The safety argument is written there. Each inference
//! spreads its operators over `--onnxruntime_intra_op_parallelism` threads of the session's
//! pool; by default (`0`) it is chosen from the load, per inference: an inference that runs
//! alone spreads over every worker's thread (one request's latency), one that runs beside
//! others takes one thread (the cores are busy already). ONNX Runtime fixes a session's threads
//! when the session is made, so that choice takes two sessions of the model, which share one
//! copy of its weights (`ort_weights.rs`).

use std::ffi::{c_char, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorElementType, TensorRef, ValueType};
use ort::AsPointer as _;

use super::model::{Engine, EngineError, LoadedModel, OutputRoom, RunCost};
use super::ort_weights::{self, Scratch, WeightInputs, Weights};
use teeserve_tensor::{DType, Data, Tensor};
use teeserve_tensor::{Signature, Signatures, TensorSpec};

/// The library loaded in this process and its environment. ONNX Runtime is loaded once per
/// process and allows one environment, so a second engine must name the same library, and
/// shares the environment.
static LOADED: Mutex<Option<(PathBuf, ort::environment::Environment)>> = Mutex::new(None);

/// The ONNX Runtime engine.
pub struct OnnxRuntimeEngine {
    env: ort::environment::Environment,
    threads: usize,
    /// Whether each model gets a second session of one thread, for inferences that run beside
    /// others.
    by_load: bool,
    /// Inferences running on this engine's models now.
    running: Arc<AtomicUsize>,
    version: String,
}

impl std::fmt::Debug for OnnxRuntimeEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let beside = if self.by_load {
            ", 1 beside others"
        } else {
            ""
        };
        write!(
            f,
            "OnnxRuntimeEngine(version {}, {} threads per inference{beside})",
            self.version, self.threads
        )
    }
}

impl OnnxRuntimeEngine {
    /// Loads ONNX Runtime from `lib`; each inference runs its operators on `threads` threads of
    /// its session's pool or, when `by_load` is set and other inferences are running, on one.
    pub fn new(lib: &Path, threads: usize, by_load: bool) -> Result<Self, EngineError> {
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
        let mut loaded = LOADED
            .lock()
            .map_err(|_| library("an earlier load of ONNX Runtime panicked".into()))?;
        let env = match loaded.as_ref() {
            Some((first, _)) if *first != lib => {
                return Err(library(format!(
                    "ONNX Runtime is already loaded from {} in this process",
                    first.display(),
                )))
            }
            Some((_, env)) => env.clone(),
            None => {
                let env = ort::init_from(&lib)
                    .map_err(|e| library(e.to_string()))?
                    .with_name("teeserve")
                    .build()
                    .map_err(|e| library(format!("cannot start ONNX Runtime: {e}")))?;
                // Remembered only once loaded: a library that failed to load does not block
                // another.
                *loaded = Some((lib, env.clone()));
                env
            }
        };
        drop(loaded);
        let version = ort::info()
            .split(',')
            .find_map(|p| p.trim().strip_prefix("git-branch="))
            .unwrap_or("unknown")
            .to_owned();
        let by_load = by_load && threads > 1;
        if by_load {
            ort_weights::share_working_memory(&env);
        }
        Ok(Self {
            env,
            threads: threads.max(1),
            by_load,
            running: Arc::default(),
            version,
        })
    }

    /// A session of `threads` threads per inference over `model`: optimised at every level,
    /// or (`optimise` false) as it is. With `save`, ONNX Runtime writes the model as it
    /// optimised it there, its weights apart.
    fn session(
        &self,
        model: &[u8],
        threads: usize,
        optimise: bool,
        save: Option<&Scratch>,
    ) -> Result<Session, EngineError> {
        use ort::session::builder::GraphOptimizationLevel as Level;
        let e = |e: ort::Error<_>| load(format!("ONNX Runtime session options: {e}"));
        let mut builder = Session::builder(&self.env)
            .map_err(|e| load(format!("ONNX Runtime: {e}")))?
            .with_intra_threads(threads)
            .map_err(e)?
            // Concurrent inferences keep the cores busy: a pool thread that spins waiting for
            // work would take a core from another request's inference. (With one thread there
            // is no pool, and nothing to spin.)
            .with_intra_op_spinning(false)
            .map_err(e)?
            .with_inter_threads(1)
            .map_err(e)?
            .with_optimization_level(if optimise { Level::All } else { Level::Disable })
            .map_err(e)?;
        if let Some(scratch) = save {
            builder = builder
                .with_optimized_model_path(scratch.model_path())
                .map_err(e)?
                .with_config_entry(
                    "session.optimized_model_external_initializers_file_name",
                    scratch.weights_name(),
                )
                .map_err(e)?
                .with_config_entry(
                    "session.optimized_model_external_initializers_min_size_in_bytes",
                    ort_weights::MIN_EXTERNAL_BYTES.to_string(),
                )
                .map_err(e)?;
        }
        if !optimise {
            // The two sessions of a model take their working memory from one arena, the
            // environment's, not one each.
            builder = builder
                .with_config_entry("session.use_env_allocators", "1")
                .map_err(e)?;
        }
        builder
            .commit_from_memory(model)
            .map_err(|e| load(format!("ONNX Runtime cannot load the model: {e}")))
    }

    /// The model's first session and, when inferences choose their threads by the load, the
    /// scratch files it saved the optimised model to. Where the system has no anonymous
    /// memory files, or saving fails, the model gets one session, as with a fixed thread count.
    fn first_session(&self, onnx_bytes: &[u8]) -> Result<(Session, Option<Scratch>), EngineError> {
        if self.by_load {
            match Scratch::new() {
                Ok(scratch) => match self.session(onnx_bytes, self.threads, true, Some(&scratch)) {
                    Ok(s) => return Ok((s, Some(scratch))),
                    // The model itself may be what failed: it is loaded once more, as it would be
                    // with a fixed thread count, and that load's error is the one reported.
                    Err(e) => tracing::warn!(
                        "ONNX Runtime could not load the model while saving its optimised \
                         form ({e}); loading it as one session of {} threads",
                        self.threads
                    ),
                },
                Err(e) => tracing::warn!(
                    "no anonymous memory file for ONNX Runtime's optimised model ({e}); \
                     one session of {} threads",
                    self.threads
                ),
            }
        }
        Ok((self.session(onnx_bytes, self.threads, true, None)?, None))
    }

    /// The two sessions over the optimised model that `scratch` holds, its weights mapped once.
    fn two_sessions(&self, scratch: Scratch) -> Result<TwoSessions, String> {
        let (model, weights) = scratch.take()?;
        let (light, list) = super::onnx_light::light_model(&model, weights.len())?;
        drop(model);
        let inputs = WeightInputs::new(&list, &weights)?;
        let light_session = |threads| {
            self.session(&light, threads, false, None)
                .map_err(|e| e.to_string())
        };
        Ok(TwoSessions {
            alone: light_session(self.threads)?,
            beside: light_session(1)?,
            inputs,
            _weights: weights,
            running: self.running.clone(),
            counts: Default::default(),
        })
    }
}

/// Threads per inference when `--onnxruntime_intra_op_parallelism` is 0, for `workers`
/// inferences at once.
pub(super) fn default_intra_op_threads(workers: usize) -> usize {
    workers.max(1)
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
        let (session, scratch) = self.first_session(onnx_bytes)?;
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
        let names = |specs: &[TensorSpec]| {
            specs
                .iter()
                .map(|s| {
                    CString::new(s.name.as_bytes()).map_err(|_| {
                        EngineError::Format(format!("graph value name {:?} has a NUL", s.name))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let sessions = match scratch.map(|s| self.two_sessions(s)) {
            Some(Ok(two)) => {
                // The first session's copy of the weights goes: the two share the mapping.
                drop(session);
                ort_weights::return_freed_memory();
                Sessions::Two(two)
            }
            Some(Err(e)) => {
                tracing::warn!(
                    "one session of {} threads for this model: {e}",
                    self.threads
                );
                Sessions::One(session)
            }
            None => Sessions::One(session),
        };
        Ok(Arc::new(OnnxRuntimeModel {
            input_names: names(&signature.inputs)?,
            output_names: names(&signature.outputs)?,
            sessions,
            signatures: Signatures::single(signature.clone()),
            signature,
            cost: RunCost::default(),
        }))
    }
}

/// A model's sessions.
enum Sessions {
    /// One session for every inference.
    One(Session),
    /// One for an inference that runs alone, one for inferences beside others.
    Two(TwoSessions),
}

/// Two sessions of one model over one copy of its weights, passed to each `Run` as inputs.
/// Fields drop in order: the sessions and the tensors before the mapping they read.
struct TwoSessions {
    /// The engine's threads per inference.
    alone: Session,
    /// One thread per inference.
    beside: Session,
    inputs: WeightInputs,
    _weights: Weights,
    /// The engine's count of running inferences.
    running: Arc<AtomicUsize>,
    /// Inferences run on `alone` and on `beside`.
    counts: [AtomicU64; 2],
}

/// One running inference in the engine's count, while it lives.
struct Running<'a>(&'a AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A model loaded into ONNX Runtime: its session or sessions, on which inferences run at once.
pub(super) struct OnnxRuntimeModel {
    sessions: Sessions,
    /// The graph's input and output names, as `Run` takes them.
    input_names: Vec<CString>,
    output_names: Vec<CString>,
    signature: Signature,
    signatures: Signatures,
    cost: RunCost,
}

impl std::fmt::Debug for OnnxRuntimeModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.sessions {
            Sessions::One(_) => write!(f, "OnnxRuntimeModel(one session, {:?})", self.signature),
            Sessions::Two(t) => write!(
                f,
                "OnnxRuntimeModel(two sessions over one copy of {} weights: {} inferences \
                 alone, {} beside others, {:?})",
                t.inputs.names.len(),
                t.counts[0].load(Ordering::Relaxed),
                t.counts[1].load(Ordering::Relaxed),
                self.signature
            ),
        }
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

fn output(v: &DynValue, name: &str, room: &mut OutputRoom) -> Result<Tensor, EngineError> {
    let output = |detail: String| EngineError::Output {
        name: name.to_owned(),
        detail,
    };
    let ValueType::Tensor { ty, shape, .. } = v.dtype() else {
        return Err(output("not a tensor".into()));
    };
    macro_rules! get {
        ($t:ty, $variant:ident) => {{
            let (shape, data) = v
                .try_extract_tensor::<$t>()
                .map_err(|e| output(e.to_string()))?;
            // Read in place; the room is taken before the copy is made.
            room.take(name, data.len() as u128, std::mem::size_of::<$t>())?;
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
            // Each string is copied out with its own allocation: at least a vector's head each.
            let count = shape
                .iter()
                .try_fold(1u128, |n, &d| {
                    u128::try_from(d).ok().map(|d| n.saturating_mul(d))
                })
                .ok_or_else(|| output(format!("shape {shape:?}")))?;
            room.take(name, count, std::mem::size_of::<Vec<u8>>())?;
            let (shape, s) = v.try_extract_strings().map_err(|e| output(e.to_string()))?;
            // Their content too: what an answer of them carries.
            let content: usize = s.iter().map(String::len).sum();
            room.take(name, content as u128, 1)?;
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

    // The C API's `Run` on the shared session: the one place this engine is unsafe, each block
    // with its argument.
    #[allow(unsafe_code)]
    fn run_within(
        &self,
        _signature: &str,
        inputs: Vec<Tensor>,
        max_output_bytes: usize,
    ) -> Result<Vec<Tensor>, EngineError> {
        let mut room = OutputRoom::new(max_output_bytes);
        let values = inputs
            .iter()
            .zip(&self.signature.inputs)
            .map(|(t, s)| input_value(t, s))
            .collect::<Result<Vec<_>, EngineError>>()?;
        if values.len() != self.input_names.len() {
            return Err(run(format!(
                "{} inputs for a graph of {}",
                values.len(),
                self.input_names.len()
            )));
        }
        // Room for the weights' inputs too (two sessions): the lists are made once per run.
        let all = self.input_names.len()
            + match &self.sessions {
                Sessions::One(_) => 0,
                Sessions::Two(two) => two.inputs.names.len(),
            };
        let mut input_names: Vec<*const c_char> = Vec::with_capacity(all);
        input_names.extend(self.input_names.iter().map(|n| n.as_ptr()));
        let mut input_values: Vec<*const ort::sys::OrtValue> = Vec::with_capacity(all);
        input_values.extend(values.iter().map(|v| v.ptr()));
        let (session, _running) = match &self.sessions {
            Sessions::One(s) => (s, None),
            Sessions::Two(two) => {
                // Alone if nothing else runs on this engine now; beside others otherwise.
                let before = two.running.fetch_add(1, Ordering::AcqRel);
                let running = Running(&two.running);
                let which = usize::from(before > 0);
                two.counts[which].fetch_add(1, Ordering::Relaxed);
                input_names.extend(two.inputs.names.iter().map(|n| n.as_ptr()));
                input_values.extend(two.inputs.values.iter().map(|v| v.ptr()));
                let session = if which == 0 { &two.alone } else { &two.beside };
                (session, Some(running))
            }
        };
        let output_names: Vec<*const c_char> =
            self.output_names.iter().map(|n| n.as_ptr()).collect();
        let mut outputs: Vec<*mut ort::sys::OrtValue> =
            vec![std::ptr::null_mut(); output_names.len()];
        let api = ort::api();
        // SAFETY: `Run` on a shared session from several threads at once. ONNX Runtime documents
        // `InferenceSession::Run` as thread-safe: several threads may call it on one session
        // concurrently (onnxruntime's C API documentation, and its maintainers' change #19301,
        // "InferenceSession::Run() is guaranteed to be thread-safe"); its Python binding calls it
        // so with the GIL released. The reports of crashes that made the `ort` crate take `&mut`
        // concern the CUDA, DirectML and TensorRT execution providers' allocators and contexts;
        // these sessions are built with the CPU provider alone (`session` above registers none).
        // Every pointer passed lives until `Run` returns: the names are owned by `self`, the
        // input values borrow `inputs`, which outlive this call, and the counts are those of the
        // arrays; the weights' tensors (two sessions) are owned by `self` and read memory that
        // `self` keeps mapped. Null output slots ask ONNX Runtime to allocate the outputs with the session's
        // allocator, whose ownership passes to us and is taken below.
        let status = unsafe {
            (api.Run)(
                session.ptr().cast_mut(),
                std::ptr::null(),
                input_names.as_ptr(),
                input_values.as_ptr(),
                input_values.len(),
                output_names.as_ptr(),
                output_names.len(),
                outputs.as_mut_ptr(),
            )
        };
        // Owned at once, so that every output is released whatever happens next.
        let owned: Vec<Option<DynValue>> = outputs
            .iter()
            .map(|p| {
                // SAFETY: a non-null slot is an OrtValue that `Run` made with the session's
                // allocator and handed to us; `from_ptr` takes ownership (releases it on drop).
                NonNull::new(*p)
                    .map(|p| unsafe { DynValue::from_ptr(p, Some(session.allocator())) })
            })
            .collect();
        if let Some(message) = ort_weights::status_error(status) {
            return Err(run(message));
        }
        self.signature
            .outputs
            .iter()
            .zip(&owned)
            .map(|(s, v)| {
                v.as_ref()
                    .ok_or_else(|| run(format!("ONNX Runtime gave no output {:?}", s.name)))
                    .and_then(|v| output(v, &s.name, &mut room))
            })
            .collect()
    }
}
