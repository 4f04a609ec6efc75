//! The serving API, as TF Serving defines it and independent of the transport: Predict,
//! Classify and Regress, GetModelMetadata and GetModelStatus on a [`ServingCore`], with the
//! admission of requests and their memory, batching, warmup replay, metrics and the one error
//! type of the request path, [`ApiError`]. gRPC and REST (the network layer) both call it.
//!
//! - `service.rs`: [`ServingCore`]: resolving a model, admitting requests and their memory, runs;
//! - `pool.rs`: the inference threads;
//! - `predict.rs`, `inputs.rs`: Predict, and a request's inputs against the signature;
//! - `classify.rs`: Classify and Regress; `metadata.rs`: GetModelMetadata, GetModelStatus;
//! - `batching.rs`: the dynamic batcher; `warmup.rs`: warmup replay;
//! - `v2.rs`, `model_infer.rs`: the Open Inference Protocol (KServe v2): readiness, metadata,
//!   inputs against the signature, and gRPC's `ModelInfer`;
//! - `error.rs`, `metrics.rs`, `scope.rs`: the request error, metrics, the request's scope;
//! - `shares.rs`: peers, and each one's share of the places and memory of requests in flight.

pub(crate) mod batching;
pub(crate) mod classify;
pub(crate) mod error;
pub(crate) mod inputs;
pub(crate) mod metadata;
pub(crate) mod metrics;
pub(crate) mod model_infer;
pub(crate) mod pool;
pub(crate) mod predict;
pub(crate) mod reload;
pub mod scope;
pub(crate) mod service;
pub mod shares;
pub(crate) mod turns;
pub mod v2;
pub(crate) mod warmup;

pub use error::ApiError;
pub use service::{
    CoreOptions, Entry, ServingCore, DEFAULT_MAX_IN_FLIGHT_BYTES, DEFAULT_MAX_TENSOR_BYTES,
    DEFAULT_SIGNATURE, PREDICT_METHOD,
};
pub use warmup::WarmupReplay;
