//! Verifies Intel DCAP attestation evidence for teeserve: it parses SGX (v3) and TDX (v4, v5)
//! quotes, checks them against Intel-signed collateral with Intel QVL semantics into a
//! [`Verdict`], and appraises the verdict with a [`Policy`]. It also produces evidence: under
//! Gramine, in a TDX guest, or from a simulated TEE.
//!
//! ```no_run
//! use std::time::{SystemTime, UNIX_EPOCH};
//! use teeserve_attest::{Collateral, Policy, Verifier};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let quote = std::fs::read("quote.bin")?;
//! let collateral = Collateral::from_json(&std::fs::read("collateral.json")?)?;
//! // The verification time is an input (Unix seconds); here it is now.
//! let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
//! let verdict = Verifier::default().verify(&quote, &collateral, now)?;
//! Policy::default().appraise(&verdict)?;
//! println!("{} quote, TCB status {}", verdict.tee, verdict.tcb_status);
//! # Ok(())
//! # }
//! ```
//!
//! The modules, in the order evidence flows through them:
//!
//! - [`platform`] produces a quote over 64 bytes of report data; [`sim`] is the simulated TEE.
//! - [`quote`] parses a quote into typed structs.
//! - [`collateral`] is the Intel-signed data a quote is checked against, and a PCCS client.
//! - [`verify`] checks a quote and its collateral up to a [`TrustAnchor`], into a [`Verdict`].
//! - [`source`] gives a verifier verified collateral for each quote: one bundle, or a PCCS with
//!   a cache.
//! - [`policy`] decides whether a verdict is admitted.
//! - [`x509`] and [`pck`] are the certificates, CRLs and PCK certificate extension it reads.
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

pub mod collateral;
mod der;
pub mod pck;
pub mod platform;
pub mod policy;
pub mod quote;
pub mod sim;
pub mod source;
pub mod verify;
pub mod x509;

pub use collateral::pccs::PccsClient;
pub use collateral::{Collateral, CollateralError, TcbStatus};
pub use policy::{Policy, PolicyError};
pub use quote::{Quote, QuoteError, Tee};
pub use source::{CollateralSource, SourceError};
pub use verify::{PreparedCollateral, TrustAnchor, Verdict, Verifier, VerifyError};
