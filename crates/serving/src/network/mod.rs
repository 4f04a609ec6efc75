//! The network: the server's start-up (options, secrets from the key broker, TLS), the gRPC
//! services and the REST API over it, admission of connections and requests, the attestation
//! endpoint, the metrics endpoint and the access log. Everything a request does after it is
//! read is the serving API's.

pub(crate) mod access_log;
pub(crate) mod admission;
pub(crate) mod attestation;
pub(crate) mod connection;
pub(crate) mod fresh_quotes;
pub(crate) mod grpc;
pub(crate) mod grpc_v2;
pub(crate) mod listener;
pub(crate) mod options;
pub(crate) mod port_peers;
pub(crate) mod provisioning;
pub(crate) mod receipt_request;
pub(crate) mod receipts;
pub(crate) mod rest;
pub(crate) mod server;
pub(crate) mod tls;

pub use listener::free_loopback_port;
pub use options::{
    ConnectionLimits, KbsOptions, OptionsError, ServeError, ServeOption, ServeOptions, TlsOptions,
};
pub use server::Server;
