//! Sending tensors: one gRPC or REST connection to a TF Serving-compatible endpoint, the
//! model's signature read from its metadata, Predict, and the tensors of a request read from
//! a requester's input file. Built on the wire types and tensors alone, without any engine.
//!
//! - `connection.rs`: one gRPC or REST connection, metadata and Predict;
//! - `input.rs`: the tensors of a request from a requester's input file;
//! - `transport.rs`: the gRPC channel.

mod connection;
mod input;
mod transport;

pub use connection::{
    top_classes, Connection, Prediction, RawCodec, Receipt, RequestTarget, RECEIPT_HEADER,
    RECEIPT_TRAILER,
};
pub use input::{input_tensors, read_input_file};
pub use transport::grpc_channel;
