//! Inference engines behind one small trait. The default is tract (pure Rust, the smallest code
//! inside an enclave). Models are loaded from memory: a sealed model is never written to disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::tensor::{DType, Data, Tensor};

/// One input or output of a model's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The name (the ONNX graph input or output name).
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions, -1 for dynamic ones.
    pub shape: Vec<i64>,
}

/// What a model takes and gives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signature {
    /// Inputs, in graph order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs, in graph order.
    pub outputs: Vec<TensorSpec>,
}

/// Inferences shorter than this may run on the thread that decoded the request instead of being
/// handed to an inference worker thread: the two thread switches of the hand-off cost more than
/// such a model computes, and holding an I/O thread this long delays no other request noticeably.
pub const QUICK_RUN: Duration = Duration::from_micros(100);

/// How long a model's inferences have been taking, to decide where the next one runs.
#[derive(Debug, Default)]
pub struct RunCost {
    /// Moving average of the run time in nanoseconds (0: never run).
    average_nanos: AtomicU64,
    /// The most input elements of a run that took less than [`QUICK_RUN`].
    quick_elements: AtomicU64,
}

impl RunCost {
    /// Records a run over `elements` input elements that took `took`.
    pub fn record(&self, elements: usize, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // Races between concurrent updates lose a sample at worst; this is a hint.
        let old = self.average_nanos.load(Ordering::Relaxed);
        let new = if old == 0 {
            nanos.max(1)
        } else {
            (old - old / 8).saturating_add(nanos / 8).max(1)
        };
        self.average_nanos.store(new, Ordering::Relaxed);
        if took < QUICK_RUN {
            self.quick_elements
                .fetch_max(elements as u64, Ordering::Relaxed);
        }
    }

    /// Whether a run over `elements` input elements is expected to take less than
    /// [`QUICK_RUN`]: runs have been that quick on average, and on inputs at least this large
    /// (a larger input, or a shape the engine has not prepared a plan for yet, may take longer).
    pub fn is_quick(&self, elements: usize) -> bool {
        let avg = self.average_nanos.load(Ordering::Relaxed);
        avg != 0
            && u128::from(avg) < QUICK_RUN.as_nanos()
            && elements as u64 <= self.quick_elements.load(Ordering::Relaxed)
    }
}

/// A loaded model, safe to run from many threads at once.
pub trait LoadedModel: Send + Sync + std::fmt::Debug {
    /// The signature.
    fn signature(&self) -> &Signature;
    /// The engine that runs it (the `runtime` label of the latency metric).
    fn engine(&self) -> &'static str;
    /// Runs one inference; inputs are in signature order.
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String>;
    /// How long its inferences have been taking (kept by the caller of `run`).
    fn cost(&self) -> &RunCost;
}

/// An inference engine.
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// Its name (`tract`).
    fn name(&self) -> &'static str;
    /// Loads an ONNX model from memory.
    fn load(&self, onnx_bytes: &[u8]) -> Result<Arc<dyn LoadedModel>, String>;
}

/// The tract engine.
#[derive(Debug, Default)]
pub struct TractEngine;

type Plan = std::sync::Arc<tract_onnx::prelude::TypedSimplePlan>;

/// Plans specialised to concrete input shapes kept per model (each holds its own packed weights).
const SPECIALISED_PLANS: usize = 4;

/// A model optimised by tract.
///
/// tract optimises a graph far better when every dimension is known: a symbolic batch dimension
/// keeps it from choosing its fastest convolution kernels (MobileNetV2 runs several times slower).
/// So besides the general plan, a model whose signature has dynamic dimensions keeps up to
/// [`SPECIALISED_PLANS`] plans made for the input shapes requests actually send; the first request
/// of a new shape pays for that optimisation, later ones run the specialised plan.
pub struct TractModel {
    plan: Plan,
    graph: Option<tract_onnx::prelude::InferenceModel>,
    specialised: std::sync::Mutex<std::collections::HashMap<Vec<Vec<usize>>, Option<Plan>>>,
    signature: Signature,
    cost: RunCost,
}

impl std::fmt::Debug for TractModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TractModel({:?})", self.signature)
    }
}

/// ONNX TensorProto.DataType numbers (onnx/onnx.proto).
fn onnx_dtype(t: i32) -> Option<DType> {
    Some(match t {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        4 => DType::U16,
        5 => DType::I16,
        6 => DType::I32,
        7 => DType::I64,
        8 => DType::Str,
        9 => DType::Bool,
        11 => DType::F64,
        12 => DType::U32,
        13 => DType::U64,
        _ => return None,
    })
}

fn spec(v: &tract_onnx::pb::ValueInfoProto) -> Result<TensorSpec, String> {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value as D;
    use tract_onnx::pb::type_proto::Value as T;
    let Some(T::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(format!("graph value {:?} is not a tensor", v.name));
    };
    let dtype = onnx_dtype(t.elem_type).ok_or_else(|| {
        format!(
            "graph value {:?} has unsupported ONNX type {}",
            v.name, t.elem_type
        )
    })?;
    let shape = t
        .shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(D::DimValue(n)) if n >= 0 => n,
                    _ => -1,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(TensorSpec {
        name: v.name.clone(),
        dtype,
        shape,
    })
}

/// Parses an ONNX model and reads its signature from the graph: the inputs that are not
/// initializers, and the outputs (ONNX IR, onnx/onnx.proto `GraphProto`).
pub(crate) fn read_onnx(
    onnx_bytes: &[u8],
) -> Result<(tract_onnx::pb::ModelProto, Signature), String> {
    use tract_onnx::prelude::Framework as _;
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut std::io::Cursor::new(onnx_bytes))
        .map_err(|e| format!("not an ONNX model: {e}"))?;
    let graph = proto.graph.as_ref().ok_or("the ONNX model has no graph")?;
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|i| i.name.as_str()).collect();
    let signature = Signature {
        inputs: graph
            .input
            .iter()
            .filter(|i| !initializers.contains(i.name.as_str()))
            .map(spec)
            .collect::<Result<_, _>>()?,
        outputs: graph.output.iter().map(spec).collect::<Result<_, _>>()?,
    };
    Ok((proto, signature))
}

impl Engine for TractEngine {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn load(&self, onnx_bytes: &[u8]) -> Result<Arc<dyn LoadedModel>, String> {
        use tract_onnx::prelude::*;
        let framework = tract_onnx::onnx();
        let (proto, signature) = read_onnx(onnx_bytes)?;
        if signature
            .inputs
            .iter()
            .chain(&signature.outputs)
            .any(|s| s.dtype == DType::Str)
        {
            return Err("string tensors are not supported by the tract engine".into());
        }
        let model = framework
            .model_for_proto_model(&proto)
            .map_err(|e| format!("cannot translate the ONNX graph: {e:#}"))?;
        // Kept for specialised plans when the signature has dynamic dimensions.
        let graph = signature
            .inputs
            .iter()
            .any(|s| s.shape.contains(&-1))
            .then(|| model.clone());
        let plan = match (
            model.into_optimized().and_then(|m| m.into_runnable()),
            &graph,
        ) {
            (Ok(p), _) => p,
            // Some graphs only optimise with concrete shapes (tract 0.23 cannot declutter
            // ResNet-50 from tf2onnx with a symbolic batch): the general plan then runs the
            // graph as translated, and the specialised plans are optimised.
            (Err(e), Some(g)) => {
                tracing::info!(
                    "tract cannot optimise the graph for dynamic shapes ({e}); \
                     the shapes requests send get optimised plans"
                );
                g.clone()
                    .into_typed()
                    .and_then(|m| m.into_runnable())
                    .map_err(|e| format!("cannot prepare the model: {e:#}"))?
            }
            (Err(e), None) => return Err(format!("cannot optimise the model: {e:#}")),
        };
        Ok(Arc::new(TractModel {
            plan,
            graph,
            specialised: Default::default(),
            signature,
            cost: RunCost::default(),
        }))
    }
}

fn to_tract(t: Tensor) -> Result<tract_onnx::prelude::TValue, String> {
    use tract_onnx::prelude::*;
    let shape = t.shape.clone();
    let r = match t.data {
        Data::F32(v) => tract_onnx::prelude::Tensor::from_shape(&shape, &v),
        Data::F64(v) => tract_onnx::prelude::Tensor::from_shape(&shape, &v),
        Data::I8(v) => tract_onnx::prelude::Tensor::from_shape(&shape, &v),
        Data::I16(v) => tract_onnx::prelude::Tensor::from_shape(&shape, &v),
        Data::I32(v) => tract_onnx::prelude::Tensor::from_shape(&shape, &v),
        Data::I64(v) => tract_onnx::prelude::Tensor::from_shape(&shape, &v),
        Data::U8(v) => tract_onnx::prelude::Tensor::from_shape(&shape, &v),
        Data::U16(v) => tract_onnx::prelude::Tensor::from_shape(&shape, &v),
        Data::U32(v) => tract_onnx::prelude::Tensor::from_shape(&shape, &v),
        Data::U64(v) => tract_onnx::prelude::Tensor::from_shape(&shape, &v),
        Data::Bool(v) => tract_onnx::prelude::Tensor::from_shape(&shape, &v),
        Data::Str(_) => return Err("string tensors are not supported by the tract engine".into()),
    };
    r.map(|t| t.into_tvalue()).map_err(|e| e.to_string())
}

fn from_tract(t: &tract_onnx::prelude::Tensor) -> Result<Tensor, String> {
    use tract_onnx::prelude::DatumType as D;
    let shape = t.shape().to_vec();
    macro_rules! get {
        ($ty:ty, $variant:ident) => {
            Data::$variant(
                t.to_plain_array_view::<$ty>()
                    .map_err(|e| e.to_string())?
                    .iter()
                    .copied()
                    .collect(),
            )
        };
    }
    let data = match t.datum_type() {
        D::F32 => get!(f32, F32),
        D::F64 => get!(f64, F64),
        D::I8 => get!(i8, I8),
        D::I16 => get!(i16, I16),
        D::I32 => get!(i32, I32),
        D::I64 => get!(i64, I64),
        D::U8 => get!(u8, U8),
        D::U16 => get!(u16, U16),
        D::U32 => get!(u32, U32),
        D::U64 => get!(u64, U64),
        D::Bool => get!(bool, Bool),
        other => return Err(format!("output type {other:?} is not supported")),
    };
    Ok(Tensor { shape, data })
}

impl TractModel {
    /// The plan for inputs of these shapes: a specialised one if there is (or may be) one.
    fn plan_for(&self, inputs: &[Tensor]) -> Plan {
        let Some(graph) = &self.graph else {
            return self.plan.clone();
        };
        let key: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
        {
            let Ok(known) = self.specialised.lock() else {
                return self.plan.clone();
            };
            match known.get(&key) {
                Some(Some(p)) => return p.clone(),
                Some(None) => return self.plan.clone(),
                None if known.len() >= SPECIALISED_PLANS => return self.plan.clone(),
                None => {}
            }
        }
        let made = self.specialise(graph, inputs);
        if let Err(e) = &made {
            tracing::debug!("no specialised plan for input shapes {key:?}: {e}");
        }
        let made = made.ok();
        if let Ok(mut known) = self.specialised.lock() {
            if known.len() < SPECIALISED_PLANS {
                known.insert(key, made.clone());
            }
        }
        made.unwrap_or_else(|| self.plan.clone())
    }

    fn specialise(
        &self,
        graph: &tract_onnx::prelude::InferenceModel,
        inputs: &[Tensor],
    ) -> Result<Plan, String> {
        use tract_onnx::prelude::*;
        let mut m = graph.clone();
        for (i, t) in inputs.iter().enumerate() {
            let dt = match t.dtype() {
                DType::F32 => f32::datum_type(),
                DType::F64 => f64::datum_type(),
                DType::I8 => i8::datum_type(),
                DType::I16 => i16::datum_type(),
                DType::I32 => i32::datum_type(),
                DType::I64 => i64::datum_type(),
                DType::U8 => u8::datum_type(),
                DType::U16 => u16::datum_type(),
                DType::U32 => u32::datum_type(),
                DType::U64 => u64::datum_type(),
                DType::Bool => bool::datum_type(),
                DType::Str => return Err("string input".into()),
            };
            m = m
                .with_input_fact(i, InferenceFact::dt_shape(dt, t.shape.clone()))
                .map_err(|e| format!("{e:#}"))?;
        }
        m.into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| format!("{e:#}"))
    }
}

impl LoadedModel for TractModel {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn engine(&self) -> &'static str {
        "tract"
    }

    fn cost(&self) -> &RunCost {
        &self.cost
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let plan = self.plan_for(&inputs);
        let inputs = inputs
            .into_iter()
            .map(to_tract)
            .collect::<Result<tract_onnx::prelude::TVec<_>, _>>()?;
        let out = plan.run(inputs).map_err(|e| format!("{e:#}"))?;
        out.iter().map(|t| from_tract(t)).collect()
    }
}

/// Which engine `teeserve serve` runs models on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EngineChoice {
    /// tract (pure Rust).
    #[default]
    Tract,
    /// ONNX Runtime, loaded from this library file.
    OnnxRuntime {
        /// The path of libonnxruntime.
        lib: std::path::PathBuf,
    },
}

impl EngineChoice {
    /// Starts the engine; `workers` is the number of inferences that may run at once.
    pub fn start(&self, workers: usize) -> Result<Arc<dyn Engine>, String> {
        match self {
            EngineChoice::Tract => Ok(Arc::new(TractEngine)),
            #[cfg(feature = "onnxruntime")]
            EngineChoice::OnnxRuntime { lib } => Ok(Arc::new(
                crate::onnxruntime::OnnxRuntimeEngine::new(lib, workers)?,
            )),
            #[cfg(not(feature = "onnxruntime"))]
            EngineChoice::OnnxRuntime { .. } => {
                let _ = workers;
                Err("this teeserve was built without the ONNX Runtime engine \
                     (build with `--features onnxruntime`)"
                    .into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_is_quick_only_after_quick_runs_on_inputs_as_large() {
        let c = RunCost::default();
        assert!(!c.is_quick(64), "never run: unknown");
        c.record(64, Duration::from_micros(5));
        assert!(c.is_quick(64));
        assert!(c.is_quick(10));
        assert!(!c.is_quick(65), "larger than any quick run");
    }

    #[test]
    fn slow_runs_move_a_model_off_the_quick_path_and_back_as_they_age() {
        let c = RunCost::default();
        c.record(64, Duration::from_micros(5));
        c.record(64, Duration::from_millis(20)); // e.g. a plan made for a new shape
        assert!(!c.is_quick(64));
        let mut back = 0;
        while !c.is_quick(64) {
            c.record(64, Duration::from_micros(5));
            back += 1;
            assert!(back < 100, "the average never came down");
        }
        assert!(
            back > 10,
            "one slow run should weigh for a while, came back after {back}"
        );
    }

    #[test]
    fn a_slow_model_is_never_quick() {
        let c = RunCost::default();
        for _ in 0..50 {
            c.record(1, QUICK_RUN);
        }
        assert!(!c.is_quick(1));
    }
}
