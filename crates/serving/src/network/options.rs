//! What a server is started with: [`ServeOptions`] and its parts, the errors of a start that
//! name the option at fault, the checks run before anything is loaded, and the configuration
//! files the options point to (model config, monitoring config).

use std::path::PathBuf;
use std::time::Duration;

use crate::api::service::CoreOptions;
use crate::engine::EngineChoice;
use crate::models::config::{self, ModelConfig};
use crate::models::VersionPolicy;

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
    /// [`TlsOptions::reload_client_ca`].
    ReloadClientCa,
    /// [`TlsOptions::insecure`].
    Insecure,
    /// The TEE platform given to [`Server::start`](crate::Server::start).
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
            ServeOption::ReloadClientCa => "tls.reload_client_ca",
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
    /// The gRPC services could not be set up (server reflection's descriptors).
    #[error("gRPC: {0}")]
    Grpc(String),
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
    /// Allow `HandleReloadConfigRequest` (which replaces the served models) to clients whose
    /// certificate chains to this CA (PEM); the ports then ask every client for a certificate,
    /// as for `monitoring_client_ca`.
    pub reload_client_ca: Option<PathBuf>,
    /// Allow `HandleReloadConfigRequest` to anyone who reaches the gRPC port.
    pub reload_from_anyone: bool,
    /// Allow plaintext.
    pub insecure: bool,
    /// Publish attestation even when the TLS key is a file the host gave (`--tls_key`,
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
    /// Secret holding the owner's list of admitted model files ([`AdmittedModels`](crate::AdmittedModels) JSON).
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
    /// The TensorFlow engine for SavedModels (`--tensorflow_lib`); None: ONNX models only.
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

pub(crate) fn option(option: ServeOption, detail: impl std::fmt::Display) -> ServeError {
    ServeError::Option {
        option,
        detail: detail.to_string(),
    }
}

pub(crate) fn read(p: &std::path::Path, o: ServeOption) -> Result<Vec<u8>, ServeError> {
    std::fs::read(p).map_err(|e| option(o, format!("{}: {e}", p.display())))
}

/// Reads a TF Serving text-format configuration file.
pub(crate) fn read_text(p: &std::path::Path, o: ServeOption) -> Result<String, ServeError> {
    String::from_utf8(read(p, o)?).map_err(|_| option(o, format!("{} is not UTF-8", p.display())))
}

/// Refuses option combinations that cannot start a server.
pub(crate) fn check_options(o: &ServeOptions) -> Result<(), ServeError> {
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
pub(crate) fn model_configs(o: &ServeOptions) -> Result<Vec<ModelConfig>, ServeError> {
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
/// Where REST serves the Prometheus metrics: as TF Serving, only when the monitoring config
/// enables them (`None`: not served, the default). They show per-model request counts,
/// latencies and batch sizes, which are not for whoever can reach the port.
pub(crate) fn metrics_path(o: &ServeOptions) -> Result<Option<String>, ServeError> {
    match &o.monitoring_config_file {
        Some(f) => {
            let text = read_text(f, ServeOption::MonitoringConfigFile)?;
            config::monitoring_config(&text)
                .map_err(|e| option(ServeOption::MonitoringConfigFile, e))
        }
        None => Ok(None),
    }
}
