//! What can go wrong on the requester's side, by class; the message says exactly what.

/// Why a requester could not get an answer, or refused to send its data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequesterError {
    /// The TLS configuration (the CA, the client identity, the pinned key) is unusable.
    #[error("{0}")]
    Tls(String),
    /// The server could not be reached, or the connection broke.
    #[error("{0}")]
    Connect(String),
    /// The server refused the request (a gRPC status or an HTTP error) or answered something
    /// that is not a valid answer.
    #[error("{0}")]
    Server(String),
    /// The server's attestation could not be fetched, or does not verify, bind this
    /// connection's key, or satisfy the policy.
    #[error("{0}")]
    Attestation(String),
}

impl From<RequesterError> for String {
    fn from(e: RequesterError) -> String {
        e.to_string()
    }
}
