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
use teeserve_seal::key::SealKey;
use tokio::net::TcpListener;
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::attestation::Attestor;
use crate::batching::Batcher;
use crate::engine::EngineChoice;
use crate::metrics::Metrics;
use crate::repository::{AdmittedModels, ModelRepository, ModelSource};
use crate::rest::RestContext;
use crate::service::{CoreOptions, ServingCore};
use crate::textproto::{self, ModelConfig, VersionPolicy};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A flag or file is wrong.
    #[error("{0}")]
    Config(String),
    /// The key broker could not be reached or refused.
    #[error("key broker: {0}")]
    Kbs(String),
    /// Binding a port failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
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
    /// A connection with no request in progress for this long is closed (HTTP/2: GOAWAY).
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            // Both ports together stay under the common soft limit of 1024 descriptors.
            max_connections: 400,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
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

fn cfg(e: impl std::fmt::Display) -> ServeError {
    ServeError::Config(e.to_string())
}

fn read(p: &PathBuf, flag: &str) -> Result<Vec<u8>, ServeError> {
    std::fs::read(p).map_err(|e| cfg(format!("{flag} {}: {e}", p.display())))
}

/// Secrets obtained from the key broker.
struct Provisioned {
    model_key: Option<SealKey>,
    admitted: Option<AdmittedModels>,
    tls_key_pem: Option<Zeroizing<Vec<u8>>>,
}

async fn provision(k: &KbsOptions, platform: &dyn Platform) -> Result<Provisioned, ServeError> {
    let ca = read(&k.ca, "--kbs-ca")?;
    let identity = RaTlsIdentity::generate(platform, EvidenceFormat::Both, KeyType::P256)
        .map_err(|e| ServeError::Kbs(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + k.retry_for;
    let mut wait = Duration::from_millis(200);
    let mut client = loop {
        match teeserve_kbs::client::KbsClient::connect(
            &k.addr,
            &ca,
            k.server_name.as_deref(),
            &identity,
        )
        .await
        {
            Ok(c) => break c,
            Err(e @ teeserve_kbs::KbsError::Io { .. }) => {
                if tokio::time::Instant::now() + wait > deadline {
                    return Err(ServeError::Kbs(format!(
                        "{e}; gave up after {:?}",
                        k.retry_for
                    )));
                }
                tracing::warn!("key broker unreachable ({e}); retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(ServeError::Kbs(e.to_string())),
        }
    };
    let key = client
        .get_secret(&k.model_key_secret)
        .await
        .map_err(|e| ServeError::Kbs(e.to_string()))?;
    let model_key = Some(
        SealKey::from_file_bytes(&key)
            .map_err(|e| ServeError::Kbs(format!("secret {:?}: {e}", k.model_key_secret)))?,
    );
    let tls_key_pem = match &k.tls_key_secret {
        Some(s) => Some(
            client
                .get_secret(s)
                .await
                .map_err(|e| ServeError::Kbs(e.to_string()))?,
        ),
        None => None,
    };
    let admitted = match &k.admitted_models_secret {
        Some(s) => {
            let list = client
                .get_secret(s)
                .await
                .map_err(|e| ServeError::Kbs(e.to_string()))?;
            Some(
                AdmittedModels::from_json(&list)
                    .map_err(|e| ServeError::Kbs(format!("secret {s:?} (admitted models): {e}")))?,
            )
        }
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
            let text = String::from_utf8(read(f, "--model_config_file")?)
                .map_err(|_| cfg("--model_config_file is not UTF-8"))?;
            textproto::model_server_config(&text)
                .map_err(|e| cfg(format!("--model_config_file {}: {e}", f.display())))
        }
        (None, Some(b)) => Ok(vec![ModelConfig {
            name: o.model_name.clone(),
            base_path: b.display().to_string(),
            policy: VersionPolicy::Latest(1),
            labels: Default::default(),
        }]),
        (None, None) => Err(cfg(
            "give --model_base_path (with --model_name) or --model_config_file",
        )),
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
        let p = platform.ok_or_else(|| cfg("--tls-ra needs a TEE platform (--platform)"))?;
        let id = RaTlsIdentity::generate(p, EvidenceFormat::Both, KeyType::P256)
            .map_err(|e| cfg(format!("--tls-ra: {e}")))?;
        (
            vec![CertificateDer::from(id.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_pkcs8.to_vec())),
            t.client_ca
                .as_ref()
                .map(|p| read(p, "--tls-client-ca"))
                .transpose()?,
            KeyOrigin::Tee,
        )
    } else if let Some(f) = &t.ssl_config_file {
        let text = String::from_utf8(read(f, "--ssl_config_file")?)
            .map_err(|_| cfg("--ssl_config_file is not UTF-8"))?;
        let c = textproto::ssl_config(&text)
            .map_err(|e| cfg(format!("--ssl_config_file {}: {e}", f.display())))?;
        let certs = teeserve_kbs::tls::certs_from_pem(c.server_cert.as_bytes())
            .map_err(|e| cfg(format!("--ssl_config_file server_cert: {e}")))?;
        let key = teeserve_kbs::tls::key_from_pem(c.server_key.as_bytes())
            .map_err(|e| cfg(format!("--ssl_config_file server_key: {e}")))?;
        let ca = if c.client_verify {
            if c.custom_ca.is_empty() {
                return Err(cfg("--ssl_config_file: client_verify needs custom_ca"));
            }
            Some(c.custom_ca.into_bytes())
        } else {
            None
        };
        (certs, key, ca, KeyOrigin::Host)
    } else if let Some(cert) = &t.cert {
        let certs = teeserve_kbs::tls::certs_from_pem(&read(cert, "--tls-cert")?)
            .map_err(|e| cfg(format!("--tls-cert: {e}")))?;
        let (key_pem, origin) =
            match (provisioned_key, &t.key) {
                (Some(k), _) => (Zeroizing::new(k.to_vec()), KeyOrigin::Broker),
                (None, Some(p)) => (Zeroizing::new(read(p, "--tls-key")?), KeyOrigin::Host),
                (None, None) => return Err(cfg(
                    "--tls-cert needs --tls-key, or the key from the broker (--kbs-tls-key-secret)",
                )),
            };
        let key =
            teeserve_kbs::tls::key_from_pem(&key_pem).map_err(|e| cfg(format!("TLS key: {e}")))?;
        (
            certs,
            key,
            t.client_ca
                .as_ref()
                .map(|p| read(p, "--tls-client-ca"))
                .transpose()?,
            origin,
        )
    } else if t.insecure {
        return Ok(None);
    } else {
        return Err(cfg(
            "TLS is required: give --tls-cert (with --tls-key or a key from the broker), --ssl_config_file or --tls-ra; plaintext only with --insecure",
        ));
    };
    let spki = x509_parser::parse_x509_certificate(&certs[0])
        .map(|(_, c)| c.public_key().raw.to_vec())
        .map_err(|e| cfg(format!("server certificate: {e}")))?;
    let builder = rustls::ServerConfig::builder_with_provider(teeserve_kbs::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(cfg)?;
    let builder = match client_ca {
        Some(ca) => {
            let roots = teeserve_kbs::tls::roots_from_pem(&ca)
                .map_err(|e| cfg(format!("client CA: {e}")))?;
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                teeserve_kbs::tls::provider(),
            )
            .build()
            .map_err(cfg)?;
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let mut c = builder
        .with_single_cert(certs, key)
        .map_err(|e| cfg(format!("TLS certificate and key: {e}")))?;
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some((Arc::new(c), spki, origin)))
}

impl Server {
    /// Obtains secrets, loads models, and starts the listeners. `platform` is the TEE the server
    /// runs in (needed with a key broker, `--tls-ra`, or for /v1/attestation).
    pub async fn start(
        o: ServeOptions,
        platform: Option<Arc<dyn Platform>>,
    ) -> Result<Self, ServeError> {
        if o.port == 0 && o.rest_api_port == 0 {
            return Err(cfg(
                "--port and --rest_api_port are both 0: nothing would be served",
            ));
        }
        if o.port != 0 && o.port == o.rest_api_port {
            return Err(cfg("--rest_api_port must differ from --port"));
        }
        if o.batching_parameters_file.is_some() && !o.enable_batching {
            return Err(cfg("--batching_parameters_file needs --enable_batching"));
        }
        let provisioned = match (&o.kbs, &platform) {
            (Some(k), Some(p)) => provision(k, p.as_ref()).await?,
            (Some(_), None) => return Err(cfg("--kbs needs a TEE platform (--platform)")),
            (None, _) => Provisioned {
                model_key: match &o.model_key_file {
                    Some(f) => {
                        tracing::warn!("using a model key from a local file: on a TEE host, fetch it from the key broker instead");
                        Some(SealKey::from_file(f).map_err(|e| cfg(format!("--model-key: {e}")))?)
                    }
                    None => None,
                },
                admitted: None,
                tls_key_pem: None,
            },
        };
        let engine = o
            .engine
            .start(o.core.workers)
            .map_err(|e| cfg(format!("--engine: {e}")))?;
        let repo = Arc::new(
            ModelRepository::new(
                engine,
                ModelSource {
                    key: provisioned.model_key,
                    admitted: provisioned.admitted,
                },
                model_configs(&o)?,
            )
            .with_tensorflow(match &o.tensorflow {
                Some(t) => Some(Arc::new(
                    crate::engine::TensorFlowEngine::new(t.clone())
                        .map_err(|e| cfg(format!("--tensorflow-lib: {e}")))?,
                )),
                None => None,
            }),
        );
        let r = repo.clone();
        tokio::task::spawn_blocking(move || r.sync())
            .await
            .map_err(cfg)?;
        let metrics = Arc::new(Metrics::default());
        let batcher = if o.enable_batching {
            let params = match &o.batching_parameters_file {
                Some(f) => textproto::batching_parameters(&String::from_utf8_lossy(&read(
                    f,
                    "--batching_parameters_file",
                )?))
                .map_err(|e| cfg(format!("--batching_parameters_file {}: {e}", f.display())))?,
                None => Default::default(),
            };
            Some(Arc::new(Batcher::new(params, metrics.clone())))
        } else {
            None
        };
        let core = Arc::new(ServingCore::new(
            repo.clone(),
            metrics,
            o.core.clone(),
            batcher,
        ));
        let tls = tls_config(
            &o.tls,
            provisioned.tls_key_pem.as_deref().map(|v| &v[..]),
            platform.as_deref(),
        )?;
        let attestation = match (&platform, &tls) {
            (Some(_), Some((_, _, KeyOrigin::Host))) if !o.tls.attest_host_key => {
                tracing::warn!("/v1/attestation is off: the TLS key is a file the host gave, so the host could answer in this server's place (--attest-host-tls-key publishes it anyway, marked as a host key)");
                None
            }
            (Some(p), Some((_, spki, origin))) => {
                let collateral = match &o.attestation_collateral {
                    Some(c) => Some(
                        serde_json::from_slice(&read(c, "--attestation-collateral")?)
                            .map_err(|e| cfg(format!("--attestation-collateral: {e}")))?,
                    ),
                    None => None,
                };
                let a = Arc::new(Attestor::new(
                    p.clone(),
                    spki.clone(),
                    *origin,
                    collateral,
                    repo.clone(),
                ));
                // Quote once now, so a platform that cannot quote stops the start.
                a.current()
                    .await
                    .map_err(|e| cfg(format!("attestation: {e}")))?;
                Some(a)
            }
            _ => None,
        };
        let metrics_path = match &o.monitoring_config_file {
            Some(f) => textproto::monitoring_config(&String::from_utf8_lossy(&read(
                f,
                "--monitoring_config_file",
            )?))
            .map_err(|e| cfg(format!("--monitoring_config_file: {e}")))?,
            None => Some("/monitoring/prometheus/metrics".to_owned()),
        };
        let ctx = Arc::new(RestContext {
            metrics_path,
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
            let g = crate::grpc::Grpc(core.clone());
            let n = o.max_request_bytes;
            let routes = tonic::service::Routes::new(
                crate::proto::tensorflow::serving::prediction_service_server::PredictionServiceServer::new(g.clone())
                    .max_decoding_message_size(n)
                    .max_encoding_message_size(usize::MAX),
            )
            .add_service(
                crate::proto::tensorflow::serving::model_service_server::ModelServiceServer::new(g)
                    .max_decoding_message_size(n),
            )
            .add_service(crate::proto::health::health_server::HealthServer::new(crate::grpc::Health(core.clone())));
            // Admission (in-flight place, memory budget) before tonic reads a message.
            let routes =
                routes
                    .prepare()
                    .into_axum_router()
                    .layer(axum::middleware::from_fn_with_state(
                        crate::admission::GrpcAdmission {
                            core: core.clone(),
                            max_message: n,
                        },
                        crate::admission::grpc_layer,
                    ));
            let att = attestation.clone();
            let router = routes.route(
                "/v1/attestation",
                axum::routing::get(move |uri: axum::http::Uri| {
                    let att = att.clone();
                    async move {
                        let (status, body) = match att {
                            Some(a) => a.respond(uri.query()).await,
                            None => crate::attestation::no_attestation(),
                        };
                        (
                            axum::http::StatusCode::from_u16(status)
                                .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
                            [(axum::http::header::CONTENT_TYPE, "application/json")],
                            body,
                        )
                    }
                }),
            );
            tasks.push(tokio::spawn(serve_listener(
                l,
                tls_cfg.clone(),
                router,
                rx.clone(),
                o.connections.clone(),
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
                async move { crate::rest::handle(c, ctx, req).await }
            });
            tasks.push(tokio::spawn(serve_listener(
                l,
                tls_cfg.clone(),
                router,
                rx.clone(),
                o.connections.clone(),
            )));
        }
        // Version polling and config re-reading.
        if o.file_system_poll_wait_seconds > 0 || o.model_config_file_poll_wait_seconds > 0 {
            let repo = repo.clone();
            let fs_wait = o.file_system_poll_wait_seconds;
            let cfg_wait = o.model_config_file_poll_wait_seconds;
            let opts = o.clone();
            let mut rx = rx.clone();
            tasks.push(tokio::spawn(async move {
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
                        match model_configs(&opts) {
                            Ok(c) => repo.set_configs(c),
                            Err(e) => tracing::error!("model config not reloaded: {e}"),
                        }
                    }
                    let r = repo.clone();
                    let _ = tokio::task::spawn_blocking(move || r.sync()).await;
                }
            }));
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

    /// Stops accepting, lets in-flight requests finish (up to the drain time), and stops.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let all = futures::future::join_all(self.tasks);
        let _ = tokio::time::timeout(self.drain + Duration::from_secs(1), all).await;
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

/// HTTP/2 stream window (bytes) of both APIs' listeners and of the gRPC client.
pub(crate) const H2_STREAM_WINDOW: u32 = 8 << 20;
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
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(2 * H2_STREAM_WINDOW)
        .max_frame_size(H2_MAX_FRAME);
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
        };
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
                    let conn = builder.serve_connection(TokioIo::new(tls), svc);
                    run_connection(conn, idle, limits.idle_timeout, stop).await;
                }
                None => {
                    let conn = builder.serve_connection(TokioIo::new(tcp), svc);
                    run_connection(conn, idle, limits.idle_timeout, stop).await;
                }
            }
        });
    }
    // Drain: every connection task holds a permit until it ends.
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        open.acquire_many(u32::try_from(max).unwrap_or(u32::MAX)),
    )
    .await;
}

/// Runs one connection until it ends, shutting it down gracefully when the server stops or
/// when it has had no request in progress for `idle` (`activity`: requests in progress).
async fn run_connection<I>(
    conn: auto::Connection<'_, I, ConnectionService, TokioExecutor>,
    mut activity: watch::Receiver<usize>,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let idle_for = async move {
        loop {
            if *activity.borrow_and_update() == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(idle) => return,
                    r = activity.changed() => if r.is_err() { return },
                }
            } else if activity.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::pin!(conn, idle_for);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("connection ended: {e}");
                }
                return;
            }
            _ = &mut idle_for, if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = stop.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The service of a connection.
type ConnectionService = Tracked<hyper_util::service::TowerToHyperService<axum::Router>>;

/// A connection's service that counts the requests in progress on it (for the idle timeout).
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<watch::Sender<usize>>,
}

/// Counts a request as in progress until dropped.
struct InProgress(Arc<watch::Sender<usize>>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl<S, R> hyper::service::Service<R> for Tracked<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, req: R) -> Self::Future {
        self.activity.send_modify(|n| *n += 1);
        let guard = InProgress(self.activity.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            drop(guard);
            r
        })
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
