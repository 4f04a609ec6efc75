//! The tract engine (pure Rust: the smallest code inside an enclave). Models are loaded from
//! memory, so a sealed model is never written to disk.

use std::sync::Arc;

use super::model::{Engine, EngineError, LoadedModel, OutputRoom, RunCost};
use super::onnx::read_onnx;
use teeserve_tensor::{DType, Data, Tensor};
use teeserve_tensor::{Signature, Signatures};

/// The tract engine.
#[derive(Debug, Default)]
pub struct TractEngine;

type Plan = Arc<Runner>;

/// Run states kept per plan for later inferences: more than run at once (at most `--workers`).
const IDLE_STATES: usize = 64;

/// A plan and the run states it keeps between inferences.
///
/// tract runs a plan on a state: the run's values, the operators' own states, and the scratch
/// of its matrix kernels, which it keeps per state (its session) and per thread. Making a state
/// for every inference and dropping it afterwards cost a seventh of a small model's run (the
/// digits model inside the server: 41,800 instructions per inference with a new state, 36,200
/// with a kept one). A state is kept only when none of its operators keeps anything between
/// runs (no `Scan`, `Delay` or other stateful operator: every operator state empty); a model
/// with a stateful operator gets a new state for every inference. After every run, whether it
/// succeeded or failed part way, the state's values are all dropped (tract itself clears only
/// those its outputs depend on, not an input no output reads) and its resolved symbols reset,
/// so a kept state holds nothing of the inference before; its kernels' scratch is written by
/// every run before it is read. A kept state serves one inference at a time.
///
/// A state is kept after a failed run too: tract frees a session's scratch only on the thread
/// that drops it, so a state dropped after running on other threads would leave its scratch on
/// them for good, and requests that fail on purpose could grow it. States are dropped only
/// with their model (its unload or reload: at most [`IDLE_STATES`] per plan, a few kilobytes
/// each on each inference thread), when more than [`IDLE_STATES`] inferences of one plan ran
/// at once, or when an inference panics.
struct Runner {
    plan: Arc<tract_onnx::prelude::TypedSimplePlan>,
    idle: std::sync::Mutex<Vec<tract_onnx::prelude::TypedSimpleState>>,
}

impl Runner {
    fn new(plan: Arc<tract_onnx::prelude::TypedSimplePlan>) -> Plan {
        Arc::new(Self {
            plan,
            idle: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn run(
        &self,
        inputs: tract_onnx::prelude::TVec<tract_onnx::prelude::TValue>,
    ) -> tract_onnx::prelude::TractResult<tract_onnx::prelude::TVec<tract_onnx::prelude::TValue>>
    {
        let kept = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut state = match kept {
            Some(s) => s,
            None => self.plan.spawn()?,
        };
        let outputs = state.run(inputs);
        // What a run leaves, successful or not: every value goes, constants too (the next run
        // puts them back), and the symbols it resolved (tract resets them only on success).
        state.turn_state.values.clear();
        state.turn_state.resolved_symbols = Default::default();
        if state.op_states.iter().all(Option::is_none) {
            if let Ok(mut idle) = self.idle.lock() {
                if idle.len() < IDLE_STATES {
                    idle.push(state);
                }
            }
        }
        outputs
    }
}

/// Plans specialised to concrete input shapes kept per model (each holds its own packed weights).
const SPECIALISED_PLANS: usize = 4;

/// Input shapes and the plan specialised to them (`None`: none could be made).
type ShapesPlan = (Vec<Vec<usize>>, Option<Plan>);

/// A model optimised by tract.
///
/// tract optimises a graph far better when every dimension is known: a symbolic batch dimension
/// keeps it from choosing its fastest convolution kernels (MobileNetV2 runs several times slower).
/// So besides the general plan, a model whose signature has dynamic dimensions keeps up to
/// [`SPECIALISED_PLANS`] plans made for the input shapes requests actually send; the first request
/// of a new shape pays for that optimisation, later ones run the specialised plan.
///
/// Some exported graphs cannot be typed at all with a symbolic batch (a Keras Flatten exported by
/// tf2onnx computes its Reshape's shape from the input's): such a model has no general plan, only
/// plans for concrete shapes. It is loaded when a plan for its smallest shapes (every dynamic
/// dimension 1) can be made, so that a model tract cannot run fails at load, not on a request.
pub(super) struct TractModel {
    plan: Option<Plan>,
    graph: Option<tract_onnx::prelude::InferenceModel>,
    /// The input shapes seen and their plan (`None`: none could be made for them), at most
    /// [`SPECIALISED_PLANS`], looked up in turn (a request's shapes are compared, not copied).
    specialised: std::sync::Mutex<Vec<ShapesPlan>>,
    signature: Signature,
    signatures: Signatures,
    cost: RunCost,
}

impl std::fmt::Debug for TractModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TractModel({:?})", self.signature)
    }
}

impl Engine for TractEngine {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn load(&self, onnx_bytes: &[u8]) -> Result<Arc<dyn LoadedModel>, EngineError> {
        use tract_onnx::prelude::*;
        let framework = tract_onnx::onnx();
        let (proto, signature) = read_onnx(onnx_bytes)?;
        if signature
            .inputs
            .iter()
            .chain(&signature.outputs)
            .any(|s| s.dtype == DType::Str)
        {
            return Err(load(
                "string tensors are not supported by the tract engine".into(),
            ));
        }
        let model = framework.model_for_proto_model(&proto).map_err(|e| {
            load(format!(
                "cannot translate the ONNX graph: {e:#}. {ELSEWHERE}"
            ))
        })?;
        // Kept for specialised plans when the signature has dynamic dimensions.
        let graph = signature
            .inputs
            .iter()
            .any(|s| s.shape.contains(&-1))
            .then(|| model.clone());
        let mut specialised = Vec::new();
        let plan = match (
            model.into_optimized().and_then(|m| m.into_runnable()),
            &graph,
        ) {
            (Ok(p), _) => Some(Runner::new(p)),
            // Some graphs only optimise with concrete shapes (tract 0.23 cannot declutter
            // ResNet-50 from tf2onnx with a symbolic batch): the general plan then runs the
            // graph as translated, and the specialised plans are optimised.
            (Err(e), Some(g)) => match g.clone().into_typed().and_then(|m| m.into_runnable()) {
                Ok(p) => {
                    let p = Runner::new(p);
                    tracing::info!(
                        "tract cannot optimise the graph for dynamic shapes ({e}); \
                         the shapes requests send get optimised plans"
                    );
                    Some(p)
                }
                // Nor typed: only plans for concrete shapes, the smallest made now.
                Err(general) => {
                    let smallest: Vec<(DType, Vec<usize>)> = signature
                        .inputs
                        .iter()
                        .map(|s| {
                            let dims = s.shape.iter().map(|&d| usize::try_from(d).unwrap_or(1));
                            (s.dtype, dims.collect())
                        })
                        .collect();
                    let p = specialise(g, &smallest).map_err(|concrete| {
                        load(format!(
                            "cannot prepare the model: {general:#}; nor for concrete input \
                             shapes: {concrete}. {ELSEWHERE}"
                        ))
                    })?;
                    tracing::info!(
                        "tract cannot type the graph with dynamic shapes ({general}); \
                         it runs on plans made for the shapes requests send"
                    );
                    specialised.push((smallest.into_iter().map(|(_, s)| s).collect(), Some(p)));
                    None
                }
            },
            (Err(e), None) => {
                return Err(load(format!(
                    "cannot optimise the model: {e:#}. {ELSEWHERE}"
                )))
            }
        };
        Ok(Arc::new(TractModel {
            plan,
            graph,
            specialised: std::sync::Mutex::new(specialised),
            signatures: Signatures::single(signature.clone()),
            signature,
            cost: RunCost::default(),
        }))
    }
}

/// Where a model tract cannot run may run instead.
const ELSEWHERE: &str = "The ONNX Runtime engine may run it.";

fn load(detail: String) -> EngineError {
    EngineError::Load {
        engine: "tract",
        detail,
    }
}

fn run_error(detail: String) -> EngineError {
    EngineError::Run {
        engine: "tract",
        detail,
    }
}

fn to_tract(t: Tensor) -> Result<tract_onnx::prelude::TValue, EngineError> {
    use tract_onnx::prelude::*;
    let dtype = t.dtype();
    let teeserve_tensor::Tensor { shape, data } = t;
    let r = match data {
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
        Data::F16(v) => tract_onnx::prelude::Tensor::from_shape(&shape, &v),
        Data::Str(_) => {
            return Err(run_error(
                "string tensors are not supported by the tract engine".into(),
            ))
        }
        Data::BF16(_) | Data::C64(_) | Data::C128(_) => {
            return Err(run_error(format!(
                "{} tensors are not supported by the tract engine",
                dtype.tf_name()
            )))
        }
    };
    r.map(|t| t.into_tvalue())
        .map_err(|e| run_error(e.to_string()))
}

fn from_tract(t: &tract_onnx::prelude::Tensor) -> Result<Tensor, EngineError> {
    use tract_onnx::prelude::DatumType as D;
    let shape = t.shape().to_vec();
    macro_rules! get {
        ($ty:ty, $variant:ident) => {
            // A tract tensor's elements are contiguous, in row-major order: one copy.
            Data::$variant(
                t.try_as_plain_ram()
                    .and_then(|v| v.as_slice::<$ty>())
                    .map_err(|e| run_error(e.to_string()))?
                    .to_vec(),
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
        D::F16 => get!(half::f16, F16),
        other => return Err(run_error(format!("output type {other:?} is not supported"))),
    };
    Ok(Tensor { shape, data })
}

impl TractModel {
    /// The plan for inputs of these shapes: a specialised one if there is (or may be) one,
    /// else the general plan.
    fn plan_for(&self, inputs: &[Tensor]) -> Result<Plan, EngineError> {
        let general = || {
            self.plan.clone().ok_or_else(|| {
                let shapes: Vec<&[usize]> = inputs.iter().map(|t| &t.shape[..]).collect();
                run_error(format!(
                    "tract cannot run this model on input shapes {shapes:?}"
                ))
            })
        };
        let Some(graph) = &self.graph else {
            return general();
        };
        let facts = || -> Vec<(DType, Vec<usize>)> {
            inputs
                .iter()
                .map(|t| (t.dtype(), t.shape.clone()))
                .collect()
        };
        {
            let Ok(known) = self.specialised.lock() else {
                return general();
            };
            let same = |shapes: &Vec<Vec<usize>>| {
                shapes.len() == inputs.len()
                    && shapes.iter().zip(inputs).all(|(s, t)| *s == t.shape)
            };
            match known
                .iter()
                .find(|(shapes, _)| same(shapes))
                .map(|(_, p)| p)
            {
                Some(Some(p)) => return Ok(p.clone()),
                Some(None) => return general(),
                // Full: the general plan, or (a model without one) a plan made for this run.
                None if known.len() >= SPECIALISED_PLANS => {
                    return match &self.plan {
                        Some(p) => Ok(p.clone()),
                        None => specialise(graph, &facts()).map_err(run_error),
                    };
                }
                None => {}
            }
        }
        let facts = facts();
        let key: Vec<Vec<usize>> = facts.iter().map(|(_, s)| s.clone()).collect();
        let made = specialise(graph, &facts);
        if let Err(e) = &made {
            tracing::debug!("no specialised plan for input shapes {key:?}: {e}");
        }
        let made = made.ok();
        if let Ok(mut known) = self.specialised.lock() {
            // Another request may have made one for the same shapes meanwhile.
            if known.len() < SPECIALISED_PLANS && !known.iter().any(|(k, _)| *k == key) {
                known.push((key, made.clone()));
            }
        }
        match made {
            Some(p) => Ok(p),
            None => general(),
        }
    }
}

/// A plan of `graph` optimised for inputs of these element types and shapes.
fn specialise(
    graph: &tract_onnx::prelude::InferenceModel,
    inputs: &[(DType, Vec<usize>)],
) -> Result<Plan, String> {
    use tract_onnx::prelude::*;
    let mut m = graph.clone();
    for (i, (dtype, shape)) in inputs.iter().enumerate() {
        let dt = match dtype {
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
            DType::F16 => half::f16::datum_type(),
            other => return Err(format!("{} inputs", other.tf_name())),
        };
        m = m
            .with_input_fact(i, InferenceFact::dt_shape(dt, shape.clone()))
            .map_err(|e| format!("{e:#}"))?;
    }
    m.into_optimized()
        .and_then(|m| m.into_runnable())
        .map(Runner::new)
        .map_err(|e| format!("{e:#}"))
}

impl LoadedModel for TractModel {
    fn signatures(&self) -> &Signatures {
        &self.signatures
    }

    fn engine(&self) -> &'static str {
        "tract"
    }

    fn cost(&self) -> &RunCost {
        &self.cost
    }

    fn run_within(
        &self,
        _signature: &str,
        inputs: Vec<Tensor>,
        max_output_bytes: usize,
    ) -> Result<Vec<Tensor>, EngineError> {
        let plan = self.plan_for(&inputs)?;
        let inputs = inputs
            .into_iter()
            .map(to_tract)
            .collect::<Result<tract_onnx::prelude::TVec<_>, _>>()?;
        let out = plan.run(inputs).map_err(|e| run_error(format!("{e:#}")))?;
        let mut room = OutputRoom::new(max_output_bytes);
        for (t, spec) in out.iter().zip(&self.signature.outputs) {
            room.take(&spec.name, t.len() as u128, t.datum_type().size_of())?;
        }
        out.iter().map(|t| from_tract(t)).collect()
    }
}
