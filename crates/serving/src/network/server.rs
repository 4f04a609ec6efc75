//! Starting and running the server: secrets from the key broker, the model repository, TLS,
//! the attestation document, and the gRPC and REST listeners with graceful drain.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use teeserve_attest::platform::Platform;
use teeserve_ratls::{EvidenceFormat, KeyOrigin, KeyType, RaTlsIdentity};
use teeserve_seal::SealKey;
use tokio::net::TcpListener;
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::api::batching::Batcher;
use crate::api::metrics::Metrics;
use crate::api::service::{CoreOptions, ServingCore};
use crate::engine::EngineChoice;
use crate::models::config::{self, ModelConfig};
use crate::models::VersionPolicy;
use crate::models::{AdmittedModels, ModelRepository, ModelSource, State};
use crate::network::attestation::Attestor;
use crate::network::rest::RestContext;

/// An option of [`ServeOptions`], named in errors so that the caller (the binary) can say
/// which of its flags or settings is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeOption {
    /// [`ServeOptions::port`].
    Port,
    /// [`ServeOptions::rest_api_port`].
    RestApiPort,
    /// [`ServeOptions::model_base_path`] (with [`ServeOptions::model_name`]).
    ModelBasePath,
    /// [`ServeOptions::model_config_file`].
    ModelConfigFile,
    /// [`ServeOptions::enable_batching`].
    EnableBatching,
    /// [`ServeOptions::batching_parameters_file`].
    BatchingParametersFile,
    /// [`ServeOptions::monitoring_config_file`].
    MonitoringConfigFile,
    /// [`ServeOptions::model_key_file`].
    ModelKeyFile,
    /// [`ServeOptions::engine`].
    Engine,
    /// [`ServeOptions::tensorflow`] (the TensorFlow library).
    TensorflowLib,
    /// [`ServeOptions::attestation_collateral`].
    AttestationCollateral,
    /// [`ServeOptions::kbs`].
    Kbs,
    /// [`KbsOptions::ca`].
    KbsCa,
    /// [`KbsOptions::tls_key_secret`].
    KbsTlsKeySecret,
    /// [`TlsOptions::ssl_config_file`].
    SslConfigFile,
    /// [`TlsOptions::cert`].
    TlsCert,
    /// [`TlsOptions::key`].
    TlsKey,
    /// [`TlsOptions::client_ca`].
    TlsClientCa,
    /// [`TlsOptions::ra_tls`].
    TlsRa,
    /// [`TlsOptions::monitoring_client_ca`].
    MonitoringClientCa,
    /// [`TlsOptions::insecure`].
    Insecure,
    /// The TEE platform given to [`Server::start`].
    Platform,
}

impl ServeOption {
    /// The option's name in [`ServeOptions`] (`kbs.ca`).
    pub fn name(self) -> &'static str {
        match self {
            ServeOption::Port => "port",
            ServeOption::RestApiPort => "rest_api_port",
            ServeOption::ModelBasePath => "model_base_path",
            ServeOption::ModelConfigFile => "model_config_file",
            ServeOption::EnableBatching => "enable_batching",
            ServeOption::BatchingParametersFile => "batching_parameters_file",
            ServeOption::MonitoringConfigFile => "monitoring_config_file",
            ServeOption::ModelKeyFile => "model_key_file",
            ServeOption::Engine => "engine",
            ServeOption::TensorflowLib => "tensorflow.lib",
            ServeOption::AttestationCollateral => "attestation_collateral",
            ServeOption::Kbs => "kbs",
            ServeOption::KbsCa => "kbs.ca",
            ServeOption::KbsTlsKeySecret => "kbs.tls_key_secret",
            ServeOption::SslConfigFile => "tls.ssl_config_file",
            ServeOption::TlsCert => "tls.cert",
            ServeOption::TlsKey => "tls.key",
            ServeOption::TlsClientCa => "tls.client_ca",
            ServeOption::TlsRa => "tls.ra_tls",
            ServeOption::MonitoringClientCa => "tls.monitoring_client_ca",
            ServeOption::Insecure => "tls.insecure",
            ServeOption::Platform => "platform",
        }
    }
}

impl std::fmt::Display for ServeOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// An option's value is wrong, or the file it names cannot be read or parsed.
    #[error("{option}: {detail}")]
    Option {
        /// The option.
        option: ServeOption,
        /// What is wrong with it.
        detail: String,
    },
    /// An option that works only together with another.
    #[error("{option} needs {}", needs.iter().map(|n| n.name()).collect::<Vec<_>>().join(" or "))]
    Needs {
        /// The option given.
        option: ServeOption,
        /// What it needs (one of these).
        needs: Vec<ServeOption>,
    },
    /// Options that cannot be used together, or none of those one of which is required.
    #[error("{0}")]
    Options(OptionsError),
    /// The key broker could not be reached (for the whole retry time) or refused.
    #[error("key broker: {0}")]
    Broker(#[from] teeserve_tls::broker::BrokerError),
    /// A secret the key broker released is not usable.
    #[error("key broker secret {name:?}: {detail}")]
    Secret {
        /// The secret's name.
        name: String,
        /// What is wrong with it.
        detail: String,
    },
    /// This TEE's attestation (its RA-TLS identity or its quote) could not be made.
    #[error("attestation: {0}")]
    Attestation(String),
    /// The TLS certificate, key or client CA do not make a TLS configuration.
    #[error("TLS: {0}")]
    Tls(String),
    /// Loading the configured models failed.
    #[error("{0}")]
    Models(String),
    /// Binding a port failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Combinations of options that cannot start a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// Both ports are 0.
    #[error("port and rest_api_port are both 0: nothing would be served")]
    NoPorts,
    /// Both APIs on one port.
    #[error("rest_api_port must differ from port")]
    SamePort,
    /// No model given.
    #[error("give model_base_path (with model_name) or model_config_file")]
    NoModels,
    /// No TLS material and plaintext not allowed.
    #[error(
        "TLS is required: give a certificate (with its key from a file or the key broker), \
         an SSLConfig file or RA-TLS; plaintext only when insecure is set"
    )]
    NoTls,
}

/// Where TLS material comes from.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// TF Serving's SSLConfig file.
    pub ssl_config_file: Option<PathBuf>,
    /// Certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// Private key (PEM) on disk (development; production fetches it from the broker).
    pub key: Option<PathBuf>,
    /// CA for client certificates (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Serve an RA-TLS certificate made in the TEE.
    pub ra_tls: bool,
    /// Serve the metrics only to clients whose certificate chains to this CA (PEM). The ports
    /// then ask every client for a certificate, optionally unless `client_ca` requires one.
    pub monitoring_client_ca: Option<PathBuf>,
    /// Allow plaintext.
    pub insecure: bool,
    /// Publish attestation even when the TLS key is a file the host gave (`--tls-key`,
    /// `--ssl_config_file`); the document then says so (key origin `host`).
    pub attest_host_key: bool,
}

/// Key-broker options.
#[derive(Debug, Clone)]
pub struct KbsOptions {
    /// HOST:PORT of the native API.
    pub addr: String,
    /// CA of the broker's certificate.
    pub ca: PathBuf,
    /// Name expected in the broker's certificate.
    pub server_name: Option<String>,
    /// Secret holding the model key.
    pub model_key_secret: String,
    /// Secret holding the TLS private key (PEM), if the TLS key is provisioned too.
    pub tls_key_secret: Option<String>,
    /// Secret holding the owner's list of admitted model files ([`AdmittedModels`] JSON).
    pub admitted_models_secret: Option<String>,
    /// How long to keep retrying an unreachable broker.
    pub retry_for: Duration,
    /// How often the admitted-models list is fetched again while serving.
    pub admitted_refresh: Duration,
}

/// Everything `teeserve serve` takes.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// gRPC port (0 disables).
    pub port: u16,
    /// REST port (0 disables).
    pub rest_api_port: u16,
    /// gRPC bind address.
    pub grpc_bind: String,
    /// REST bind address.
    pub rest_bind: String,
    /// Single-model mode: name.
    pub model_name: String,
    /// Single-model mode: base path.
    pub model_base_path: Option<PathBuf>,
    /// Multi-model config file.
    pub model_config_file: Option<PathBuf>,
    /// Seconds between re-reads of the config file (0 = once).
    pub model_config_file_poll_wait_seconds: u64,
    /// Seconds between scans for versions (0 = once, negative = never).
    pub file_system_poll_wait_seconds: i64,
    /// Dynamic batching.
    pub enable_batching: bool,
    /// Batching parameters file.
    pub batching_parameters_file: Option<PathBuf>,
    /// Monitoring config file.
    pub monitoring_config_file: Option<PathBuf>,
    /// CORS on REST.
    pub cors: bool,
    /// TLS.
    pub tls: TlsOptions,
    /// A local model key file (development only: the key sits on the host's disk).
    pub model_key_file: Option<PathBuf>,
    /// The key broker.
    pub kbs: Option<KbsOptions>,
    /// Collateral to publish with the attestation document (JSON bundle).
    pub attestation_collateral: Option<PathBuf>,
    /// The inference engine.
    pub engine: EngineChoice,
    /// The TensorFlow engine for SavedModels (`--tensorflow-lib`); None: ONNX models only.
    pub tensorflow: Option<crate::engine::TensorFlowOptions>,
    /// Limits.
    pub core: CoreOptions,
    /// Largest request body / message.
    pub max_request_bytes: usize,
    /// Seconds to drain in-flight requests on shutdown.
    pub drain_secs: u64,
    /// Bounds on the connections of each port.
    pub connections: ConnectionLimits,
}

/// Bounds on the connections of each listening port (in the spirit of the broker's `[limits]`).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Connections open at once on a port; one more is closed as soon as it is accepted, so a
    /// full server refuses at once instead of leaving clients waiting.
    pub max_connections: usize,
    /// Time a client has to finish the TLS handshake and, on HTTP/1, to send each request's
    /// header (which includes the wait for the next request on a kept-alive connection).
    pub header_timeout: Duration,
    /// A connection with no request in progress for this long is asked to close (HTTP/2:
    /// GOAWAY; a health `Watch` does not count as a request in progress).
    pub idle_timeout: Duration,
    /// A connection asked to close (idle, at its maximum age) is cut this long after, whatever
    /// is still open on it (on shutdown, the drain time instead).
    pub grace: Duration,
    /// A connection is asked to close at this age, busy or not (None: no maximum).
    pub max_age: Option<Duration>,
    /// A connection is cut when a response on it has waited this long for the peer to read any
    /// of it (HTTP/2 flow control, or a full TCP window) (None: no limit).
    pub send_timeout: Option<Duration>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            // Both ports together stay under the common soft limit of 1024 descriptors.
            max_connections: 400,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            grace: Duration::from_secs(10),
            max_age: Some(Duration::from_secs(3600)),
            send_timeout: Some(Duration::from_secs(30)),
        }
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            port: 8500,
            rest_api_port: 8501,
            grpc_bind: "0.0.0.0".into(),
            rest_bind: "0.0.0.0".into(),
            model_name: "default".into(),
            model_base_path: None,
            model_config_file: None,
            model_config_file_poll_wait_seconds: 0,
            file_system_poll_wait_seconds: 1,
            enable_batching: false,
            batching_parameters_file: None,
            monitoring_config_file: None,
            cors: false,
            tls: TlsOptions::default(),
            model_key_file: None,
            kbs: None,
            attestation_collateral: None,
            engine: EngineChoice::default(),
            tensorflow: None,
            core: CoreOptions::default(),
            max_request_bytes: 64 << 20,
            drain_secs: 10,
            connections: ConnectionLimits::default(),
        }
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// The gRPC address.
    pub grpc_addr: Option<SocketAddr>,
    /// The REST address.
    pub rest_addr: Option<SocketAddr>,
    /// The core.
    pub core: Arc<ServingCore>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    drain: Duration,
}

fn option(option: ServeOption, detail: impl std::fmt::Display) -> ServeError {
    ServeError::Option {
        option,
        detail: detail.to_string(),
    }
}

fn read(p: &std::path::Path, o: ServeOption) -> Result<Vec<u8>, ServeError> {
    std::fs::read(p).map_err(|e| option(o, format!("{}: {e}", p.display())))
}

/// Reads a TF Serving text-format configuration file.
fn read_text(p: &std::path::Path, o: ServeOption) -> Result<String, ServeError> {
    String::from_utf8(read(p, o)?).map_err(|_| option(o, format!("{} is not UTF-8", p.display())))
}

/// Secrets obtained from the key broker.
struct Provisioned {
    model_key: Option<SealKey>,
    admitted: Option<AdmittedModels>,
    tls_key_pem: Option<Zeroizing<Vec<u8>>>,
}

/// An RA-TLS connection to the broker, made with fresh evidence, retried for `retry_for` while
/// the broker cannot be reached.
async fn connect_broker(
    k: &KbsOptions,
    platform: &dyn Platform,
    retry_for: Duration,
) -> Result<teeserve_tls::broker::KbsClient, ServeError> {
    let ca = read(&k.ca, ServeOption::KbsCa)?;
    let identity = RaTlsIdentity::generate(platform, EvidenceFormat::Both, KeyType::P256)
        .map_err(|e| ServeError::Attestation(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + retry_for;
    let mut wait = Duration::from_millis(200);
    let client = loop {
        match teeserve_tls::broker::KbsClient::connect(
            &k.addr,
            &ca,
            k.server_name.as_deref(),
            &identity,
        )
        .await
        {
            Ok(c) => break c,
            Err(e @ teeserve_tls::broker::BrokerError::Io { .. }) => {
                if tokio::time::Instant::now() + wait > deadline {
                    tracing::error!("key broker unreachable; gave up after {retry_for:?}");
                    return Err(e.into());
                }
                tracing::warn!("key broker unreachable ({e}); retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    };
    Ok(client)
}

/// Reads the owner's admitted-models list from the secret `name`.
async fn fetch_admitted(
    client: &mut teeserve_tls::broker::KbsClient,
    name: &str,
) -> Result<AdmittedModels, ServeError> {
    let list = client.get_secret(name).await.map_err(ServeError::Broker)?;
    AdmittedModels::from_json(&list).map_err(|e| ServeError::Secret {
        name: name.to_owned(),
        detail: format!("admitted models: {e}"),
    })
}

async fn provision(k: &KbsOptions, platform: &dyn Platform) -> Result<Provisioned, ServeError> {
    let mut client = connect_broker(k, platform, k.retry_for).await?;
    let key = client
        .get_secret(&k.model_key_secret)
        .await
        .map_err(ServeError::Broker)?;
    let model_key = Some(
        SealKey::from_file_bytes(&key).map_err(|e| ServeError::Secret {
            name: k.model_key_secret.clone(),
            detail: e.to_string(),
        })?,
    );
    let tls_key_pem = match &k.tls_key_secret {
        Some(s) => Some(client.get_secret(s).await.map_err(ServeError::Broker)?),
        None => None,
    };
    let admitted = match &k.admitted_models_secret {
        Some(s) => Some(fetch_admitted(&mut client, s).await?),
        None => None,
    };
    tracing::info!("received secrets from the key broker at {}", k.addr);
    Ok(Provisioned {
        model_key,
        admitted,
        tls_key_pem,
    })
}

fn model_configs(o: &ServeOptions) -> Result<Vec<ModelConfig>, ServeError> {
    match (&o.model_config_file, &o.model_base_path) {
        (Some(f), _) => {
            let text = read_text(f, ServeOption::ModelConfigFile)?;
            config::model_server_config(&text).map_err(|e| {
                option(
                    ServeOption::ModelConfigFile,
                    format!("{}: {e}", f.display()),
                )
            })
        }
        (None, Some(b)) => Ok(vec![ModelConfig {
            name: o.model_name.clone(),
            base_path: b.display().to_string(),
            policy: VersionPolicy::Latest(1),
            labels: Default::default(),
        }]),
        (None, None) => Err(ServeError::Options(OptionsError::NoModels)),
    }
}

/// A TLS configuration, the DER SubjectPublicKeyInfo of the served certificate, and where its
/// key came from.
type TlsSetup = (Arc<rustls::ServerConfig>, Vec<u8>, KeyOrigin);

fn tls_config(
    t: &TlsOptions,
    provisioned_key: Option<&[u8]>,
    platform: Option<&dyn Platform>,
) -> Result<Option<TlsSetup>, ServeError> {
    let (certs, key, client_ca, origin): (
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
        Option<Vec<u8>>,
        KeyOrigin,
    ) = if t.ra_tls {
        let p = platform.ok_or(ServeError::Needs {
            option: ServeOption::TlsRa,
            needs: vec![ServeOption::Platform],
        })?;
        let id = RaTlsIdentity::generate(p, EvidenceFormat::Both, KeyType::P256)
            .map_err(|e| ServeError::Attestation(e.to_string()))?;
        (
            vec![CertificateDer::from(id.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_pkcs8.to_vec())),
            t.client_ca
                .as_ref()
                .map(|p| read(p, ServeOption::TlsClientCa))
                .transpose()?,
            KeyOrigin::Tee,
        )
    } else if let Some(f) = &t.ssl_config_file {
        let ssl = |detail: String| option(ServeOption::SslConfigFile, detail);
        let text = read_text(f, ServeOption::SslConfigFile)?;
        let c = config::ssl_config(&text).map_err(|e| ssl(format!("{}: {e}", f.display())))?;
        let certs = teeserve_tls::certs_from_pem(c.server_cert.as_bytes())
            .map_err(|e| ssl(format!("server_cert: {e}")))?;
        let key = teeserve_tls::key_from_pem(c.server_key.as_bytes())
            .map_err(|e| ssl(format!("server_key: {e}")))?;
        let ca = if c.client_verify {
            if c.custom_ca.is_empty() {
                return Err(ssl("client_verify needs custom_ca".into()));
            }
            Some(c.custom_ca.into_bytes())
        } else {
            None
        };
        (certs, key, ca, KeyOrigin::Host)
    } else if let Some(cert) = &t.cert {
        let certs = teeserve_tls::certs_from_pem(&read(cert, ServeOption::TlsCert)?)
            .map_err(|e| option(ServeOption::TlsCert, e))?;
        let (key_pem, origin) = match (provisioned_key, &t.key) {
            (Some(k), _) => (Zeroizing::new(k.to_vec()), KeyOrigin::Broker),
            (None, Some(p)) => (
                Zeroizing::new(read(p, ServeOption::TlsKey)?),
                KeyOrigin::Host,
            ),
            (None, None) => {
                return Err(ServeError::Needs {
                    option: ServeOption::TlsCert,
                    needs: vec![ServeOption::TlsKey, ServeOption::KbsTlsKeySecret],
                })
            }
        };
        let key = teeserve_tls::key_from_pem(&key_pem)
            .map_err(|e| ServeError::Tls(format!("TLS key: {e}")))?;
        (
            certs,
            key,
            t.client_ca
                .as_ref()
                .map(|p| read(p, ServeOption::TlsClientCa))
                .transpose()?,
            origin,
        )
    } else if t.insecure {
        return Ok(None);
    } else {
        return Err(ServeError::Options(OptionsError::NoTls));
    };
    let spki = x509_parser::parse_x509_certificate(&certs[0])
        .map(|(_, c)| c.public_key().raw.to_vec())
        .map_err(|e| ServeError::Tls(format!("server certificate: {e}")))?;
    let tls = |e: rustls::Error| ServeError::Tls(e.to_string());
    let builder = rustls::ServerConfig::builder_with_provider(teeserve_tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(tls)?;
    let builder = match (client_ca, &t.monitoring_client_ca) {
        (Some(ca), _) => {
            builder.with_client_cert_verifier(client_verifier(&ca, ServeOption::TlsClientCa, true)?)
        }
        // Only the metrics need a certificate: one is asked for, and checked, but a client
        // without one is served the rest.
        (None, Some(monitoring)) => builder.with_client_cert_verifier(client_verifier(
            &read(monitoring, ServeOption::MonitoringClientCa)?,
            ServeOption::MonitoringClientCa,
            false,
        )?),
        (None, None) => builder.with_no_client_auth(),
    };
    let mut c = builder.with_single_cert(certs, key).map_err(|e| {
        // Name both files: the usual cause is a key that belongs to another certificate.
        let from = if t.ra_tls {
            "the RA-TLS certificate made at start and its key".to_owned()
        } else if let Some(f) = &t.ssl_config_file {
            format!(
                "server_cert and server_key of --ssl_config_file {}",
                f.display()
            )
        } else {
            let cert = t
                .cert
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            match (provisioned_key.is_some(), &t.key) {
                (true, _) => format!("--tls-cert {cert} and the TLS key the key broker released"),
                (false, Some(k)) => format!("--tls-cert {cert} and --tls-key {}", k.display()),
                (false, None) => format!("--tls-cert {cert}"),
            }
        };
        let why = match e {
            rustls::Error::InconsistentKeys(_) => {
                "the key is not the certificate's (another certificate's key?)".to_owned()
            }
            other => other.to_string(),
        };
        ServeError::Tls(format!("{from}: {why}"))
    })?;
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some((Arc::new(c), spki, origin)))
}

impl Server {
    /// Obtains secrets, loads models, and starts the listeners. `platform` is the TEE the server
    /// runs in (needed with a key broker, RA-TLS, or for /v1/attestation).
    pub async fn start(
        o: ServeOptions,
        platform: Option<Arc<dyn Platform>>,
    ) -> Result<Self, ServeError> {
        check_options(&o)?;
        let provisioned = secrets(&o, platform.as_deref()).await?;
        let engine = o
            .engine
            .start(o.core.workers)
            .map_err(|e| option(ServeOption::Engine, e))?;
        let tensorflow = match &o.tensorflow {
            Some(t) => Some(Arc::new(
                crate::engine::TensorFlowEngine::new(t.clone())
                    .map_err(|e| option(ServeOption::TensorflowLib, e))?,
            )),
            None => None,
        };
        let repo = Arc::new(
            ModelRepository::new(
                engine,
                ModelSource {
                    key: provisioned.model_key,
                    admitted: provisioned.admitted,
                },
                model_configs(&o)?,
            )
            .with_tensorflow(tensorflow)
            .with_warmup(Arc::new(crate::api::WarmupReplay)),
        );
        let r = repo.clone();
        tokio::task::spawn_blocking(move || r.sync())
            .await
            .map_err(|e| ServeError::Models(e.to_string()))?;
        every_model_loaded(&repo)?;
        let metrics = Arc::new(Metrics::default());
        let core = Arc::new(ServingCore::new(
            repo.clone(),
            metrics.clone(),
            o.core.clone(),
            batcher(&o, metrics)?,
        ));
        let tls = tls_config(
            &o.tls,
            provisioned.tls_key_pem.as_deref().map(|v| &v[..]),
            platform.as_deref(),
        )?;
        let attestation = attestor(&o, platform.as_ref(), tls.as_ref(), &repo).await?;
        let metrics_path = metrics_path(&o)?;
        let metrics_clients = metrics_clients(&o, metrics_path.as_deref(), tls.is_some())?;
        let ctx = Arc::new(RestContext {
            metrics_path,
            metrics_clients,
            cors: o.cors,
            attestation: attestation.clone(),
            max_body: o.max_request_bytes,
        });
        let tls_cfg = tls.map(|(c, _, _)| c);
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = Vec::new();

        let mut grpc_addr = None;
        if o.port != 0 {
            let l = bind(&o.grpc_bind, o.port).await?;
            grpc_addr = l.local_addr().ok();
            let router = grpc_router(&core, attestation, o.max_request_bytes);
            tasks.push(tokio::spawn(serve_listener(
                l,
                tls_cfg.clone(),
                router,
                rx.clone(),
                o.connections.clone(),
                Duration::from_secs(o.drain_secs),
            )));
        }
        let mut rest_addr = None;
        if o.rest_api_port != 0 {
            let l = bind(&o.rest_bind, o.rest_api_port).await?;
            rest_addr = l.local_addr().ok();
            let c = core.clone();
            let router = axum::Router::new().fallback(move |req: axum::extract::Request| {
                let c = c.clone();
                let ctx = ctx.clone();
                async move { crate::network::rest::handle(c, ctx, req).await }
            });
            tasks.push(tokio::spawn(serve_listener(
                l,
                tls_cfg.clone(),
                router,
                rx.clone(),
                o.connections.clone(),
                Duration::from_secs(o.drain_secs),
            )));
        }
        if let (Some(k), Some(p)) = (&o.kbs, &platform) {
            if k.admitted_models_secret.is_some() {
                tasks.push(tokio::spawn(refresh_admitted(
                    k.clone(),
                    p.clone(),
                    repo.clone(),
                    rx.clone(),
                )));
            }
        }
        if o.file_system_poll_wait_seconds > 0 || o.model_config_file_poll_wait_seconds > 0 {
            tasks.push(tokio::spawn(poll_models(
                o.clone(),
                repo.clone(),
                rx.clone(),
            )));
        }
        Ok(Self {
            grpc_addr,
            rest_addr,
            core,
            shutdown,
            tasks,
            drain: Duration::from_secs(o.drain_secs),
        })
    }

    /// Stops accepting (the ports close at once, so new connections are refused), lets the
    /// requests in flight finish (up to the drain time), and stops.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        tracing::info!(
            "draining: {} request(s) in flight; the ports are closed to new connections",
            self.core.in_flight()
        );
        let all = futures::future::join_all(self.tasks);
        match tokio::time::timeout(self.drain + Duration::from_secs(1), all).await {
            Ok(_) => tracing::info!("drained: every request in flight was answered"),
            Err(_) => tracing::warn!(
                "drain time ({:?}) over with {} request(s) still in flight",
                self.drain,
                self.core.in_flight()
            ),
        }
    }
}

/// As TF Serving does, the ports open only once every configured model has a version loaded: a
/// model with no version, or whose versions all failed to load, stops the start with the load
/// errors (a requester would otherwise find the server up and the model NOT_FOUND).
fn every_model_loaded(repo: &ModelRepository) -> Result<(), ServeError> {
    let mut failed = Vec::new();
    for name in repo.names() {
        let Some(m) = repo.model(&name) else {
            continue;
        };
        if m.versions.values().any(|v| v.state == State::Available) {
            continue;
        }
        if m.versions.is_empty() {
            let base = std::path::Path::new(&m.config.base_path);
            // A model file right under the base path is the usual first mistake: TF Serving's
            // layout puts each version in a numbered directory.
            let misplaced = [
                "model.onnx",
                "model.onnx.sealed",
                "saved_model.pb",
                "saved_model.pb.sealed",
            ]
            .into_iter()
            .find(|f| base.join(f).is_file());
            let hint = match misplaced {
                Some(f) => format!(
                    "; {f} lies directly under the base path: move the version into {}/1/ (the layout is base_path/<version>/)",
                    base.display()
                ),
                None => String::new(),
            };
            failed.push(format!(
                "model {name}: no version found under {}{hint}",
                m.config.base_path
            ));
            continue;
        }
        let errors: Vec<String> = m
            .versions
            .iter()
            .map(|(n, v)| {
                let e = v.error.as_deref().unwrap_or("not loaded");
                format!("version {n}: {e}")
            })
            .collect();
        failed.push(format!("model {name} did not load: {}", errors.join("; ")));
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(ServeError::Models(failed.join("\n")))
    }
}

/// Refuses option combinations that cannot start a server.
fn check_options(o: &ServeOptions) -> Result<(), ServeError> {
    if o.port == 0 && o.rest_api_port == 0 {
        return Err(ServeError::Options(OptionsError::NoPorts));
    }
    if o.port != 0 && o.port == o.rest_api_port {
        return Err(ServeError::Options(OptionsError::SamePort));
    }
    if o.batching_parameters_file.is_some() && !o.enable_batching {
        return Err(ServeError::Needs {
            option: ServeOption::BatchingParametersFile,
            needs: vec![ServeOption::EnableBatching],
        });
    }
    // What TLS needs is checked here too, before a model is loaded (loading a large model
    // only to learn that the command line lacks a certificate costs minutes).
    let t = &o.tls;
    if !(t.ra_tls || t.ssl_config_file.is_some() || t.cert.is_some() || t.insecure) {
        return Err(ServeError::Options(OptionsError::NoTls));
    }
    let key_secret = o.kbs.as_ref().is_some_and(|k| k.tls_key_secret.is_some());
    if !t.ra_tls
        && t.ssl_config_file.is_none()
        && t.cert.is_some()
        && t.key.is_none()
        && !key_secret
    {
        return Err(ServeError::Needs {
            option: ServeOption::TlsCert,
            needs: vec![ServeOption::TlsKey, ServeOption::KbsTlsKeySecret],
        });
    }
    Ok(())
}

/// The secrets: from the key broker (attesting with `platform`), or a local model key file.
async fn secrets(
    o: &ServeOptions,
    platform: Option<&dyn Platform>,
) -> Result<Provisioned, ServeError> {
    match (&o.kbs, platform) {
        (Some(k), Some(p)) => provision(k, p).await,
        (Some(_), None) => Err(ServeError::Needs {
            option: ServeOption::Kbs,
            needs: vec![ServeOption::Platform],
        }),
        (None, _) => Ok(Provisioned {
            model_key: match &o.model_key_file {
                Some(f) => {
                    tracing::warn!("using a model key from a local file: on a TEE host, fetch it from the key broker instead");
                    Some(SealKey::from_file(f).map_err(|e| option(ServeOption::ModelKeyFile, e))?)
                }
                None => None,
            },
            admitted: None,
            tls_key_pem: None,
        }),
    }
}

/// The dynamic batcher, when batching is on.
fn batcher(o: &ServeOptions, metrics: Arc<Metrics>) -> Result<Option<Arc<Batcher>>, ServeError> {
    if !o.enable_batching {
        return Ok(None);
    }
    let params = match &o.batching_parameters_file {
        Some(f) => {
            let text = read_text(f, ServeOption::BatchingParametersFile)?;
            config::batching_parameters(&text).map_err(|e| {
                option(
                    ServeOption::BatchingParametersFile,
                    format!("{}: {e}", f.display()),
                )
            })?
        }
        None => Default::default(),
    };
    Ok(Some(Arc::new(Batcher::new(params, metrics))))
}

/// The attestation document's maker, when there is a platform and a TLS key it may vouch for.
async fn attestor(
    o: &ServeOptions,
    platform: Option<&Arc<dyn Platform>>,
    tls: Option<&TlsSetup>,
    repo: &Arc<ModelRepository>,
) -> Result<Option<Arc<Attestor>>, ServeError> {
    let (Some(p), Some((_, spki, origin))) = (platform, tls) else {
        return Ok(None);
    };
    if *origin == KeyOrigin::Host && !o.tls.attest_host_key {
        tracing::warn!("/v1/attestation is off: the TLS key is a file the host gave, so the host could answer in this server's place (--attest-host-tls-key publishes it anyway, marked as a host key)");
        return Ok(None);
    }
    let collateral = match &o.attestation_collateral {
        Some(c) => Some(
            serde_json::from_slice(&read(c, ServeOption::AttestationCollateral)?)
                .map_err(|e| option(ServeOption::AttestationCollateral, e))?,
        ),
        None => None,
    };
    let a = Arc::new(
        Attestor::new(p.clone(), spki.clone(), *origin, collateral, repo.clone())
            .with_batching(o.enable_batching),
    );
    // Quote once now, so a platform that cannot quote stops the start.
    a.current()
        .await
        .map_err(|e| ServeError::Attestation(e.to_string()))?;
    Ok(Some(a))
}

/// A verifier of client certificates chaining to the CA `pem` (`required`: a client without
/// one fails the handshake).
fn client_verifier(
    pem: &[u8],
    o: ServeOption,
    required: bool,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, ServeError> {
    let roots = teeserve_tls::roots_from_pem(pem).map_err(|e| option(o, e))?;
    let b = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        teeserve_tls::provider(),
    );
    let b = if required {
        b
    } else {
        b.allow_unauthenticated()
    };
    b.build().map_err(|e| option(o, format!("client CA: {e}")))
}

/// Who may read the metrics, when not everyone who reaches the REST port: clients whose
/// certificate chains to the monitoring client CA.
fn metrics_clients(
    o: &ServeOptions,
    metrics: Option<&str>,
    tls: bool,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, ServeError> {
    let Some(ca) = &o.tls.monitoring_client_ca else {
        return Ok(None);
    };
    if metrics.is_none() {
        return Err(ServeError::Needs {
            option: ServeOption::MonitoringClientCa,
            needs: vec![ServeOption::MonitoringConfigFile],
        });
    }
    if !tls {
        return Err(option(
            ServeOption::MonitoringClientCa,
            "client certificates need TLS, and the server is plaintext",
        ));
    }
    let pem = read(ca, ServeOption::MonitoringClientCa)?;
    client_verifier(&pem, ServeOption::MonitoringClientCa, true).map(Some)
}

/// Where REST serves the Prometheus metrics: as TF Serving, only when the monitoring config
/// enables them (`None`: not served, the default). They show per-model request counts,
/// latencies and batch sizes, which are not for whoever can reach the port.
fn metrics_path(o: &ServeOptions) -> Result<Option<String>, ServeError> {
    match &o.monitoring_config_file {
        Some(f) => {
            let text = read_text(f, ServeOption::MonitoringConfigFile)?;
            config::monitoring_config(&text)
                .map_err(|e| option(ServeOption::MonitoringConfigFile, e))
        }
        None => Ok(None),
    }
}

/// The largest health-check message, bytes.
const HEALTH_MAX_MESSAGE: usize = 4096;

/// The gRPC services (prediction, model, health) behind request admission, and
/// `/v1/attestation` beside them on the same port.
fn grpc_router(
    core: &Arc<ServingCore>,
    attestation: Option<Arc<Attestor>>,
    max_message: usize,
) -> axum::Router {
    use teeserve_wire::tensorflow::serving::model_service_server::ModelServiceServer;
    use teeserve_wire::tensorflow::serving::prediction_service_server::PredictionServiceServer;
    let g = crate::network::grpc::Grpc(core.clone());
    let routes = tonic::service::Routes::new(
        PredictionServiceServer::new(g.clone())
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(usize::MAX),
    )
    .add_service(ModelServiceServer::new(g).max_decoding_message_size(max_message))
    // Health checks are not admitted (an overloaded server still answers them), so their
    // message is bounded instead: a HealthCheckRequest is one service name.
    .add_service(
        teeserve_wire::health::health_server::HealthServer::new(crate::network::grpc::Health(
            core.clone(),
        ))
        .max_decoding_message_size(HEALTH_MAX_MESSAGE),
    );
    // Admission (in-flight place, memory budget) before tonic reads a message.
    let routes = routes
        .prepare()
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(
            crate::network::admission::GrpcAdmission {
                core: core.clone(),
                max_message,
            },
            crate::network::admission::grpc_layer,
        ));
    routes.route(
        "/v1/attestation",
        axum::routing::get(
            move |uri: axum::http::Uri,
                  peer: Option<axum::Extension<crate::network::connection::Peer>>| {
                let att = attestation.clone();
                async move {
                    let peer = peer.map(|p| p.0 .0.ip());
                    let a = match att {
                        Some(a) => a.respond(uri.query(), peer).await,
                        None => crate::network::attestation::no_attestation(),
                    };
                    let mut r = axum::response::IntoResponse::into_response((
                        axum::http::StatusCode::from_u16(a.status)
                            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        a.body,
                    ));
                    if let Some(secs) = a.retry_after {
                        r.headers_mut()
                            .insert(axum::http::header::RETRY_AFTER, secs.into());
                    }
                    r
                }
            },
        ),
    )
}

/// Fetches the owner's admitted-models list from the broker again every
/// [`KbsOptions::admitted_refresh`] until shutdown, each time over a new RA-TLS connection with
/// fresh evidence, and applies it: versions it no longer admits stop serving at once, and the
/// attestation document is quoted again. A broker that cannot be reached leaves the list as it
/// was (and is tried again next period); a broker that refuses the list to this server (the
/// owner's policy no longer admits it) leaves it serving nothing.
async fn refresh_admitted(
    k: KbsOptions,
    platform: Arc<dyn Platform>,
    repo: Arc<ModelRepository>,
    mut rx: watch::Receiver<bool>,
) {
    let Some(secret) = k.admitted_models_secret.clone() else {
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(k.admitted_refresh) => {}
            _ = rx.changed() => return,
        }
        let fetched = async {
            let mut client = connect_broker(&k, platform.as_ref(), Duration::ZERO).await?;
            fetch_admitted(&mut client, &secret).await
        }
        .await;
        let list = match fetched {
            Ok(list) => list,
            Err(ServeError::Broker(e @ teeserve_tls::broker::BrokerError::Refused { .. })) => {
                tracing::error!(
                    "the key broker no longer releases the admitted-models list to this server ({e}); serving nothing"
                );
                AdmittedModels::default()
            }
            Err(e) => {
                tracing::warn!(
                    "admitted-models list not refreshed ({e}); the list in force stays, trying again in {:?}",
                    k.admitted_refresh
                );
                continue;
            }
        };
        let r = repo.clone();
        let _ = tokio::task::spawn_blocking(move || {
            // An unchanged list (the usual answer) costs no scan: the file-system poll does that.
            let Some(retired) = r.set_admitted(Some(list)) else {
                return;
            };
            if !retired.is_empty() {
                tracing::warn!(
                    "the owner's admitted-models list retired {} version(s): {:?}",
                    retired.len(),
                    retired
                );
            }
            r.sync();
        })
        .await;
    }
}

/// Scans for new and retired versions, and re-reads the model config file, at their poll
/// intervals until shutdown.
async fn poll_models(o: ServeOptions, repo: Arc<ModelRepository>, mut rx: watch::Receiver<bool>) {
    let fs_wait = o.file_system_poll_wait_seconds;
    let cfg_wait = o.model_config_file_poll_wait_seconds;
    let tick = Duration::from_secs(if fs_wait > 0 {
        fs_wait as u64
    } else {
        cfg_wait.max(1)
    });
    let mut since_cfg = Duration::ZERO;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = rx.changed() => return,
        }
        since_cfg += tick;
        if cfg_wait > 0 && since_cfg >= Duration::from_secs(cfg_wait) {
            since_cfg = Duration::ZERO;
            match model_configs(&o) {
                Ok(c) => repo.set_configs(c),
                Err(e) => tracing::error!("model config not reloaded: {e}"),
            }
        }
        let r = repo.clone();
        let _ = tokio::task::spawn_blocking(move || r.sync()).await;
    }
}

async fn bind(host: &str, port: u16) -> Result<TcpListener, ServeError> {
    let addr = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    TcpListener::bind(&addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// A loopback TCP port that is free now, for servers a caller starts in another process or a
/// moment later (the demo, tests, benchmarks). It is taken below Linux's default ephemeral
/// range (32768-60999), so that no connecting socket is given it in between; the process id
/// and a counter spread the choices, so callers in one process never get the same port twice
/// in a row of 12,000. Falls back to a port the system picks when none there is free.
pub fn free_loopback_port() -> std::io::Result<u16> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(7919);
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // 7 and 12,000 share no factor: 12,000 calls visit every port of the range once.
        let port = 20_000 + (base.wrapping_add(n.wrapping_mul(7)) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// Largest HTTP/2 frame the listeners accept.
const H2_MAX_FRAME: u32 = 256 << 10;

/// Whether an accept error concerns only the connection being accepted (the next accept may
/// succeed at once), as opposed to the process being out of descriptors or memory.
fn only_that_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionAborted | K::ConnectionReset | K::ConnectionRefused | K::Interrupted
    )
}

async fn serve_listener(
    l: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
    limits: ConnectionLimits,
    drain: Duration,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let max = limits
        .max_connections
        .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
    let open = Arc::new(tokio::sync::Semaphore::new(max));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    // HTTP/2 flow-control windows large enough for an image batch in one round trip
    // (the protocol's default of 64 KiB makes a 600 KB tensor wait for several
    // WINDOW_UPDATEs); the request size limit still applies.
    builder
        .http2()
        .initial_stream_window_size(teeserve_wire::H2_STREAM_WINDOW)
        .initial_connection_window_size(2 * teeserve_wire::H2_STREAM_WINDOW)
        .max_frame_size(H2_MAX_FRAME);
    let life = crate::network::connection::Lifetime {
        idle: limits.idle_timeout,
        max_age: limits.max_age,
        grace: limits.grace,
        drain,
        send_timeout: limits.send_timeout,
    };
    let mut backoff = Duration::from_millis(10);
    loop {
        let (tcp, peer) = tokio::select! {
            r = l.accept() => match r {
                Ok(x) => {
                    backoff = Duration::from_millis(10);
                    x
                }
                Err(e) if only_that_connection(&e) => continue,
                Err(e) => {
                    // Out of descriptors (EMFILE) or memory: accepting again at once would
                    // fail again, so wait, longer each time, for connections to close.
                    tracing::warn!("accept: {e}; accepting again in {backoff:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::debug!(
                "{peer}: closed at once, {max} connections are open (--max_connections)"
            );
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (activity, idle) = watch::channel(0usize);
        let svc = Tracked {
            inner: hyper_util::service::TowerToHyperService::new(router.clone()),
            activity: Arc::new(activity),
            connection: crate::api::scope::next_connection(),
        };
        let state = crate::network::connection::ConnectionState::new(peer);
        let svc = crate::network::connection::Watched::new(svc, state.clone());
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match acceptor {
                Some(a) => {
                    let tls = match tokio::time::timeout(limits.header_timeout, a.accept(tcp)).await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!("{peer}: TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(
                                "{peer}: TLS handshake not done within {:?}",
                                limits.header_timeout
                            );
                            return;
                        }
                    };
                    if let Some(chain) = tls.get_ref().1.peer_certificates() {
                        state.presented(chain);
                    }
                    let conn = builder.serve_connection(TokioIo::new(tls), svc);
                    crate::network::connection::run(conn, idle, state, life, stop).await;
                }
                None => {
                    let conn = builder.serve_connection(TokioIo::new(tcp), svc);
                    crate::network::connection::run(conn, idle, state, life, stop).await;
                }
            }
        });
    }
    // Close the port now rather than when the drain is over: a connection that arrives
    // meanwhile is refused at once (a balancer in front tries another replica) instead of
    // waiting, unaccepted, in the listen queue until the process exits and resets it.
    drop(l);
    // Drain: every connection task holds a permit until it ends.
    let _ = tokio::time::timeout(
        drain,
        open.acquire_many(u32::try_from(max).unwrap_or(u32::MAX)),
    )
    .await;
}

/// A connection's service that counts the requests in progress on it (for the idle timeout)
/// and runs each in its [`crate::api::scope::RequestScope`].
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<watch::Sender<usize>>,
    connection: u64,
}

/// Counts a request as in progress until dropped.
struct InProgress(Arc<watch::Sender<usize>>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl<S, B> hyper::service::Service<hyper::Request<B>> for Tracked<S>
where
    S: hyper::service::Service<hyper::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, req: hyper::Request<B>) -> Self::Future {
        self.activity.send_modify(|n| *n += 1);
        let guard = InProgress(self.activity.clone());
        let scope = crate::api::scope::RequestScope::of(self.connection, req.headers());
        let fut = self.inner.call(req);
        Box::pin(crate::api::scope::scoped(scope, async move {
            let r = fut.await;
            drop(guard);
            r
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_loopback_ports_are_bindable_distinct_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_loopback_port().unwrap()).collect();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        for p in ports {
            assert!((20_000..32_000).contains(&p), "{p}");
            std::net::TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }
}
