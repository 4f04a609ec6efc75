//! Evidence for teeserve: Intel DCAP quotes (SGX v3, TDX v4/v5), their verification against
//! Intel-signed collateral with Intel QVL semantics, appraisal policies, and the platforms that
//! produce evidence (Gramine's `/dev/attestation`, TDX configfs-tsm, and a simulated TEE).
//!
//! ```no_run
//! use teeserve_attest::{collateral::Collateral, verify::Verifier, policy::Policy};
//! let quote = std::fs::read("quote.bin").unwrap();
//! let collateral = Collateral::from_json(&std::fs::read("collateral.json").unwrap()).unwrap();
//! let verdict = Verifier::default().verify(&quote, &collateral, 1_751_000_000).unwrap();
//! Policy::default().appraise(&verdict).unwrap_or_else(|e| eprintln!("{e}"));
//! ```
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

pub mod collateral;
pub mod der;
pub mod pck;
pub mod platform;
pub mod policy;
pub mod quote;
pub mod sim;
pub mod source;
pub mod verify;
pub mod x509;

pub use collateral::{Collateral, TcbStatus};
pub use policy::{Policy, PolicyError};
pub use quote::{Quote, Tee};
pub use source::{CollateralSource, SourceError};
pub use verify::{TrustAnchor, Verdict, Verifier, VerifyError};
