//! The key broker's configuration (TOML; every key is documented in docs/kbs.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use teeserve_attest::collateral::pccs::PccsClient;
use teeserve_attest::{Collateral, CollateralSource, Policy, TrustAnchor, Verifier};
use teeserve_ratls::verifier::Appraiser;
use zeroize::Zeroizing;

use crate::KbsError;

/// The configuration file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KbsConfig {
    /// Address of the native API (HTTPS).
    pub listen: String,
    /// Address of the Gramine secret-provisioning port (optional).
    #[serde(default)]
    pub gramine_listen: Option<String>,
    /// The broker's ordinary TLS certificate chain (PEM).
    pub tls_cert: PathBuf,
    /// Its private key (PEM).
    pub tls_key: PathBuf,
    /// The audit log (JSON lines); absent = decisions only go to the log output.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// Where collateral comes from.
    #[serde(default)]
    pub collateral: CollateralConfig,
    /// Named secrets.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretConfig>,
    /// Appraisal policies, each naming the secrets it may receive.
    #[serde(default)]
    pub policies: Vec<Policy>,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
}

/// `[collateral]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollateralConfig {
    /// A collateral bundle (JSON, dcap-qvl layout).
    #[serde(default)]
    pub bundle: Option<PathBuf>,
    /// A PCCS or Intel PCS v4 base URL.
    #[serde(default)]
    pub pccs_url: Option<String>,
    /// Read `pccs_url` from an sgx_default_qcnl.conf.
    #[serde(default)]
    pub qcnl_conf: Option<PathBuf>,
    /// The CA of the PCCS's TLS certificate.
    #[serde(default)]
    pub pccs_ca: Option<PathBuf>,
    /// The root to trust instead of the Intel SGX Root CA (e.g. a simulated platform's root.pem).
    #[serde(default)]
    pub root: Option<PathBuf>,
}

/// `[secrets.NAME]`: exactly one of `file` or `env`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretConfig {
    /// Read the secret from this file (raw bytes).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Read the secret from this environment variable (its bytes).
    #[serde(default)]
    pub env: Option<String>,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Concurrent connections.
    #[serde(default = "d_conns")]
    pub max_connections: usize,
    /// Seconds a client may take to finish the TLS handshake.
    #[serde(default = "d_timeout")]
    pub handshake_timeout_secs: u64,
    /// Seconds a client may take to send a request.
    #[serde(default = "d_timeout")]
    pub request_timeout_secs: u64,
    /// Refused requests answered per second per peer address (and the burst allowed after a
    /// quiet second); beyond it a peer is answered 429 and its refusals are only counted.
    #[serde(default = "d_refusals")]
    pub refusals_per_sec: u32,
    /// Seconds between summary lines of repeated refusals in the audit log.
    #[serde(default = "d_summary")]
    pub audit_summary_secs: u64,
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
pub struct Secret(pub Arc<Zeroizing<Vec<u8>>>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// A loaded, checked configuration.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration as written (paths resolved).
    pub config: KbsConfig,
    /// Secrets by name.
    pub secrets: BTreeMap<String, Secret>,
    /// The appraiser (trust anchor + collateral).
    pub appraiser: Arc<Appraiser>,
    /// The TLS server configuration of the native API.
    pub tls: Arc<rustls::ServerConfig>,
}

fn resolve(base: &Path, p: &mut PathBuf) {
    if p.is_relative() {
        *p = base.join(&*p);
    }
}

impl Loaded {
    /// Reads, resolves and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, KbsError> {
        let err = |reason: String| KbsError::Config {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut config: KbsConfig = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new(".")).to_owned();
        resolve(&base, &mut config.tls_cert);
        resolve(&base, &mut config.tls_key);
        if let Some(p) = config.audit_log.as_mut() {
            resolve(&base, p);
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
            resolve(&base, p);
        }
        let l = &config.limits;
        for (key, v) in [
            ("refusals_per_sec", u64::from(l.refusals_per_sec)),
            ("audit_summary_secs", l.audit_summary_secs),
        ] {
            if v == 0 {
                return Err(err(format!("limits.{key} must be at least 1")));
            }
        }
        let mut secrets = BTreeMap::new();
        for (name, s) in config.secrets.iter_mut() {
            let bytes =
                match (&mut s.file, &s.env) {
                    (Some(f), None) => {
                        resolve(&base, f);
                        Zeroizing::new(std::fs::read(&*f).map_err(|e| {
                            err(format!("secrets.{name}.file {}: {e}", f.display()))
                        })?)
                    }
                    (None, Some(v)) => Zeroizing::new(
                        std::env::var(v)
                            .map_err(|_| {
                                err(format!(
                                    "secrets.{name}.env: environment variable {v} is not set"
                                ))
                            })?
                            .into_bytes(),
                    ),
                    _ => {
                        return Err(err(format!(
                            "secrets.{name}: give exactly one of file or env"
                        )))
                    }
                };
            secrets.insert(name.clone(), Secret(Arc::new(bytes)));
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in config.policies.iter_mut().enumerate() {
            p.normalise()
                .map_err(|e| err(format!("policies[{i}]: {e}")))?;
            if !names.insert(p.name.clone()) {
                return Err(err(format!(
                    "policies[{i}]: the name {:?} is used twice",
                    p.name
                )));
            }
            for s in p.secrets.iter().chain(p.gramine_secret.iter()) {
                if !secrets.contains_key(s) {
                    return Err(err(format!(
                        "policies[{i}] ({}): secret {s:?} is not defined in [secrets]",
                        p.name
                    )));
                }
            }
        }
        let anchor = match &config.collateral.root {
            Some(r) => TrustAnchor::from_pem(
                &std::fs::read(r)
                    .map_err(|e| err(format!("collateral.root {}: {e}", r.display())))?,
            )
            .map_err(|e| err(format!("collateral.root: {e}")))?,
            None => TrustAnchor::intel(),
        };
        let verifier = Verifier::new(anchor);
        let c = &config.collateral;
        let read_ca = |p: &Option<PathBuf>| -> Result<Option<Vec<u8>>, KbsError> {
            p.as_ref()
                .map(|p| {
                    std::fs::read(p)
                        .map_err(|e| err(format!("collateral.pccs_ca {}: {e}", p.display())))
                })
                .transpose()
        };
        let source = match (&c.bundle, &c.pccs_url, &c.qcnl_conf) {
            (Some(b), None, None) => {
                let bytes = std::fs::read(b)
                    .map_err(|e| err(format!("collateral.bundle {}: {e}", b.display())))?;
                let coll = Collateral::from_json(&bytes)
                    .map_err(|e| err(format!("collateral.bundle: {e}")))?;
                CollateralSource::bundle(&verifier, &coll)
                    .map_err(|e| err(format!("collateral.bundle does not verify: {e}")))?
            }
            (None, Some(url), None) => CollateralSource::pccs(
                PccsClient::new(url, read_ca(&c.pccs_ca)?.as_deref())
                    .map_err(|e| err(format!("collateral.pccs_url: {e}")))?,
            ),
            (None, None, Some(q)) => {
                let text = std::fs::read_to_string(q)
                    .map_err(|e| err(format!("collateral.qcnl_conf {}: {e}", q.display())))?;
                CollateralSource::pccs(
                    PccsClient::from_qcnl_conf(&text, read_ca(&c.pccs_ca)?.as_deref())
                        .map_err(|e| err(format!("collateral.qcnl_conf: {e}")))?,
                )
            }
            _ => {
                return Err(err(
                    "[collateral]: give exactly one of bundle, pccs_url or qcnl_conf".into(),
                ))
            }
        };
        let certs = crate::tls::load_certs(&config.tls_cert)?;
        let key = crate::tls::load_key(&config.tls_key)?;
        let tls = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| err(e.to_string()))?
            .with_client_cert_verifier(Arc::new(
                teeserve_ratls::verifier::AttestedClientVerifier::deferred(),
            ))
            .with_single_cert(certs, key)
            .map_err(|e| err(format!("tls_cert/tls_key: {e}")))?;
        Ok(Self {
            config,
            secrets,
            appraiser: Arc::new(Appraiser::new(verifier, source)),
            tls: Arc::new(tls),
        })
    }
}
