//! The subcommands: flags in one place, each with its help text.

pub mod attest;
mod demo;
mod kbs;
mod kbs_log;
mod predict;
mod receipt;
mod seal;
mod serve;
mod serve_compat;
mod sim;
mod tls;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Confidential model serving: model weights and requests are in plaintext only inside an
/// attested TEE (Intel SGX under Gramine, Intel TDX, or a simulated TEE for trying it out).
#[derive(Debug, Parser)]
#[command(name = "teeserve", version, about, long_about = None)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug). RUST_LOG overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// One subcommand per role.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole flow on loopback with a simulated TEE: owner, key broker, attested server,
    /// requester over gRPC and REST with TLS.
    Demo(demo::DemoArgs),
    /// Evidence: verify quotes, produce quotes, print this binary's measurement.
    #[command(subcommand)]
    Attest(attest::AttestCmd),
    /// Collateral: fetch a bundle from a PCCS for offline verification.
    #[command(subcommand)]
    Collateral(attest::CollateralCmd),
    /// Generate a random sealing key (owner's machine).
    Keygen(seal::KeygenArgs),
    /// Seal a file or a model directory so that it can sit on an untrusted disk.
    Seal(seal::SealArgs),
    /// Unseal a file or directory (for checking; the server unseals in memory).
    Unseal(seal::UnsealArgs),
    /// The key broker (owner's machine): release secrets to attested TEEs only.
    Kbs(kbs::KbsArgs),
    /// The inference server (TEE host): TF Serving's gRPC and REST APIs over TLS.
    Serve(Box<serve::ServeArgs>),
    /// The requester: send an input over gRPC or REST with TLS, optionally after checking the
    /// server's attestation.
    Predict(Box<predict::PredictArgs>),
    /// Receipts of answers: verify one offline (`predict --receipt` writes them).
    #[command(subcommand)]
    Receipt(receipt::ReceiptCmd),
    /// TLS material: a small CA with server (and client) certificates.
    #[command(subcommand)]
    Tls(TlsCmd),
    /// The simulated TEE: create a platform that runs the whole flow on any machine.
    #[command(subcommand)]
    Sim(sim::SimCmd),
}

/// Runs a subcommand and returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Attest(c) => attest::run(c),
        Command::Collateral(c) => attest::run_collateral(c),
        Command::Sim(c) => sim::run(c),
        Command::Kbs(a) => kbs::run(a),
        Command::Serve(a) => serve::run(*a),
        Command::Predict(a) => predict::run(*a),
        Command::Receipt(c) => receipt::run(c),
        Command::Tls(TlsCmd::Init(a)) => tls::init(a),
        Command::Keygen(a) => seal::keygen(a),
        Command::Seal(a) => seal::seal(a),
        Command::Unseal(a) => seal::unseal(a),
    }
}

/// `teeserve tls`.
#[derive(Debug, Subcommand)]
pub enum TlsCmd {
    /// Create a CA and certificates for the key broker and the server.
    Init(tls::TlsInitArgs),
}

#[cfg(test)]
mod tests {
    #[test]
    fn flags_are_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
