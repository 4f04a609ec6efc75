//! `teeserve attest ...` and `teeserve collateral ...`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use teeserve_attest::quote::decode_quote_file;
use teeserve_attest::{Collateral, Policy, TrustAnchor, Verifier};

use crate::util::{self, refuse};

/// `teeserve attest`.
#[derive(Debug, Subcommand)]
pub enum AttestCmd {
    /// Verify a DCAP quote (SGX v3, TDX v4/v5) against collateral and print the verdict as JSON.
    ///
    /// Exit status: 0 verified (and admitted when --policy is given), 1 not verified or refused
    /// (the reason is on stderr), 2 usage or I/O error.
    Verify(VerifyArgs),
}

/// Flags of `attest verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The quote: raw bytes, or hex text.
    #[arg(long, value_name = "FILE")]
    pub quote: PathBuf,
    /// A collateral bundle (JSON in dcap-qvl's layout), as written by `collateral fetch`.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "pccs",
        required_unless_present = "pccs"
    )]
    pub collateral: Option<PathBuf>,
    /// Fetch collateral from this PCCS or Intel PCS (v4 API base URL).
    #[arg(long, value_name = "URL")]
    pub pccs: Option<String>,
    /// PEM CA certificate that signs the PCCS's TLS certificate (https PCCS only).
    #[arg(long, value_name = "PEM")]
    pub pccs_ca: Option<PathBuf>,
    /// Verification time: Unix seconds or RFC 3339 (default: now).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Appraise the verdict against this policy (TOML) as well.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Trust this root certificate (PEM) instead of the Intel SGX Root CA (e.g. a simulated
    /// platform's root.pem).
    #[arg(long, value_name = "PEM")]
    pub root: Option<PathBuf>,
}

/// `teeserve collateral`.
#[derive(Debug, Subcommand)]
pub enum CollateralCmd {
    /// Fetch the collateral a quote needs from a PCCS and write it as a bundle for offline use.
    Fetch {
        /// The quote (raw or hex).
        #[arg(long, value_name = "FILE")]
        quote: PathBuf,
        /// PCCS or Intel PCS v4 base URL, e.g. https://pccs.example:8081/sgx/certification/v4/
        #[arg(long, value_name = "URL")]
        pccs: String,
        /// PEM CA certificate of the PCCS's TLS certificate (https only).
        #[arg(long, value_name = "PEM")]
        pccs_ca: Option<PathBuf>,
        /// Where to write the bundle (JSON).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

pub fn anchor(root: Option<&PathBuf>) -> Result<TrustAnchor> {
    match root {
        Some(p) => TrustAnchor::from_pem(&util::read(p)?)
            .with_context(|| format!("--root {}", p.display())),
        None => Ok(TrustAnchor::intel()),
    }
}

pub fn load_policy(path: &std::path::Path) -> Result<Policy> {
    Policy::from_toml(&util::read_text(path)?)
        .with_context(|| format!("--policy {}", path.display()))
}

fn pccs_client(
    url: &str,
    ca: Option<&PathBuf>,
) -> Result<teeserve_attest::collateral::pccs::PccsClient> {
    let ca = ca.map(|p| util::read(p)).transpose()?;
    teeserve_attest::collateral::pccs::PccsClient::new(url, ca.as_deref())
        .with_context(|| format!("--pccs {url}"))
}

pub fn run(cmd: AttestCmd) -> Result<i32> {
    match cmd {
        AttestCmd::Verify(a) => verify(a),
    }
}

fn verify(a: VerifyArgs) -> Result<i32> {
    let quote = decode_quote_file(&util::read(&a.quote)?);
    let at = match &a.at {
        Some(s) => util::parse_time(s)?,
        None => util::now(),
    };
    let policy = a.policy.as_deref().map(load_policy).transpose()?;
    let verifier = Verifier::new(anchor(a.root.as_ref())?);
    let collateral = match (&a.collateral, &a.pccs) {
        (Some(p), _) => Collateral::from_json(&util::read(p)?)
            .with_context(|| format!("--collateral {}", p.display()))?,
        (None, Some(url)) => {
            let parsed =
                teeserve_attest::Quote::parse(&quote).map_err(|e| refuse(e.to_string()))?;
            pccs_client(url, a.pccs_ca.as_ref())?.fetch_for_quote(&parsed)?
        }
        (None, None) => anyhow::bail!("one of --collateral or --pccs is required"),
    };
    let verdict = verifier
        .verify(&quote, &collateral, at)
        .map_err(|e| refuse(format!("not verified: {e}")))?;
    println!("{}", serde_json::to_string_pretty(&verdict)?);
    if let Some(p) = policy {
        p.appraise(&verdict).map_err(|e| refuse(e.to_string()))?;
        eprintln!("admitted by policy {:?}", p.name);
    }
    Ok(0)
}

pub fn run_collateral(cmd: CollateralCmd) -> Result<i32> {
    match cmd {
        CollateralCmd::Fetch {
            quote,
            pccs,
            pccs_ca,
            out,
        } => {
            let q = decode_quote_file(&util::read(&quote)?);
            let parsed = teeserve_attest::Quote::parse(&q).map_err(|e| refuse(e.to_string()))?;
            let bundle = pccs_client(&pccs, pccs_ca.as_ref())?.fetch_for_quote(&parsed)?;
            std::fs::write(&out, bundle.to_json())
                .with_context(|| format!("cannot write {}", out.display()))?;
            eprintln!("wrote {}", out.display());
            Ok(0)
        }
    }
}
