//! `teeserve receipt verify`: checks a receipt that `predict --receipt` wrote, offline, against
//! the attestation document that carries its key and a requester policy.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use teeserve_attest::{Collateral, CollateralSource, Verifier};
use teeserve_client::check_receipt;
use teeserve_client::FetchedAttestation;
use teeserve_ratls::{Appraiser, AttestationDoc};

use super::attest::{anchor, load_policy};
use crate::util::{self, refuse};

/// `teeserve receipt`.
#[derive(Debug, Subcommand)]
pub enum ReceiptCmd {
    /// Verify a receipt: the attestation document's quote and the policy (at the receipt's
    /// time), the receipt's signature by the key the document binds, and that the request and
    /// response shown are the ones it names. Prints the model, version, file digest and time.
    Verify(VerifyArgs),
}

/// Flags of `receipt verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The directory `predict --receipt` wrote: receipt.cbor, request.bin, response.bin,
    /// attestation.json, certificate.der.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The requester policy (TOML) the server's attestation must satisfy.
    #[arg(long, value_name = "POLICY.toml")]
    pub policy: PathBuf,
    /// Root certificate to trust for attestation instead of the Intel SGX Root CA.
    #[arg(long, value_name = "PEM")]
    pub root: Option<PathBuf>,
    /// Collateral bundle (default: the one the attestation document carries).
    #[arg(long, value_name = "FILE")]
    pub collateral: Option<PathBuf>,
}

/// Runs `teeserve receipt`.
pub fn run(c: ReceiptCmd) -> Result<i32> {
    let ReceiptCmd::Verify(a) = c;
    let read = |name: &str| util::read(&a.dir.join(name));
    let doc_json = read("attestation.json")?;
    let doc: AttestationDoc = serde_json::from_slice(&doc_json)
        .with_context(|| format!("{}", a.dir.join("attestation.json").display()))?;
    let attested = FetchedAttestation {
        doc,
        cert: read("certificate.der")?,
    };
    let policy = load_policy(&a.policy, "--policy")?;
    let verifier = Verifier::new(anchor(a.root.as_ref())?);
    let collateral = match (&a.collateral, &attested.doc.collateral) {
        (Some(p), _) => Collateral::from_json(&util::read(p)?).context("--collateral")?,
        (None, Some(c)) => Collateral::from_json(c.to_string().as_bytes())
            .context("the collateral in attestation.json")?,
        (None, None) => {
            anyhow::bail!("no collateral: attestation.json carries none; give --collateral")
        }
    };
    let source = CollateralSource::bundle(&verifier, &collateral).context("collateral")?;
    let appraiser = Appraiser::new(verifier, source);
    let checked = check_receipt(
        &appraiser,
        &policy,
        &attested,
        &doc_json,
        &read("receipt.cbor")?,
        &read("request.bin")?,
        &read("response.bin")?,
    )
    .map_err(|r| refuse(format!("receipt refused ({}): {}", r.rule, r.message)))?;
    util::say(serde_json::to_string_pretty(&checked.to_json())?)?;
    Ok(0)
}
