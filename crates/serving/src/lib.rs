//! The teeserve inference server: TensorFlow Serving's gRPC and REST APIs over TLS, serving
//! ONNX models that are unsealed in memory after the key broker releases their key.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let mut o = teeserve_serving::ServeOptions::default();
//! o.model_base_path = Some("models/digits".into());
//! o.tls.insecure = true;
//! let server = teeserve_serving::Server::start(o, None).await?;
//! println!("gRPC on {:?}", server.grpc_addr);
//! # Ok(()) }
//! ```
// `deny`, not `forbid`: the TensorFlow engine's FFI module (engine/tensorflow/ffi.rs, the only
// one) allows unsafe code to call TensorFlow's C API, with a SAFETY comment per block.
#![deny(unsafe_code)]
#![forbid(unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

mod admission;
mod attestation;
mod batching;
mod classify;
mod connection;
pub mod engine;
mod error;
mod fresh_quotes;
mod grpc;
mod metrics;
mod repository;
mod rest;
pub mod scope;
mod server;
mod service;
mod textproto;
mod warmup;

pub use error::ApiError;
pub use repository::{
    AdmittedModels, ModelAdmission, ModelCode, ModelFileError, ModelRepository, ModelSource,
    ModelState, ResolveError, ResolvedModel, ServedModel, State, VersionState, MAX_MODEL_BYTES,
    MODEL_FILE, SEALED_FILE,
};
pub use server::{
    free_loopback_port, ConnectionLimits, KbsOptions, OptionsError, ServeError, ServeOption,
    ServeOptions, Server, TlsOptions,
};
pub use service::{
    CoreOptions, Entry, ServingCore, DEFAULT_MAX_IN_FLIGHT_BYTES, DEFAULT_MAX_TENSOR_BYTES,
    DEFAULT_SIGNATURE, PREDICT_METHOD,
};
pub use textproto::{BatchingParameters, ModelConfig, SslConfig, TextProtoError, VersionPolicy};

/// The parsers of untrusted bytes, for the fuzz targets in `fuzz/`; not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::admission::decoded_bytes;
    pub use crate::classify::{check_merged, rows as example_rows, serialized_examples};
    pub use crate::rest::{example_row, json_example, predict_inputs};
    pub use crate::service::{check_declared, decode_inputs, order_inputs};
    pub use crate::textproto::{batching_parameters, model_server_config, ssl_config};
    pub use crate::warmup::{frame_record, records as warmup_records, WarmupError};
}
