//! The teeserve inference server: TensorFlow Serving's gRPC and REST APIs over TLS, serving
//! ONNX models that are unsealed in memory after the key broker releases their key.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let mut o = teeserve_serving::server::ServeOptions::default();
//! o.model_base_path = Some("models/digits".into());
//! o.tls.insecure = true;
//! let server = teeserve_serving::server::Server::start(o, None).await?;
//! println!("gRPC on {:?}", server.grpc_addr);
//! # Ok(()) }
//! ```
// `deny`, not `forbid`: the TensorFlow engine's FFI module (engine/tensorflow/ffi.rs, the only
// one) allows unsafe code to call TensorFlow's C API, with a SAFETY comment per block.
#![deny(unsafe_code)]
#![forbid(unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

pub mod admission;
pub mod attestation;
pub mod batching;
pub mod classify;
pub mod codec;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod repository;
pub mod requester;
pub mod rest;
pub mod server;
pub mod service;
pub mod tensor;
pub mod textproto;

/// Generated protobuf and gRPC code (from /proto).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    /// `tensorflow.*`
    pub mod tensorflow {
        tonic::include_proto!("tensorflow");
        /// `tensorflow.error`
        pub mod error {
            tonic::include_proto!("tensorflow.error");
        }
        /// `tensorflow.serving`
        pub mod serving {
            tonic::include_proto!("tensorflow.serving");
        }
    }
    /// `grpc.health.v1`
    pub mod health {
        tonic::include_proto!("grpc.health.v1");
    }
}
