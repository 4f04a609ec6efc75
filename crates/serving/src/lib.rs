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

// The layers, bottom to top; each imports only from those above it in this list (checked by
// scripts/check_layers.py). The wire types and tensors below them all are the crates
// teeserve-wire and teeserve-tensor.
pub mod api;
pub mod engine;
pub mod models;
pub mod network;

pub use api::scope;
pub use api::{
    ApiError, CoreOptions, Entry, ServingCore, DEFAULT_MAX_IN_FLIGHT_BYTES,
    DEFAULT_MAX_TENSOR_BYTES, DEFAULT_SIGNATURE, PREDICT_METHOD,
};
pub use models::{
    AdmittedModels, BatchingParameters, ModelAdmission, ModelCode, ModelConfig, ModelFileError,
    ModelRepository, ModelSource, ModelState, ResolveError, ResolvedModel, ServedModel, SslConfig,
    State, TextProtoError, VersionPolicy, VersionState, MAX_MODEL_BYTES, MODEL_FILE, SEALED_FILE,
};
pub use network::{
    free_loopback_port, ConnectionLimits, KbsOptions, OptionsError, ServeError, ServeOption,
    ServeOptions, Server, TlsOptions,
};

/// The parsers of untrusted bytes, for the fuzz targets in `fuzz/`; not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::api::classify::{check_merged, rows as example_rows, serialized_examples};
    pub use crate::api::inputs::{check_declared, decode_inputs, order_inputs};
    pub use crate::api::model_infer::model_infer_inputs;
    pub use crate::models::config::{batching_parameters, model_server_config, ssl_config};
    pub use crate::models::{frame_record, warmup_records, WarmupError};
    pub use crate::network::admission::{decoded_bytes, GrpcMessage};
    pub use crate::network::receipt_request::unique_json_keys;
    pub use crate::network::rest::{example_row, json_example, predict_inputs, v2_infer_inputs};
}
