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
    /// Produce a quote over the given report data and write it to a file.
    Quote(QuoteArgs),
    /// Print the simulated MRENCLAVE of this executable (or of --exe): the SHA-256 of the file.
    ///
    /// The simulated platform reports this value; put it in a policy's `mrenclave` to admit
    /// exactly this build.
    Measure {
        /// Measure this file instead of the running executable.
        #[arg(long, value_name = "FILE")]
        exe: Option<PathBuf>,
    },
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

/// Reads the policy file given with flag `flag` (`--policy`, `--attest`); errors name both.
pub fn load_policy(path: &std::path::Path, flag: &str) -> Result<Policy> {
    Policy::from_toml(&util::read_text(path).with_context(|| format!("{flag} {}", path.display()))?)
        .with_context(|| format!("{flag} {}", path.display()))
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
        AttestCmd::Quote(a) => quote_cmd(a),
        AttestCmd::Measure { exe } => measure_cmd(exe),
    }
}

fn verify(a: VerifyArgs) -> Result<i32> {
    let quote = decode_quote_file(&util::read(&a.quote)?);
    let at = match &a.at {
        Some(s) => util::parse_time(s)?,
        None => util::now(),
    };
    let policy = a
        .policy
        .as_deref()
        .map(|p| load_policy(p, "--policy"))
        .transpose()?;
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
    crate::util::say(serde_json::to_string_pretty(&verdict)?)?;
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

/// Flags of `attest quote`.
#[derive(Debug, Args)]
pub struct QuoteArgs {
    /// Where evidence comes from: auto (gramine or tdx, never simulated), gramine, tdx, simulated.
    #[arg(long, value_enum, default_value = "auto")]
    pub platform: PlatformKind,
    #[command(flatten)]
    pub paths: PlatformPaths,
    /// The 64 bytes of report data, hex (shorter values are zero-padded).
    #[arg(long, value_name = "HEX")]
    pub report_data: String,
    /// Where to write the quote (raw bytes).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Which evidence producer to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlatformKind {
    /// Gramine if /dev/attestation/quote exists, TDX if configfs-tsm has a tdx_guest provider.
    Auto,
    /// Gramine's /dev/attestation (SGX under gramine-sgx).
    Gramine,
    /// Linux configfs-tsm in a TDX guest.
    Tdx,
    /// The simulated TEE made by `teeserve sim init` (no protection; for trying and testing).
    Simulated,
}

/// Paths of the evidence producers.
#[derive(Debug, Clone, Args)]
pub struct PlatformPaths {
    /// Directory of the simulated platform (`teeserve sim init --dir`).
    #[arg(
        long = "sim_dir",
        alias = "sim-dir",
        value_name = "DIR",
        env = "TEESERVE_SIM_DIR"
    )]
    pub sim_dir: Option<PathBuf>,
    /// Gramine's attestation directory.
    #[arg(
        long = "gramine_dir",
        alias = "gramine-dir",
        value_name = "DIR",
        default_value = "/dev/attestation"
    )]
    pub gramine_dir: PathBuf,
    /// configfs-tsm's report directory.
    #[arg(
        long = "tsm_dir",
        alias = "tsm-dir",
        value_name = "DIR",
        default_value = "/sys/kernel/config/tsm/report"
    )]
    pub tsm_dir: PathBuf,
}

/// Opens the evidence producer the flags name.
pub fn open_platform(
    kind: PlatformKind,
    paths: &PlatformPaths,
) -> Result<Box<dyn teeserve_attest::platform::Platform>> {
    use teeserve_attest::platform::{
        detect, gramine::GraminePlatform, tdx::TdxPlatform, DetectPaths, SimulatedPlatform,
    };
    Ok(match kind {
        PlatformKind::Auto => detect(&DetectPaths {
            gramine: paths.gramine_dir.clone(),
            tsm: paths.tsm_dir.clone(),
        })?,
        PlatformKind::Gramine => Box::new(GraminePlatform::new(&paths.gramine_dir)),
        PlatformKind::Tdx => Box::new(TdxPlatform::new(&paths.tsm_dir)),
        PlatformKind::Simulated => {
            let dir = paths.sim_dir.as_ref().ok_or_else(|| {
                anyhow::anyhow!(
                    "--platform simulated needs --sim-dir DIR (made by `teeserve sim init`)"
                )
            })?;
            Box::new(SimulatedPlatform::open(dir)?)
        }
    })
}

/// Parses report data given as hex (up to 64 bytes, zero-padded).
pub fn parse_report_data(s: &str) -> Result<[u8; 64]> {
    let b = hex::decode(s.trim().trim_start_matches("0x"))
        .map_err(|_| anyhow::anyhow!("--report-data {s:?} is not hex"))?;
    anyhow::ensure!(
        b.len() <= 64,
        "--report-data is {} bytes; at most 64",
        b.len()
    );
    let mut rd = [0u8; 64];
    rd[..b.len()].copy_from_slice(&b);
    Ok(rd)
}

pub fn quote_cmd(a: QuoteArgs) -> Result<i32> {
    let rd = parse_report_data(&a.report_data)?;
    let platform = open_platform(a.platform, &a.paths)?;
    let quote = platform.quote(&rd)?;
    std::fs::write(&a.out, &quote).with_context(|| format!("cannot write {}", a.out.display()))?;
    eprintln!(
        "wrote a {}-byte quote from the {} platform to {}",
        quote.len(),
        platform.name(),
        a.out.display()
    );
    Ok(0)
}

pub fn measure_cmd(exe: Option<PathBuf>) -> Result<i32> {
    let m = match &exe {
        Some(p) => teeserve_attest::sim::measure_file(p)
            .with_context(|| format!("cannot read {}", p.display()))?,
        None => {
            teeserve_attest::sim::measure_self().context("cannot read the running executable")?
        }
    };
    crate::util::say(hex::encode(m))?;
    Ok(0)
}
