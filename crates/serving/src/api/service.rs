//! The serving core shared by gRPC and REST: model resolution, signature checks, inference on a
//! bounded worker pool (optionally batched), status and metadata.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Code;

use crate::api::batching::Batcher;
use crate::api::error::ApiError;
use crate::api::inputs::{order_inputs, set_str};
use crate::api::metrics::Metrics;
use crate::api::shares::{PeerHold, PeerShares};
use crate::engine::{LoadedModel, Signature};
use crate::models::{ModelRepository, ResolvedModel};
use teeserve_tensor::Tensor;
use teeserve_wire::tensorflow::serving::{model_spec::VersionChoice, ModelSpec};

pub use crate::engine::{DEFAULT_SIGNATURE, PREDICT_METHOD};

/// Which API a request came through (error texts differ slightly, as in TF Serving).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// gRPC.
    Grpc,
    /// REST.
    Rest,
    /// The Open Inference Protocol over gRPC (`ModelInfer`).
    V2Grpc,
    /// The Open Inference Protocol over REST (`/v2/.../infer`).
    V2Rest,
}

impl Entry {
    fn name(self) -> &'static str {
        match self {
            Entry::Grpc | Entry::V2Grpc => "GRPC",
            Entry::Rest | Entry::V2Rest => "REST",
        }
    }

    /// The API's name in the latency metric's `API` label.
    fn api(self) -> &'static str {
        match self {
            Entry::Grpc => "Predict",
            Entry::Rest => "predict",
            Entry::V2Grpc | Entry::V2Rest => "infer",
        }
    }
}

/// Limits and options of the core.
#[derive(Debug, Clone)]
pub struct CoreOptions {
    /// Inference worker threads (default: the cores).
    pub workers: usize,
    /// Requests in flight before RESOURCE_EXHAUSTED.
    pub max_in_flight: usize,
    /// Deadline of a request.
    pub timeout: Duration,
    /// Encode gRPC outputs as tensor_content instead of typed fields.
    pub tensor_content: bool,
    /// The most bytes one request's input tensors may take once decoded (elements times
    /// element size, strings with their content), checked against the shapes a request
    /// declares before anything is allocated for them.
    pub max_tensor_bytes: usize,
    /// The memory all requests in flight may hold together: their bodies as they arrive, what
    /// decoding them takes, and their input tensors. A request that does not fit in what is
    /// left is refused with RESOURCE_EXHAUSTED (HTTP 429).
    pub max_in_flight_bytes: usize,
    /// The most of [`CoreOptions::max_in_flight`] one peer may hold
    /// ([`crate::api::shares::PeerKey`]).
    pub max_in_flight_per_peer: usize,
    /// The most of [`CoreOptions::max_in_flight_bytes`] one peer may hold.
    pub max_in_flight_bytes_per_peer: usize,
    /// The most bytes one request's output tensors may take (elements times element size),
    /// checked as they leave the engine, before they are copied: a model's outputs can be far
    /// larger than its inputs.
    pub max_response_tensor_bytes: usize,
}

/// Default of [`CoreOptions::max_tensor_bytes`]: twice the default largest request, so that
/// any tensor a default-sized request carries value by value fits, while a [1048576, 64]
/// float tensor (256 MiB) declared by a one-value fill does not.
pub const DEFAULT_MAX_TENSOR_BYTES: usize = 128 << 20;
/// Default of [`CoreOptions::max_in_flight_bytes`].
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: usize = 1 << 30;

impl Default for CoreOptions {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            max_in_flight: 256,
            timeout: Duration::from_secs(30),
            tensor_content: false,
            max_tensor_bytes: DEFAULT_MAX_TENSOR_BYTES,
            max_in_flight_bytes: DEFAULT_MAX_IN_FLIGHT_BYTES,
            max_in_flight_per_peer: 256 / 2,
            max_in_flight_bytes_per_peer: DEFAULT_MAX_IN_FLIGHT_BYTES / 2,
            max_response_tensor_bytes: DEFAULT_MAX_TENSOR_BYTES,
        }
    }
}

/// The serving core.
#[derive(Debug)]
pub struct ServingCore {
    /// The models.
    pub repo: Arc<ModelRepository>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Options.
    pub options: CoreOptions,
    /// Places for inferences that run on the I/O threads (quick models), taken in turns by peer.
    workers: Arc<super::turns::FairPlaces>,
    /// The inference threads, for the others.
    pool: super::pool::InferencePool,
    in_flight: Arc<Semaphore>,
    /// Each peer's places among those.
    peer_places: Arc<PeerShares>,
    /// [`CoreOptions::max_in_flight_bytes`] in KiB (permits are counted in u32).
    budget: Arc<Semaphore>,
    /// Each peer's KiB of that.
    peer_kib: Arc<PeerShares>,
    batcher: Option<Arc<Batcher>>,
}

/// A request's place among the requests in flight ([`ServingCore::admit`]); released on drop.
#[derive(Debug)]
pub struct Admission {
    _slot: OwnedSemaphorePermit,
    _peer: PeerHold,
}

/// Memory a request holds of the in-flight budget ([`ServingCore::reserve`]); released on drop.
#[derive(Debug, Default)]
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    peer: PeerHold,
    bytes: usize,
}

impl Reservation {
    /// Bytes reserved.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds another reservation to this one.
    pub fn merge(&mut self, other: Reservation) {
        self.bytes += other.bytes;
        self.peer.merge(other.peer);
        match (&mut self.permit, other.permit) {
            (Some(p), Some(o)) => p.merge(o),
            (p @ None, o) => *p = o,
            (Some(_), None) => {}
        }
    }
}

/// Signature `name` of `model` (the empty name is the default), or TF Serving's error for an
/// unknown one.
pub(crate) fn lookup_signature<'m>(
    signatures: &'m crate::engine::Signatures,
    name: &str,
    entry: Entry,
) -> Result<&'m Signature, ApiError> {
    if let Some(s) = signatures.get(name) {
        return Ok(s);
    }
    let sig = if name.is_empty() {
        DEFAULT_SIGNATURE
    } else {
        name
    };
    Err(match entry {
        Entry::V2Grpc | Entry::V2Rest => {
            let names: Vec<&str> = signatures.names().collect();
            ApiError::new(
                Code::InvalidArgument,
                format!(
                    "signature \"{sig}\" not found (parameters.signature_name); the model has {}",
                    set_str(&names)
                ),
            )
        }
        Entry::Grpc => ApiError::new(
            Code::FailedPrecondition,
            format!("Serving signature key \"{sig}\" not found."),
        ),
        Entry::Rest => ApiError::new(
            Code::InvalidArgument,
            format!("Serving signature name: \"{sig}\" not found in signature def"),
        ),
    })
}

impl ServingCore {
    /// A core over `repo`.
    pub fn new(
        repo: Arc<ModelRepository>,
        metrics: Arc<Metrics>,
        options: CoreOptions,
        batcher: Option<Arc<Batcher>>,
    ) -> Self {
        Self {
            workers: super::turns::FairPlaces::new(options.workers.max(1)),
            pool: super::pool::InferencePool::new(options.workers),
            in_flight: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
            peer_places: PeerShares::new(options.max_in_flight_per_peer.max(1)),
            budget: Arc::new(Semaphore::new(
                kib(options.max_in_flight_bytes).clamp(1, Semaphore::MAX_PERMITS),
            )),
            peer_kib: PeerShares::new(kib(options.max_in_flight_bytes_per_peer).max(1)),
            repo,
            metrics,
            options,
            batcher,
        }
    }

    /// Requests admitted ([`ServingCore::admit`]) and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.options
            .max_in_flight
            .max(1)
            .saturating_sub(self.in_flight.available_permits())
    }

    /// Takes a place among the requests in flight, or refuses with RESOURCE_EXHAUSTED when
    /// [`CoreOptions::max_in_flight`] are. The APIs take it before they read a request's body.
    /// One peer ([`crate::api::scope::RequestScope::peer`]) may hold at most
    /// [`CoreOptions::max_in_flight_per_peer`] of them, so that others keep places.
    pub fn admit(&self) -> Result<Admission, ApiError> {
        let share = self.admit_peer()?;
        self.in_flight
            .clone()
            .try_acquire_owned()
            .map(|p| Admission {
                _slot: p,
                _peer: share,
            })
            .map_err(|_| {
                ApiError::new(
                    Code::ResourceExhausted,
                    format!(
                        "the server has {} requests in flight, its limit; retry later",
                        self.options.max_in_flight
                    ),
                )
            })
    }

    /// A place of the peer's share for a request that bypasses the server's in-flight limit (a
    /// health check, which an overloaded server still answers): one peer still has at most
    /// [`CoreOptions::max_in_flight_per_peer`] requests of any kind in flight.
    pub(crate) fn admit_peer(&self) -> Result<PeerHold, ApiError> {
        let peer = crate::api::scope::current_peer();
        self.peer_places.take(peer, 1).map_err(|held| {
            ApiError::new(
                Code::ResourceExhausted,
                format!(
                    "{peer} has {held} requests in flight, its share of the server's {} (--max_in_flight_per_peer); retry later",
                    self.options.max_in_flight
                ),
            )
        })
    }

    /// Reserves `bytes` of the memory budget of the requests in flight, or refuses with
    /// RESOURCE_EXHAUSTED: `what` says what the memory is for.
    pub fn reserve(&self, bytes: usize, what: &str) -> Result<Reservation, ApiError> {
        let want = kib(bytes);
        if want == 0 {
            return Ok(Reservation::default());
        }
        let budget = self.options.max_in_flight_bytes;
        let too_large = || {
            ApiError::new(
                Code::ResourceExhausted,
                format!(
                    "{what} needs {bytes} bytes, more than the {budget} bytes all requests in flight may hold (--max_in_flight_bytes)"
                ),
            )
        };
        let n = u32::try_from(want).map_err(|_| too_large())?;
        if want > kib(budget).max(1) {
            return Err(too_large());
        }
        let peer = crate::api::scope::current_peer();
        if peer != crate::api::shares::PeerKey::Unknown && want > self.peer_kib.cap() {
            return Err(ApiError::new(
                Code::ResourceExhausted,
                format!(
                    "{what} needs {bytes} bytes, more than the {} KiB of memory for requests in flight that one peer may hold (--max_in_flight_bytes_per_peer)",
                    self.peer_kib.cap()
                ),
            ));
        }
        let share = self.peer_kib.take(peer, want).map_err(|held| {
            ApiError::new(
                Code::ResourceExhausted,
                format!(
                    "{what} needs {bytes} bytes, and {peer} already holds {held} KiB of the {} KiB of memory for requests in flight that one peer may hold (--max_in_flight_bytes_per_peer); retry later",
                    self.peer_kib.cap()
                ),
            )
        })?;
        self.budget
            .clone()
            .try_acquire_many_owned(n)
            .map(|p| Reservation {
                permit: Some(p),
                peer: share,
                bytes,
            })
            .map_err(|_| {
                ApiError::new(
                    Code::ResourceExhausted,
                    format!(
                        "{what} needs {bytes} bytes and the memory for requests in flight ({budget} bytes, --max_in_flight_bytes) is taken; retry later"
                    ),
                )
            })
    }

    /// Resolves a model spec.
    pub fn resolve(
        &self,
        name: &str,
        version: Option<i64>,
        label: Option<&str>,
    ) -> Result<ResolvedModel, ApiError> {
        if name.is_empty() {
            return Err(ApiError::new(Code::InvalidArgument, "Missing ModelSpec"));
        }
        // The requester's pin, per request: only a file it accepts answers.
        let scope = crate::api::scope::current();
        if let Some(why) = scope.malformed {
            return Err(ApiError::new(Code::InvalidArgument, why));
        }
        Ok(self.repo.resolve_accepting(
            name,
            version,
            label,
            scope.accepted.as_ref().and_then(|a| a.for_model(name)),
        )?)
    }

    /// Resolves a gRPC ModelSpec.
    pub fn resolve_spec(&self, spec: Option<&ModelSpec>) -> Result<ResolvedModel, ApiError> {
        let spec = spec.ok_or_else(|| ApiError::new(Code::InvalidArgument, "Missing ModelSpec"))?;
        let (v, l) = match &spec.version_choice {
            Some(VersionChoice::Version(v)) => (Some(*v), None),
            Some(VersionChoice::VersionLabel(l)) => (None, Some(l.as_str())),
            None => (None, None),
        };
        self.resolve(&spec.name, v, l)
    }

    /// Checks inputs against the signature, runs the model, and filters outputs.
    pub async fn infer(
        &self,
        target: &ResolvedModel,
        signature: &str,
        mut inputs: Vec<(String, Tensor)>,
        output_filter: &[String],
        entry: Entry,
    ) -> Result<Vec<(String, Tensor)>, ApiError> {
        let start = Instant::now();
        let r = self
            .infer_inner(target, signature, &mut inputs, output_filter, entry)
            .await;
        let status = match &r {
            Ok(_) => "OK",
            Err(e) => e.code_name(),
        };
        self.metrics.request(&target.name, status);
        if r.is_ok() {
            if let Some(slot) = crate::api::scope::current().receipt {
                let _ = slot.set(crate::api::scope::Answered {
                    model: target.name.clone(),
                    version: target.version,
                    sha256: target.digest.clone(),
                    signature: if signature.is_empty() {
                        DEFAULT_SIGNATURE.to_owned()
                    } else {
                        signature.to_owned()
                    },
                });
            }
            self.metrics.latency(
                &target.name,
                entry.api(),
                entry.name(),
                start.elapsed().as_secs_f64() * 1e6,
            );
        }
        r
    }

    async fn infer_inner(
        &self,
        target: &ResolvedModel,
        signature: &str,
        inputs: &mut Vec<(String, Tensor)>,
        output_filter: &[String],
        entry: Entry,
    ) -> Result<Vec<(String, Tensor)>, ApiError> {
        let sig = lookup_signature(target.model.signatures(), signature, entry)?;
        let ordered = order_inputs(sig, std::mem::take(inputs))?;
        for alias in output_filter {
            if !sig.outputs.iter().any(|o| &o.name == alias) {
                let names: Vec<&str> = sig.outputs.iter().map(|o| o.name.as_str()).collect();
                return Err(ApiError::new(
                    Code::InvalidArgument,
                    format!("output tensor alias not found in signature: {alias} Outputs expected to be in the set {}.", set_str(&names)),
                ));
            }
        }
        // The server's deadline, or the requester's if it is sooner (`grpc-timeout`).
        let (limit, whose) = match crate::api::scope::current().deadline {
            Some(d) if d < Instant::now() + self.options.timeout => (
                d.saturating_duration_since(Instant::now()),
                "its grpc-timeout",
            ),
            _ => (self.options.timeout, "--request_timeout_ms"),
        };
        if limit.is_zero() && whose != "--request_timeout_ms" {
            return Err(ApiError::new(
                Code::DeadlineExceeded,
                format!("the request's deadline ({whose}) passed before its inference began"),
            ));
        }
        let outputs = tokio::time::timeout(limit, self.run(target, signature, ordered))
            .await
            .map_err(|_| {
                ApiError::new(
                    Code::DeadlineExceeded,
                    format!("the request took longer than {limit:?} ({whose})"),
                )
            })??;
        let mut named: Vec<(String, Tensor)> = sig
            .outputs
            .iter()
            .map(|o| o.name.clone())
            .zip(outputs)
            .collect();
        if !output_filter.is_empty() {
            // Only the outputs asked for, in the order asked (the Open Inference Protocol
            // answers in a list; TF Serving's map has no order).
            named.retain(|(n, _)| output_filter.contains(n));
            named.sort_by_key(|(n, _)| output_filter.iter().position(|f| f == n));
        }
        // The outputs and their encoding are memory of the budget like the request's: held
        // until the response has been sent, so that answers a peer does not read count
        // against its share.
        let held = self.reserve(answer_bytes(&named, entry), "the answer")?;
        crate::api::scope::hold_until_sent(held);
        Ok(named)
    }

    async fn run(
        &self,
        target: &ResolvedModel,
        signature: &str,
        inputs: Vec<Tensor>,
    ) -> Result<Vec<Tensor>, ApiError> {
        if let Some(b) = &self.batcher {
            return b.submit(target, signature, inputs).await;
        }
        let elements: usize = inputs
            .iter()
            .map(|t| t.shape.iter().product::<usize>())
            .sum();
        let signature = signature.to_owned();
        let max_output = self.options.max_response_tensor_bytes;
        let timed = move |model: &dyn LoadedModel, metrics: &Metrics, name: &str, inputs| {
            let t = Instant::now();
            let r = model.run_within(&signature, inputs, max_output);
            let took = t.elapsed();
            model.cost().record(elements, took);
            metrics.runtime(name, model.engine(), took.as_secs_f64() * 1e6);
            r
        };
        let r = if target.model.cost().is_quick(elements) {
            // A model this quick runs here, on the I/O thread: handing it to a worker thread and
            // back would cost more than the inference (engine::QUICK_RUN). A place among the
            // workers still counts it against the worker limit.
            let _place = self
                .workers
                .take(crate::api::scope::current_peer())
                .await
                .map_err(|_| ApiError::new(Code::Unavailable, "the server is shutting down"))?;
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                timed(&*target.model, &self.metrics, &target.name, inputs)
            }))
            .map_err(|_| ApiError::new(Code::Internal, "inference task failed: it panicked"))?
        } else {
            let model = target.model.clone();
            let metrics = self.metrics.clone();
            let name = target.name.clone();
            // On the inference threads, which take waiting inferences in turn; a short one
            // runs on the short lane when they are all taken.
            let short = target.model.cost().is_short(elements);
            self.pool
                .run(short, move || timed(&*model, &metrics, &name, inputs))
                .await?
        };
        r.map_err(ApiError::from)
    }
}

/// The memory an answer of `outputs` takes until it is sent: the tensors, and their encoding
/// for `entry`: about their own size as protobuf, and as JSON the longest text an element of
/// their type is written as, with its separator (a string escaped at most six bytes per byte).
fn answer_bytes(outputs: &[(String, Tensor)], entry: Entry) -> usize {
    use teeserve_tensor::{DType, Data};
    outputs
        .iter()
        .map(|(_, t)| {
            let raw = match &t.data {
                Data::Str(s) => s.iter().map(|v| v.len() + 24).sum(),
                _ => t.len().saturating_mul(t.dtype().element_bytes()),
            };
            let encoded = match entry {
                Entry::Grpc | Entry::V2Grpc => raw,
                Entry::Rest | Entry::V2Rest => match &t.data {
                    Data::Str(s) => s.iter().map(|v| v.len() * 6 + 4).sum(),
                    _ => t.len().saturating_mul(match t.dtype() {
                        DType::Bool => 7,
                        DType::I8 | DType::U8 => 6,
                        DType::I16 | DType::U16 => 8,
                        DType::I32 | DType::U32 => 13,
                        DType::F16 | DType::BF16 | DType::F32 => 17,
                        DType::C64 | DType::C128 => 54,
                        _ => 26,
                    }),
                },
            };
            raw.saturating_add(encoded)
        })
        .fold(0usize, usize::saturating_add)
}

/// Bytes in KiB, rounded up (the budget's unit).
fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024)
}
