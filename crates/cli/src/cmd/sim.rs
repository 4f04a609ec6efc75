//! `teeserve sim ...`: the simulated TEE.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Subcommand, ValueEnum};
use teeserve_attest::sim::{self, Revoke, SimOptions};
use teeserve_attest::TcbStatus;

/// `teeserve sim`.
#[derive(Debug, Subcommand)]
pub enum SimCmd {
    /// Create a simulated TEE platform: an Intel-shaped PKI, signed collateral
    /// (DIR/collateral.json), its root (DIR/root.pem) and the keys of its quoting enclave.
    ///
    /// It gives NO protection (the directory holds the private keys); policies refuse its
    /// evidence unless they set allow_simulated = true.
    Init {
        /// The directory to create (owner-only permissions; must not exist or be empty).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Days the collateral stays valid.
        #[arg(long, default_value_t = 30, value_name = "DAYS")]
        valid_days: i64,
        /// Make collateral whose validity ended a day ago (to test expiry handling).
        #[arg(long)]
        stale: bool,
        /// Revoke the PCK certificate or the PCK CA in the CRLs (to test revocation handling).
        #[arg(long, value_enum, default_value = "none")]
        revoke: RevokeArg,
        /// TCB status of the platform's level in the TCB Info.
        #[arg(long, default_value = "UpToDate", value_name = "STATUS", value_parser = parse_status)]
        tcb_status: TcbStatus,
        /// ISVPRODID of the simulated enclave.
        #[arg(long, default_value_t = 1)]
        isv_prod_id: u16,
        /// ISVSVN of the simulated enclave.
        #[arg(long, default_value_t = 1)]
        isv_svn: u16,
        /// Produce quotes of a debug enclave (ATTRIBUTES.DEBUG set).
        #[arg(long)]
        debug: bool,
    },
}

/// What `--revoke` revokes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RevokeArg {
    /// Nothing.
    None,
    /// The PCK leaf certificate.
    Pck,
    /// The PCK Platform CA certificate.
    PckCa,
}

fn parse_status(s: &str) -> Result<TcbStatus, String> {
    TcbStatus::from_name(s).ok_or_else(|| {
        format!(
            "unknown TCB status {s:?}; one of {}",
            TcbStatus::ALL.map(|t| t.name()).join(", ")
        )
    })
}

pub fn run(cmd: SimCmd) -> Result<i32> {
    match cmd {
        SimCmd::Init {
            dir,
            valid_days,
            stale,
            revoke,
            tcb_status,
            isv_prod_id,
            isv_svn,
            debug,
        } => {
            anyhow::ensure!(valid_days > 0, "--valid-days must be positive");
            let o = SimOptions {
                valid_days,
                stale,
                revoke: match revoke {
                    RevokeArg::None => Revoke::None,
                    RevokeArg::Pck => Revoke::Pck,
                    RevokeArg::PckCa => Revoke::PckCa,
                },
                tcb_status,
                isv_prod_id,
                isv_svn,
                debug,
                ..SimOptions::default()
            };
            sim::init(&dir, &o)?;
            eprintln!(
                "simulated TEE platform created in {} (root: {}, collateral: {}); it gives NO protection",
                dir.display(),
                dir.join("root.pem").display(),
                dir.join("collateral.json").display()
            );
            Ok(0)
        }
    }
}
