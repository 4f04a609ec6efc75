//! The requester's side of teeserve, without the server: before any data leaves, check that a
//! TLS endpoint's key lives in a TEE that the requester's policy admits, then require that same
//! key on every later connection.
//!
//! The check fetches the server's attestation document (`/v1/attestation`, quoted over a fresh
//! nonce when the TLS key's origin calls for one: [`NonceChoice`]) on a TLS connection,
//! verifies its quote, appraises the verdict and the document's
//! statements against a [`teeserve_attest::Policy`], and checks that the quote binds the key of
//! the certificate that connection presented. [`attested_client_config`] then pins that key
//! (and the CA, when given) for the data connections. `teeserve predict --attest` and the
//! Python package build on it. [`requester`] sends the tensors: gRPC or REST connections,
//! metadata and Predict, on the wire types and tensors alone (no engine is linked).
//!
//! [`attest_server`] runs the whole check in one call and names the rule that refused
//! ([`Refusal`]); [`forward::Forwarder`] carries the connections of a client that cannot pin a
//! key itself (grpcio, requests) to the attested server, from a private Unix socket.
//!
//! ```no_run
//! use std::sync::Arc;
//! use teeserve_attest::{Collateral, CollateralSource, Policy, TrustAnchor, Verifier};
//! use teeserve_client::{attested_client_config, ca_verifier, check_attestation};
//! use teeserve_client::{fetch_attestation, fresh_nonce};
//!
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let ca = ca_verifier(&std::fs::read("ca.pem")?)?;
//! let policy = Policy::from_toml(&std::fs::read_to_string("policy.toml")?)?;
//! let nonce = fresh_nonce()?;
//! let fetched = fetch_attestation("localhost:8500", ca.clone(), "localhost", Some(&nonce)).await?;
//! let verifier = Verifier::new(TrustAnchor::intel());
//! let collateral = Collateral::from_json(&std::fs::read("collateral.json")?)?;
//! let source = CollateralSource::bundle(&verifier, &collateral)?;
//! let appraiser = teeserve_ratls::Appraiser::new(verifier, source);
//! let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
//! check_attestation(&appraiser, &policy, &fetched, Some(&nonce), now)?;
//! // Every data connection must present the attested key and chain to the CA.
//! let tls = attested_client_config(&fetched.cert, Some(ca), None, None, &[b"h2"])?;
//! # drop(tls);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

mod attestation;
mod attested;
mod error;
pub mod forward;
mod receipt;
pub mod requester;
mod transport;

pub use attestation::{
    accept_header, answered_by, appraise_attestation, attested_client_config, check_attestation,
    fetch_attestation, fetch_attestation_as, fetch_attestation_served, fetch_document, fresh_nonce,
    spki_of, DocumentQuery, FetchedAttestation,
};
pub use attested::{attest_server, AttestOptions, Attested, NonceChoice};
pub use error::{Refusal, RequesterError};
pub use receipt::{check_receipt, document_of_receipt, receipt_document, CheckedReceipt};
pub use transport::{
    ca_verifier, client_config, connect_tls, host_of, Capture, ClientIdentity, Io, RestClient,
    MAX_ANSWER,
};
