//! The requester's side: send tensors to a TF Serving-compatible endpoint over gRPC or REST,
//! and, before any data leaves, check that the TLS endpoint lives in an attested TEE.
//!
//! The attestation check, the pinned TLS configuration and the REST client are
//! `teeserve_client`'s (re-exported here), so that a requester can have them without the
//! server's engines; this module adds what needs the server's types:
//!
//! - `connection.rs`: one gRPC or REST connection, metadata and Predict;
//! - `input.rs`: the tensors of a request from a requester's input file;
//! - `transport.rs`: the gRPC channel.

mod connection;
mod input;
mod transport;

pub use connection::{top_classes, Connection, Prediction, RequestTarget};
pub use input::{input_tensors, read_input_file};
pub use teeserve_client::{
    answered_by, attest_server, attested_client_config, ca_verifier, check_attestation,
    client_config, fetch_attestation, fresh_nonce, host_of, spki_of, AttestOptions, Attested,
    Capture, ClientIdentity, FetchedAttestation, Io, NonceChoice, RequesterError, RestClient,
    MAX_ANSWER,
};
pub use transport::grpc_channel;
