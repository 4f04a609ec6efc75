//! `teeserve kbs` (the key broker) and `teeserve kbs get` (fetch a secret as a TEE would).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use teeserve_kbs::Kbs;
use teeserve_ratls::{EvidenceFormat, KeyType, RaTlsIdentity};

use super::attest::{open_platform, PlatformKind, PlatformPaths};
use crate::util::{self, refuse};

/// Flags of `kbs`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct KbsArgs {
    /// The broker's configuration (TOML; see docs/kbs.md). SIGHUP reloads it; a broken new
    /// configuration is rejected and the old one stays in force.
    #[arg(long, value_name = "FILE", required = false)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<KbsCmd>,
}

/// `kbs` subcommands.
#[derive(Debug, Subcommand)]
pub enum KbsCmd {
    /// Fetch a secret from a key broker as a TEE would: make an RA-TLS certificate with evidence
    /// from the platform, connect, and GET /v1/secrets/NAME.
    Get(GetArgs),
    /// The signed audit log: make its key, verify it, prove entries, check proofs (offline).
    #[command(subcommand)]
    Log(super::kbs_log::LogCmd),
}

/// Flags of `kbs get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The broker's native API, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub kbs: String,
    /// The CA certificate (PEM) that signs the broker's TLS certificate.
    #[arg(long, value_name = "PEM")]
    pub ca: PathBuf,
    /// The name to expect in the broker's certificate (default: the host of --kbs).
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Where evidence comes from.
    #[arg(long, value_enum, default_value = "auto")]
    pub platform: PlatformKind,
    #[command(flatten)]
    pub paths: PlatformPaths,
    /// The secret's name.
    #[arg(long, value_name = "NAME", required_unless_present = "verdict")]
    pub secret: Option<String>,
    /// Print how the broker appraised this TEE (GET /v1/verdict) instead of fetching a secret.
    #[arg(long)]
    pub verdict: bool,
    /// Write the secret here (owner-only permissions, never overwritten) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn run(a: KbsArgs) -> Result<i32> {
    match (a.command, a.config) {
        (Some(KbsCmd::Get(g)), _) => get(g),
        (Some(KbsCmd::Log(c)), _) => super::kbs_log::run(c),
        (None, Some(config)) => serve(config),
        (None, None) => anyhow::bail!(
            "give --config FILE to run the key broker, or `kbs get` to fetch a secret"
        ),
    }
}

fn serve(config: PathBuf) -> Result<i32> {
    runtime()?.block_on(async move {
        let kbs = Kbs::start(&config)
            .await
            .with_context(|| format!("--config {}", config.display()))?;
        let g = kbs
            .gramine_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "off".into());
        crate::util::say(format_args!(
            "listening native={} gramine={g}",
            kbs.native_addr()
        ))?;
        tracing::info!(
            "key broker: native API on {}, Gramine secret provisioning on {g}",
            kbs.native_addr()
        );
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = hup.recv() => match kbs.reload() {
                    Ok(()) => tracing::info!("configuration reloaded from {}", config.display()),
                    Err(e) => tracing::error!("reload rejected, the old configuration stays: {e}"),
                },
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        tracing::info!("key broker stopping");
        // The stop is the log's last entry (a kill -9 leaves none, and the log still verifies).
        kbs.stop().context("writing the stop to the audit log")?;
        Ok(0)
    })
}

fn get(a: GetArgs) -> Result<i32> {
    let ca = util::read(&a.ca)?;
    let platform = open_platform(a.platform, &a.paths)?;
    let identity = RaTlsIdentity::generate(platform.as_ref(), EvidenceFormat::Both, KeyType::P256)?;
    runtime()?.block_on(async move {
        let mut c = teeserve_tls::broker::KbsClient::connect(
            &a.kbs,
            &ca,
            a.server_name.as_deref(),
            &identity,
        )
        .await?;
        if a.verdict {
            let v = c.verdict().await.map_err(|e| refuse(e.to_string()))?;
            crate::util::say(serde_json::to_string_pretty(&v)?)?;
            return Ok(0);
        }
        let name = a.secret.clone().unwrap_or_default();
        let secret = c
            .get_secret(&name)
            .await
            .map_err(|e| refuse(e.to_string()))?;
        match &a.out {
            Some(p) => {
                util::write_private_new(p, &secret)?;
                eprintln!(
                    "secret {name:?} ({} bytes) written to {}",
                    secret.len(),
                    p.display()
                );
            }
            None => std::io::stdout().write_all(&secret)?,
        }
        Ok(0)
    })
}
