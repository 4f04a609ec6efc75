//! The serving API, as TF Serving defines it and independent of the transport: Predict,
//! Classify and Regress, GetModelMetadata and GetModelStatus on a [`ServingCore`], with the
//! admission of requests and their memory, batching, warmup replay, metrics and the one error
//! type of the request path, [`ApiError`]. gRPC and REST (the network layer) both call it.

pub(crate) mod batching;
pub(crate) mod classify;
pub(crate) mod error;
pub(crate) mod metrics;
pub mod scope;
pub(crate) mod service;
pub(crate) mod warmup;

pub use error::ApiError;
pub use service::{
    CoreOptions, Entry, ServingCore, DEFAULT_MAX_IN_FLIGHT_BYTES, DEFAULT_MAX_TENSOR_BYTES,
    DEFAULT_SIGNATURE, PREDICT_METHOD,
};
pub use warmup::WarmupReplay;
