//! The key broker's configuration (TOML; every key is documented in docs/kbs.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use teeserve_attest::collateral::pccs::PccsClient;
use teeserve_attest::{Collateral, CollateralSource, Policy, TrustAnchor, Verifier};
use teeserve_ratls::tlog::note::{SigningKey, VerifierKey};
use teeserve_ratls::Appraiser;
use zeroize::Zeroizing;

use crate::KbsError;

/// The configuration file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KbsConfig {
    /// Address of the native API (HTTPS).
    pub(crate) listen: String,
    /// Address of the Gramine secret-provisioning port (optional).
    #[serde(default)]
    pub(crate) gramine_listen: Option<String>,
    /// The broker's ordinary TLS certificate chain (PEM).
    pub(crate) tls_cert: PathBuf,
    /// Its private key (PEM).
    pub(crate) tls_key: PathBuf,
    /// The audit log (JSON lines); absent = decisions only go to the log output.
    #[serde(default)]
    pub(crate) audit_log: Option<PathBuf>,
    /// Where collateral comes from.
    #[serde(default)]
    pub(crate) collateral: CollateralConfig,
    /// Named secrets.
    #[serde(default)]
    pub(crate) secrets: BTreeMap<String, SecretConfig>,
    /// Appraisal policies, each naming the secrets it may receive.
    #[serde(default)]
    pub(crate) policies: Vec<Policy>,
    /// Resource limits.
    #[serde(default)]
    pub(crate) limits: Limits,
    /// The signed audit log (absent: the log is not signed).
    #[serde(default)]
    pub(crate) log: Option<LogConfig>,
}

/// `[log]`: sign the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogConfig {
    /// The Ed25519 signing key (`teeserve kbs log keygen` writes it).
    pub(crate) signing_key: PathBuf,
    /// The log's origin, the first line of its checkpoints; it must be the key's name (the
    /// default).
    #[serde(default)]
    pub(crate) origin: Option<String>,
}

/// `[collateral]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CollateralConfig {
    /// A collateral bundle (JSON, dcap-qvl layout).
    #[serde(default)]
    pub(crate) bundle: Option<PathBuf>,
    /// A PCCS or Intel PCS v4 base URL.
    #[serde(default)]
    pub(crate) pccs_url: Option<String>,
    /// Read `pccs_url` from an sgx_default_qcnl.conf.
    #[serde(default)]
    pub(crate) qcnl_conf: Option<PathBuf>,
    /// The CA of the PCCS's TLS certificate.
    #[serde(default)]
    pub(crate) pccs_ca: Option<PathBuf>,
    /// The root to trust instead of the Intel SGX Root CA (e.g. a simulated platform's root.pem).
    #[serde(default)]
    pub(crate) root: Option<PathBuf>,
}

/// `[secrets.NAME]`: exactly one of `file` or `env`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretConfig {
    /// Read the secret from this file (raw bytes).
    #[serde(default)]
    pub(crate) file: Option<PathBuf>,
    /// Read the secret from this environment variable (its bytes).
    #[serde(default)]
    pub(crate) env: Option<String>,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Limits {
    /// Concurrent connections.
    #[serde(default = "d_conns")]
    pub(crate) max_connections: usize,
    /// Seconds a client may take to finish the TLS handshake.
    #[serde(default = "d_timeout")]
    pub(crate) handshake_timeout_secs: u64,
    /// Seconds a client may take to send a request.
    #[serde(default = "d_timeout")]
    pub(crate) request_timeout_secs: u64,
    /// Refused requests answered per second per peer address (and the burst allowed after a
    /// quiet second); beyond it a peer is answered 429 and its refusals are only counted.
    #[serde(default = "d_refusals")]
    pub(crate) refusals_per_sec: u32,
    /// Seconds between summary lines of repeated refusals in the audit log.
    #[serde(default = "d_summary")]
    pub(crate) audit_summary_secs: u64,
}

fn d_conns() -> usize {
    1024
}

fn d_timeout() -> u64 {
    10
}

fn d_refusals() -> u32 {
    10
}

fn d_summary() -> u64 {
    10
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: d_conns(),
            handshake_timeout_secs: d_timeout(),
            request_timeout_secs: d_timeout(),
            refusals_per_sec: d_refusals(),
            audit_summary_secs: d_summary(),
        }
    }
}

/// A secret's bytes; zeroized on drop and never printed.
#[derive(Clone)]
pub(crate) struct Secret(pub Arc<Zeroizing<Vec<u8>>>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// A loaded, checked configuration.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The configuration as written (paths resolved).
    pub(crate) config: KbsConfig,
    /// Secrets by name.
    pub(crate) secrets: BTreeMap<String, Secret>,
    /// The appraiser (trust anchor + collateral).
    pub(crate) appraiser: Arc<Appraiser>,
    /// The TLS server configuration of the native API.
    pub(crate) tls: Arc<rustls::ServerConfig>,
    /// SHA-256 (hex) of the configuration file as read: the policy grants are made under.
    pub(crate) policy_sha256: String,
    /// The audit log's signing key (its file's text, checked), when `[log]` is set.
    pub(crate) log_key: Option<LogKey>,
}

/// The audit log's signing key as loaded.
pub(crate) struct LogKey {
    text: Zeroizing<String>,
    /// Its verifier key.
    pub(crate) verifier: VerifierKey,
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogKey({})", self.verifier.label())
    }
}

impl LogKey {
    /// The signing key.
    pub(crate) fn signing_key(&self) -> Result<SigningKey, String> {
        SigningKey::parse(&self.text).map_err(|e| e.to_string())
    }
}

/// Reads `[log].signing_key` and checks `[log].origin` against the key's name.
fn load_log_key(c: &LogConfig, has_audit_log: bool) -> Result<LogKey, String> {
    if !has_audit_log {
        return Err("[log] signs the audit log: set audit_log too".into());
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(&c.signing_key)
            .map_err(|e| format!("log.signing_key {}: {e}", c.signing_key.display()))?,
    );
    let key = SigningKey::parse(&text)
        .map_err(|e| format!("log.signing_key {}: {e}", c.signing_key.display()))?;
    if let Some(o) = &c.origin {
        if o != key.name() {
            return Err(format!(
                "log.origin {o:?} is not the name of the key in {} ({:?}); a checkpoint's origin is its key's name (c2sp.org/tlog-checkpoint)",
                c.signing_key.display(),
                key.name()
            ));
        }
    }
    Ok(LogKey {
        verifier: key.verifier(),
        text,
    })
}

fn resolve(base: &Path, p: &mut PathBuf) {
    if p.is_relative() {
        *p = base.join(&*p);
    }
}

impl Loaded {
    /// Reads, resolves and checks a configuration file.
    pub(crate) fn load(path: &Path) -> Result<Self, KbsError> {
        let err = |reason: String| KbsError::Config {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut config: KbsConfig = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new(".")).to_owned();
        resolve_paths(&mut config, &base);
        check_limits(&config.limits).map_err(err)?;
        let secrets = load_secrets(&mut config.secrets, &base).map_err(err)?;
        check_policies(&mut config.policies, &secrets).map_err(err)?;
        let verifier = Verifier::new(trust_anchor(&config.collateral).map_err(err)?);
        let source = collateral_source(&config.collateral, &verifier).map_err(err)?;
        let tls = native_api_tls(&config, path)?;
        let log_key = config
            .log
            .as_ref()
            .map(|l| load_log_key(l, config.audit_log.is_some()))
            .transpose()
            .map_err(err)?;
        Ok(Self {
            policy_sha256: teeserve_ratls::tlog::sha256_hex(text.as_bytes()),
            config,
            secrets,
            appraiser: Arc::new(Appraiser::new(verifier, source)),
            tls: Arc::new(tls),
            log_key,
        })
    }
}

/// Resolves the configuration's paths against the directory of the configuration file.
fn resolve_paths(config: &mut KbsConfig, base: &Path) {
    resolve(base, &mut config.tls_cert);
    resolve(base, &mut config.tls_key);
    if let Some(p) = config.audit_log.as_mut() {
        resolve(base, p);
    }
    if let Some(l) = config.log.as_mut() {
        resolve(base, &mut l.signing_key);
    }
    for p in [
        &mut config.collateral.bundle,
        &mut config.collateral.root,
        &mut config.collateral.pccs_ca,
        &mut config.collateral.qcnl_conf,
    ]
    .into_iter()
    .flatten()
    {
        resolve(base, p);
    }
}

fn check_limits(l: &Limits) -> Result<(), String> {
    for (key, v) in [
        ("refusals_per_sec", u64::from(l.refusals_per_sec)),
        ("audit_summary_secs", l.audit_summary_secs),
    ] {
        if v == 0 {
            return Err(format!("limits.{key} must be at least 1"));
        }
    }
    Ok(())
}

/// Reads every secret (resolving its file against `base`).
fn load_secrets(
    configured: &mut BTreeMap<String, SecretConfig>,
    base: &Path,
) -> Result<BTreeMap<String, Secret>, String> {
    let mut secrets = BTreeMap::new();
    for (name, s) in configured.iter_mut() {
        let bytes = match (&mut s.file, &s.env) {
            (Some(f), None) => {
                resolve(base, f);
                Zeroizing::new(
                    std::fs::read(&*f)
                        .map_err(|e| format!("secrets.{name}.file {}: {e}", f.display()))?,
                )
            }
            (None, Some(v)) => Zeroizing::new(
                std::env::var(v)
                    .map_err(|_| {
                        format!("secrets.{name}.env: environment variable {v} is not set")
                    })?
                    .into_bytes(),
            ),
            _ => return Err(format!("secrets.{name}: give exactly one of file or env")),
        };
        secrets.insert(name.clone(), Secret(Arc::new(bytes)));
    }
    Ok(secrets)
}

/// Normalises the policies and checks that their names are unique and their secrets defined.
fn check_policies(
    policies: &mut [Policy],
    secrets: &BTreeMap<String, Secret>,
) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    for (i, p) in policies.iter_mut().enumerate() {
        p.normalise().map_err(|e| format!("policies[{i}]: {e}"))?;
        if !names.insert(p.name.clone()) {
            return Err(format!(
                "policies[{i}]: the name {:?} is used twice",
                p.name
            ));
        }
        for s in p.secrets.iter().chain(p.gramine_secret.iter()) {
            if !secrets.contains_key(s) {
                return Err(format!(
                    "policies[{i}] ({}): secret {s:?} is not defined in [secrets]",
                    p.name
                ));
            }
        }
    }
    Ok(())
}

/// The root quotes must chain to: `collateral.root`, or Intel's.
fn trust_anchor(c: &CollateralConfig) -> Result<TrustAnchor, String> {
    match &c.root {
        Some(r) => TrustAnchor::from_pem(
            &std::fs::read(r).map_err(|e| format!("collateral.root {}: {e}", r.display()))?,
        )
        .map_err(|e| format!("collateral.root: {e}")),
        None => Ok(TrustAnchor::intel()),
    }
}

/// Where collateral comes from: exactly one of a bundle, a PCCS URL or a QCNL configuration.
fn collateral_source(
    c: &CollateralConfig,
    verifier: &Verifier,
) -> Result<CollateralSource, String> {
    let read_ca = |p: &Option<PathBuf>| -> Result<Option<Vec<u8>>, String> {
        p.as_ref()
            .map(|p| {
                std::fs::read(p).map_err(|e| format!("collateral.pccs_ca {}: {e}", p.display()))
            })
            .transpose()
    };
    match (&c.bundle, &c.pccs_url, &c.qcnl_conf) {
        (Some(b), None, None) => {
            let bytes =
                std::fs::read(b).map_err(|e| format!("collateral.bundle {}: {e}", b.display()))?;
            let coll =
                Collateral::from_json(&bytes).map_err(|e| format!("collateral.bundle: {e}"))?;
            CollateralSource::bundle(verifier, &coll)
                .map_err(|e| format!("collateral.bundle does not verify: {e}"))
        }
        (None, Some(url), None) => Ok(CollateralSource::pccs(
            PccsClient::new(url, read_ca(&c.pccs_ca)?.as_deref())
                .map_err(|e| format!("collateral.pccs_url: {e}"))?,
        )),
        (None, None, Some(q)) => {
            let text = std::fs::read_to_string(q)
                .map_err(|e| format!("collateral.qcnl_conf {}: {e}", q.display()))?;
            Ok(CollateralSource::pccs(
                PccsClient::from_qcnl_conf(&text, read_ca(&c.pccs_ca)?.as_deref())
                    .map_err(|e| format!("collateral.qcnl_conf: {e}"))?,
            ))
        }
        _ => Err("[collateral]: give exactly one of bundle, pccs_url or qcnl_conf".into()),
    }
}

/// The native API's TLS configuration: the broker's certificate, and any client certificate
/// accepted at the handshake (the broker appraises it afterwards, to answer with the rule).
/// A PEM file that cannot be read is named in the error; other failures name `config_path`.
fn native_api_tls(
    config: &KbsConfig,
    config_path: &Path,
) -> Result<rustls::ServerConfig, KbsError> {
    let certs = teeserve_tls::load_certs(&config.tls_cert)?;
    let key = teeserve_tls::load_key(&config.tls_key)?;
    teeserve_tls::server_config(
        certs,
        key,
        Arc::new(teeserve_ratls::AttestedClientVerifier::deferred()),
    )
    .map_err(|e| KbsError::Config {
        path: config_path.display().to_string(),
        reason: match e {
            teeserve_tls::TlsError::CertKey(e) => format!("tls_cert/tls_key: {e}"),
            e => e.to_string(),
        },
    })
}
