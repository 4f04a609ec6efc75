//! Starting and running the server: secrets from the key broker, the model repository, TLS,
//! the attestation document, and the gRPC and REST listeners with graceful drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use teeserve_attest::platform::Platform;
use teeserve_ratls::KeyOrigin;
use tokio::sync::watch;

use crate::api::batching::Batcher;
use crate::api::metrics::Metrics;
use crate::api::service::ServingCore;
use crate::models::config::{self};
use crate::models::{ModelRepository, ModelSource};
use crate::network::attestation::Attestor;
use crate::network::grpc::ReloadAccess;
use crate::network::listener::{bind, serve_listener};
use crate::network::options::{
    check_options, metrics_path, model_configs, option, read, read_text, ServeError, ServeOption,
    ServeOptions,
};
use crate::network::provisioning::{refresh_admitted, secrets};
use crate::network::receipts::Receipts;
use crate::network::rest::RestContext;
use crate::network::tls::{metrics_clients, reload_access, tls_config, TlsSetup};
use teeserve_ratls::receipt::ReceiptSigner;

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

impl Server {
    /// Obtains secrets, loads models, and starts the listeners. `platform` is the TEE the server
    /// runs in (needed with a key broker, RA-TLS, or for /v1/attestation).
    pub async fn start(
        o: ServeOptions,
        platform: Option<Arc<dyn Platform>>,
    ) -> Result<Self, ServeError> {
        check_options(&o)?;
        let provisioned = secrets(&o, platform.as_deref()).await?;
        let repo = load_models(
            &o,
            ModelSource {
                key: provisioned.model_key,
                admitted: provisioned.admitted,
            },
        )
        .await?;
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
        // The receipt key is made here, inside the TEE, and never leaves it; the attestation
        // document carries its public half. Without a document, no receipts.
        let signer =
            ReceiptSigner::generate().map_err(|e| ServeError::Attestation(e.to_string()))?;
        let receipt_key = signer.public_key();
        let keys = (receipt_key, provisioned.key_release);
        let attestation = attestor(&o, platform.as_ref(), tls.as_ref(), &repo, keys).await?;
        let receipts = attestation
            .as_ref()
            .map(|a| Arc::new(Receipts::new(signer, a.clone())));
        let metrics_path = metrics_path(&o)?;
        let metrics_clients = metrics_clients(&o, metrics_path.as_deref(), tls.is_some())?;
        let ctx = Arc::new(RestContext {
            metrics_path,
            metrics_clients,
            cors: o.cors,
            attestation: attestation.clone(),
            receipts: receipts.clone(),
            max_body: o.max_request_bytes,
        });
        let tls_cfg = tls.map(|(c, _, _)| c);
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let grpc_addr = match o.port {
            0 => None,
            port => {
                let reload = reload_access(&o.tls, tls_cfg.is_some())?;
                let router =
                    grpc_router(&core, attestation, receipts, reload, o.max_request_bytes)?;
                Some(listen(&o, &o.grpc_bind, port, router, &tls_cfg, &rx, &mut tasks).await?)
            }
        };
        let rest_addr = match o.rest_api_port {
            0 => None,
            port => {
                let c = core.clone();
                let router = axum::Router::new().fallback(move |req: axum::extract::Request| {
                    let c = c.clone();
                    let ctx = ctx.clone();
                    async move { crate::network::rest::handle(c, ctx, req).await }
                });
                Some(listen(&o, &o.rest_bind, port, router, &tls_cfg, &rx, &mut tasks).await?)
            }
        };
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

/// The model repository of the options, every configured model loaded (or the start fails
/// naming what did not load).
async fn load_models(
    o: &ServeOptions,
    source: ModelSource,
) -> Result<Arc<ModelRepository>, ServeError> {
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
        ModelRepository::new(engine, source, model_configs(o)?)
            .with_tensorflow(tensorflow)
            .with_warmup(Arc::new(crate::api::WarmupReplay)),
    );
    let r = repo.clone();
    tokio::task::spawn_blocking(move || r.sync())
        .await
        .map_err(|e| ServeError::Models(e.to_string()))?;
    every_model_loaded(&repo)?;
    Ok(repo)
}

/// Binds `host:port` and serves `router` there until shutdown; gives the bound address.
async fn listen(
    o: &ServeOptions,
    host: &str,
    port: u16,
    router: axum::Router,
    tls: &Option<Arc<rustls::ServerConfig>>,
    stop: &watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<SocketAddr, ServeError> {
    let l = bind(host, port).await?;
    let addr = l.local_addr().map_err(|source| ServeError::Bind {
        addr: format!("{host}:{port}"),
        source,
    })?;
    tasks.push(tokio::spawn(serve_listener(
        l,
        tls.clone(),
        router,
        stop.clone(),
        o.connections.clone(),
        Duration::from_secs(o.drain_secs),
    )));
    Ok(addr)
}

/// As TF Serving does, the ports open only once every configured model has a version loaded: a
/// model with no version, or whose versions all failed to load, stops the start with the load
/// errors (a requester would otherwise find the server up and the model NOT_FOUND).
fn every_model_loaded(repo: &ModelRepository) -> Result<(), ServeError> {
    let failed = repo.unavailable();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(ServeError::Models(failed.join("\n")))
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
    Ok(Some(Arc::new(Batcher::new(
        params,
        metrics,
        o.core.max_response_tensor_bytes,
    ))))
}

/// The attestation document's maker, when there is a platform and a TLS key it may vouch for;
/// its documents state the receipts' key and the key broker's grants.
async fn attestor(
    o: &ServeOptions,
    platform: Option<&Arc<dyn Platform>>,
    tls: Option<&TlsSetup>,
    repo: &Arc<ModelRepository>,
    (receipt_key, key_release): ([u8; 32], Option<teeserve_ratls::key_release::KeyRelease>),
) -> Result<Option<Arc<Attestor>>, ServeError> {
    let (Some(p), Some((_, spki, origin))) = (platform, tls) else {
        return Ok(None);
    };
    if *origin == KeyOrigin::Host && !o.tls.attest_host_key {
        tracing::warn!("/v1/attestation is off: the TLS key is a file the host gave, so the host could answer in this server's place (--attest_host_tls_key publishes it anyway, marked as a host key)");
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
            .with_batching(o.enable_batching)
            .with_receipt_key(receipt_key)
            .with_key_release(key_release),
    );
    // Quote once now, so a platform that cannot quote stops the start.
    a.current()
        .await
        .map_err(|e| ServeError::Attestation(e.to_string()))?;
    Ok(Some(a))
}

/// The largest health-check message, bytes.
const HEALTH_MAX_MESSAGE: usize = 4096;

/// The gRPC services (prediction, model, health) behind request admission, and
/// `/v1/attestation` beside them on the same port.
fn grpc_router(
    core: &Arc<ServingCore>,
    attestation: Option<Arc<Attestor>>,
    receipts: Option<Arc<Receipts>>,
    reload: ReloadAccess,
    max_message: usize,
) -> Result<axum::Router, ServeError> {
    use teeserve_wire::tensorflow::serving::model_service_server::ModelServiceServer;
    use teeserve_wire::tensorflow::serving::prediction_service_server::PredictionServiceServer;
    let g = crate::network::grpc::Grpc {
        core: core.clone(),
        reload: Arc::new(reload),
    };
    // Server reflection (v1, and v1alpha for older clients), so that grpcurl can list and call
    // the services; its requests are symbol names, bounded like health checks.
    let reflection = |e: tonic_reflection::server::Error| ServeError::Grpc(e.to_string());
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(teeserve_wire::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(reflection)?
        .max_decoding_message_size(HEALTH_MAX_MESSAGE);
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(teeserve_wire::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(reflection)?
        .max_decoding_message_size(HEALTH_MAX_MESSAGE);
    let routes = tonic::service::Routes::new(
        PredictionServiceServer::new(g.clone())
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(usize::MAX),
    )
    .add_service(ModelServiceServer::new(g).max_decoding_message_size(max_message))
    // The Open Inference Protocol (KServe v2) over the same core.
    .add_service(
        teeserve_wire::inference::grpc_inference_service_server::GrpcInferenceServiceServer::new(
            crate::network::grpc_v2::V2(core.clone()),
        )
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(usize::MAX),
    )
    // Health checks are not admitted (an overloaded server still answers them), so their
    // message is bounded instead: a HealthCheckRequest is one service name.
    .add_service(
        teeserve_wire::health::health_server::HealthServer::new(crate::network::grpc::Health(
            core.clone(),
        ))
        .max_decoding_message_size(HEALTH_MAX_MESSAGE),
    )
    .add_service(reflection_v1)
    .add_service(reflection_v1alpha);
    // Admission (in-flight place, memory budget) before tonic reads a message.
    let routes = routes
        .prepare()
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(
            crate::network::admission::GrpcAdmission {
                core: core.clone(),
                max_message,
                receipts,
            },
            crate::network::admission::grpc_layer,
        ));
    Ok(routes.route(
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
    ))
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
                Ok(c) => {
                    let r = repo.clone();
                    let _ = tokio::task::spawn_blocking(move || r.reload(c, "poll")).await;
                    continue;
                }
                Err(e) => tracing::error!("model config not reloaded: {e}"),
            }
        }
        let r = repo.clone();
        let _ = tokio::task::spawn_blocking(move || r.sync()).await;
    }
}
