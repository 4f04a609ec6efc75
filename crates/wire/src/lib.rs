//! TensorFlow Serving's wire types: the protobuf messages and gRPC services of TF Serving's
//! `PredictionService` and `ModelService`, the TensorFlow protos they carry (TensorProto,
//! SignatureDef, tf.Example, SavedModel), gRPC health and the Open Inference Protocol's
//! `inference.GRPCInferenceService` (KServe v2), generated at build time from the
//! definitions in `/proto` (same packages and field numbers as TF Serving's) by a pure-Rust
//! protobuf compiler; and the prost codec both ends use.
//!
//! This is the bottom layer of serving: the server, the requester and the Python package build
//! on it without any inference engine.
//!
//! ```
//! use prost::Message as _;
//! use teeserve_wire::tensorflow::serving::{ModelSpec, PredictRequest};
//!
//! let req = PredictRequest {
//!     model_spec: Some(ModelSpec { name: "digits".into(), ..Default::default() }),
//!     ..Default::default()
//! };
//! let bytes = req.encode_to_vec();
//! assert_eq!(PredictRequest::decode(bytes.as_slice()).unwrap(), req);
//! ```
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

pub mod codec;
pub mod heavy;

use tonic::Code;

/// `tensorflow.*`
#[allow(missing_docs, unreachable_pub, clippy::all)]
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
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod health {
    tonic::include_proto!("grpc.health.v1");
}

/// `inference`: the Open Inference Protocol (KServe v2) over gRPC.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod inference {
    tonic::include_proto!("inference");
}

/// The encoded `FileDescriptorSet` of every message and service here (and what they import),
/// for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));

/// HTTP/2 stream window (bytes) of the server's listeners and of the requester's gRPC client:
/// the protocol's default of 64 KiB makes a 600 KB tensor wait for several WINDOW_UPDATEs.
pub const H2_STREAM_WINDOW: u32 = 8 << 20;

/// Largest HTTP/2 frame the server's listeners accept.
pub const H2_MAX_FRAME: u32 = 256 << 10;

/// TensorFlow's name of a gRPC status code (`NOT_FOUND`), as TF Serving's error bodies and
/// logs spell it.
pub fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
