//! The requester's side: send tensors to a TF Serving-compatible endpoint over gRPC or REST,
//! and, before any data leaves, check that the TLS endpoint lives in an attested TEE.
//!
//! - `attestation.rs`: fetch and check the attestation document, pin the attested key;
//! - `connection.rs`: one gRPC or REST connection, metadata and Predict;
//! - `transport.rs`: the TLS client configuration, the gRPC channel and the REST client.

mod attestation;
mod connection;
mod error;
mod transport;

pub use attestation::{
    answered_by, attested_client_config, check_attestation, fetch_attestation, fresh_nonce,
    spki_of, FetchedAttestation,
};
pub use connection::{top_classes, Connection, Prediction, RequestTarget};
pub use error::RequesterError;
pub use transport::{ca_verifier, client_config, grpc_channel, host_of, Capture, Io, RestClient};
