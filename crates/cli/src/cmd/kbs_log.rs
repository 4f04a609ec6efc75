//! `teeserve kbs log`: the key broker's signed audit log, offline. A signing key for the
//! broker, and for anyone else: verifying the whole log, proving an entry or the log's growth,
//! and checking such a proof with the log's verifier key alone.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use teeserve_ratls::tlog::checkpoint::Checkpoint;
use teeserve_ratls::tlog::note::{SigningKey, VerifierKey};
use teeserve_ratls::tlog::proof::{ConsistencyProof, InclusionProof, CONSISTENCY_HEADER};

use crate::util::{self, refuse, say};

/// `kbs log` subcommands.
#[derive(Debug, Subcommand)]
pub enum LogCmd {
    /// Make the audit log's Ed25519 signing key (kbs.toml: `[log] signing_key = "log.key"`)
    /// and its verifier key, FILE.pub, which verifiers and requesters' policies (`log_key`) use.
    Keygen(KeygenArgs),
    /// Recompute the log's Merkle tree from its entries and check every checkpoint: exit 0
    /// when every entry is where the signed checkpoints say, 1 naming the first that is not.
    Verify(VerifyArgs),
    /// Print the inclusion proof of one entry against the latest checkpoint (C2SP tlog-proof,
    /// the entry inside), or with --from-size a consistency proof from an older tree size.
    Prove(ProveArgs),
    /// Check a proof from `prove` (or a server's attestation document) offline, with the
    /// log's verifier key.
    CheckProof(CheckProofArgs),
}

/// Flags of `kbs log keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the signing key (owner-only permissions, never overwritten); the
    /// verifier key goes to FILE.pub.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The log's name: the key's name and the first line of every checkpoint; a schema-less
    /// URL such as example.com/kbs is recommended (default: `teeserve-kbs/<random hex>`).
    #[arg(long, value_name = "NAME")]
    pub origin: Option<String>,
}

/// Flags of `kbs log verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The audit log (its checkpoints are read from LOG.tlog beside it).
    #[arg(long, value_name = "LOG")]
    pub log: PathBuf,
    /// The log's verifier key: a file (log.key.pub) or the key itself.
    #[arg(long, value_name = "KEY")]
    pub key: String,
}

/// Flags of `kbs log prove`.
#[derive(Debug, Args)]
pub struct ProveArgs {
    /// The audit log.
    #[arg(long, value_name = "LOG")]
    pub log: PathBuf,
    /// The entry to prove, from 0 (line I+1 of the log).
    #[arg(
        long,
        value_name = "I",
        required_unless_present = "from_size",
        conflicts_with = "from_size"
    )]
    pub index: Option<u64>,
    /// Prove instead that the tree of the first M entries is a prefix of the latest one.
    #[arg(long, value_name = "M")]
    pub from_size: Option<u64>,
}

/// Flags of `kbs log check-proof`.
#[derive(Debug, Args)]
pub struct CheckProofArgs {
    /// The proof (from `prove`, or a grant's proof from an attestation document).
    #[arg(long, value_name = "FILE")]
    pub proof: PathBuf,
    /// The log's verifier key: a file (log.key.pub) or the key itself.
    #[arg(long, value_name = "KEY")]
    pub key: String,
    /// The entry the inclusion proof is for, as one line (default: the entry the proof
    /// carries).
    #[arg(long, value_name = "FILE")]
    pub entry: Option<PathBuf>,
    /// For a consistency proof: a checkpoint seen before (signed note); it must be the tree
    /// the proof starts from, else the log was forked.
    #[arg(long, value_name = "FILE")]
    pub old_checkpoint: Option<PathBuf>,
}

/// Runs a `kbs log` subcommand.
pub fn run(c: LogCmd) -> Result<i32> {
    match c {
        LogCmd::Keygen(a) => keygen(a),
        LogCmd::Verify(a) => verify(a),
        LogCmd::Prove(a) => prove(a),
        LogCmd::CheckProof(a) => check_proof(a),
    }
}

/// A verifier key given as text or as a file holding it.
fn verifier_key(arg: &str) -> Result<VerifierKey> {
    if let Ok(k) = VerifierKey::parse(arg) {
        return Ok(k);
    }
    let text = util::read_text(Path::new(arg))
        .with_context(|| format!("--key {arg:?} is neither a verifier key nor a readable file"))?;
    VerifierKey::parse(&text).with_context(|| format!("--key {arg}"))
}

fn keygen(a: KeygenArgs) -> Result<i32> {
    let origin = match a.origin {
        Some(o) => o,
        None => {
            let r = teeserve_client::fresh_nonce()
                .map_err(|e| anyhow::anyhow!("the default origin: {e}"))?;
            format!("teeserve-kbs/{}", hex::encode(&r[..8]))
        }
    };
    let key = SigningKey::generate(&origin).context("--origin")?;
    let mut pub_path = a.out.as_os_str().to_owned();
    pub_path.push(".pub");
    let pub_path = PathBuf::from(pub_path);
    if pub_path.exists() {
        return Err(anyhow::anyhow!(
            "{} already exists; refusing to overwrite it",
            pub_path.display()
        ));
    }
    let mut text = key.to_text();
    text.push('\n');
    util::write_private_new(&a.out, text.as_bytes())?;
    let vkey = key.verifier().to_string();
    std::fs::write(&pub_path, format!("{vkey}\n"))
        .with_context(|| format!("cannot write {}", pub_path.display()))?;
    eprintln!(
        "log signing key written to {} (kbs.toml: [log] signing_key = \"{}\"), verifier key to {}",
        a.out.display(),
        a.out.display(),
        pub_path.display()
    );
    say(vkey)?;
    Ok(0)
}

fn verify(a: VerifyArgs) -> Result<i32> {
    let key = verifier_key(&a.key)?;
    match teeserve_kbs::verify_log(&a.log, &key) {
        Ok(s) => {
            say(format_args!(
                "verified {} entries, tree size {}, root {}",
                s.entries, s.size, s.root
            ))?;
            Ok(0)
        }
        Err(e @ teeserve_kbs::LogCheckError::Io { .. }) => Err(e.into()),
        Err(e) => Err(refuse(format!(
            "{} does not verify with {}: {e}",
            a.log.display(),
            key.label()
        ))),
    }
}

fn prove(a: ProveArgs) -> Result<i32> {
    let text = match (a.index, a.from_size) {
        (Some(i), _) => teeserve_kbs::prove_inclusion(&a.log, i),
        (None, Some(m)) => teeserve_kbs::prove_consistency(&a.log, m),
        (None, None) => unreachable!("clap requires --index or --from-size"),
    }
    .map_err(|e| match e {
        e @ teeserve_kbs::LogCheckError::Io { .. } => anyhow::Error::new(e),
        e => refuse(format!("{}: {e}", a.log.display())),
    })?;
    print!("{text}");
    Ok(0)
}

fn check_proof(a: CheckProofArgs) -> Result<i32> {
    let key = verifier_key(&a.key)?;
    let text = util::read_text(&a.proof)?;
    let not = |e: &dyn std::fmt::Display| refuse(format!("{}: {e}", a.proof.display()));
    if text.starts_with(CONSISTENCY_HEADER) {
        let p = ConsistencyProof::parse(&text).map_err(|e| not(&e))?;
        let c = p.verify(&key).map_err(|e| not(&e))?;
        if let Some(old) = &a.old_checkpoint {
            let o = Checkpoint::open(&util::read_text(old)?, &key)
                .map_err(|e| refuse(format!("--old-checkpoint {}: {e}", old.display())))?;
            if o.size != p.old_size || o.root != p.old_root {
                return Err(refuse(format!(
                    "the checkpoint seen before (tree size {}, root {}) is not the tree this proof starts from (tree size {}, root {}): the log was forked, or the proof is of another size",
                    o.size,
                    o.root_hex(),
                    p.old_size,
                    hex::encode(p.old_root)
                )));
            }
        }
        say(format_args!(
            "consistent: tree size {} (root {}) is a prefix of tree size {} (root {}) of log {}, signed by {}",
            p.old_size,
            hex::encode(p.old_root),
            c.size,
            c.root_hex(),
            c.origin,
            key.label()
        ))?;
        return Ok(0);
    }
    let p = InclusionProof::parse(&text).map_err(|e| not(&e))?;
    let entry = match &a.entry {
        Some(f) => {
            let e = util::read(f)?;
            Some(e.strip_suffix(b"\n").map(<[u8]>::to_vec).unwrap_or(e))
        }
        None => None,
    };
    let c = p.verify(&key, entry.as_deref()).map_err(|e| not(&e))?;
    say(format_args!(
        "included: entry {} is in tree size {} (root {}) of log {}, signed by {}",
        p.index,
        c.size,
        c.root_hex(),
        c.origin,
        key.label()
    ))?;
    if let Some(e) = entry.as_deref().or(p.extra.as_deref()) {
        say(String::from_utf8_lossy(e))?;
    }
    Ok(0)
}
