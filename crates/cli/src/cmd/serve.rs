//! `teeserve serve`: the inference server (TEE host). Flags follow TensorFlow Serving's
//! `tensorflow_model_server`, plus TLS, key-broker and attestation flags.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use teeserve_serving::engine::{EngineChoice, TensorFlowOptions};
use teeserve_serving::CoreOptions;
use teeserve_serving::{
    ConnectionLimits, KbsOptions, OptionsError, ServeError, ServeOption, ServeOptions, Server,
    TlsOptions,
};

use super::attest::{open_platform, PlatformKind, PlatformPaths};

/// Inference engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// tract: pure Rust, the smallest code inside an enclave.
    Tract,
    /// ONNX Runtime, loaded at run time from --onnxruntime_lib.
    Onnxruntime,
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// gRPC port (0 disables gRPC).
    #[arg(long, default_value_t = 8500)]
    pub port: u16,
    /// REST port (0 disables REST).
    #[arg(
        long = "rest_api_port",
        alias = "rest-api-port",
        default_value_t = 8501
    )]
    pub rest_api_port: u16,
    /// Address the gRPC port binds to.
    #[arg(
        long = "grpc_bind_address",
        alias = "grpc-bind-address",
        default_value = "0.0.0.0",
        help_heading = "teeserve: listeners and limits"
    )]
    pub grpc_bind: String,
    /// Address the REST port binds to.
    #[arg(
        long = "rest_api_bind_address",
        alias = "rest-api-bind-address",
        default_value = "0.0.0.0",
        help_heading = "teeserve: listeners and limits"
    )]
    pub rest_bind: String,
    /// Model name (single-model mode).
    #[arg(long = "model_name", alias = "model-name", default_value = "default")]
    pub model_name: String,
    /// Model directory, TF Serving's layout: one numbered directory per version, holding
    /// `model.onnx` or a SavedModel (`saved_model.pb`, `variables/`), or their sealed files
    /// (`*.sealed`, from `teeserve seal`).
    #[arg(
        long = "model_base_path",
        alias = "model-base-path",
        value_name = "DIR"
    )]
    pub model_base_path: Option<PathBuf>,
    /// TF Serving model config (text ModelServerConfig: model_config_list, version policies,
    /// version_labels); replaces --model_name/--model_base_path.
    #[arg(
        long = "model_config_file",
        alias = "model-config-file",
        value_name = "FILE"
    )]
    pub model_config_file: Option<PathBuf>,
    /// Seconds between re-reads of --model_config_file (0: read once).
    #[arg(long = "model_config_file_poll_wait_seconds", default_value_t = 0)]
    pub model_config_file_poll_wait_seconds: u64,
    /// Seconds between scans for new and removed versions (0: once).
    #[arg(long = "file_system_poll_wait_seconds", default_value_t = 1)]
    pub file_system_poll_wait_seconds: i64,
    /// Batch concurrent requests to the same model.
    #[arg(long = "enable_batching", alias = "enable-batching")]
    pub enable_batching: bool,
    /// Batching parameters (text BatchingParameters: max_batch_size, batch_timeout_micros,
    /// num_batch_threads, max_enqueued_batches).
    #[arg(long = "batching_parameters_file", value_name = "FILE")]
    pub batching_parameters_file: Option<PathBuf>,
    /// Monitoring config (text MonitoringConfig: prometheus_config { enable: true path: "..." }).
    /// As in TF Serving, the Prometheus metrics (per-model request counts, latencies, batch
    /// sizes) are served on the REST port only when this file enables them (path by default
    /// /monitoring/prometheus/metrics), to whoever can reach the port unless
    /// --monitoring_client_ca restricts them.
    #[arg(long = "monitoring_config_file", value_name = "FILE")]
    pub monitoring_config_file: Option<PathBuf>,
    /// Serve the metrics only to clients presenting a TLS certificate that chains to this CA
    /// (PEM); others get 403. The ports ask every client for a certificate but, unless
    /// --tls_client_ca requires one, serve the rest without. Needs TLS and
    /// --monitoring_config_file enabling the metrics.
    #[arg(
        long = "monitoring_client_ca",
        value_name = "PEM",
        help_heading = "teeserve: TLS, attestation and access"
    )]
    pub monitoring_client_ca: Option<PathBuf>,
    /// Allow ModelService.HandleReloadConfigRequest (a new model config list replaces the served
    /// models) to clients presenting a TLS certificate that chains to this CA (PEM); others get
    /// PERMISSION_DENIED. Off by default: anyone who could call it could unload every model.
    /// Needs TLS; the ports then ask every client for a certificate, as --monitoring_client_ca.
    #[arg(
        long = "reload_config_client_ca",
        value_name = "PEM",
        help_heading = "teeserve: TLS, attestation and access"
    )]
    pub reload_config_client_ca: Option<PathBuf>,
    /// Allow HandleReloadConfigRequest to anyone who reaches the gRPC port (as TF Serving
    /// does); for a trusted network only.
    #[arg(
        long = "reload_config_from_anyone",
        conflicts_with = "reload_config_client_ca",
        help_heading = "teeserve: TLS, attestation and access"
    )]
    pub reload_config_from_anyone: bool,
    /// Add CORS headers to REST responses.
    #[arg(long = "rest_api_enable_cors_support")]
    pub cors: bool,
    /// TF Serving's SSLConfig (server_key, server_cert, custom_ca, client_verify); applies to
    /// gRPC and REST.
    #[arg(long = "ssl_config_file", value_name = "FILE")]
    pub ssl_config_file: Option<PathBuf>,
    /// MetaGraphDef tags of the SavedModels to load, comma-separated (TF Serving's flag).
    #[arg(long = "saved_model_tags", default_value = "serve")]
    pub saved_model_tags: String,
    /// Threads one TensorFlow operation may use (0: TensorFlow's choice, the cores).
    #[arg(long = "tensorflow_intra_op_parallelism", default_value_t = 0)]
    pub tensorflow_intra_op_parallelism: i32,
    /// TensorFlow operations run at once (0: TensorFlow's choice).
    #[arg(long = "tensorflow_inter_op_parallelism", default_value_t = 0)]
    pub tensorflow_inter_op_parallelism: i32,
    /// Print teeserve's version and exit (as tensorflow_model_server --version).
    #[arg(long = "version")]
    pub version: bool,
    /// TLS certificate chain (PEM) for gRPC and REST.
    #[arg(
        long = "tls_cert",
        alias = "tls-cert",
        value_name = "PEM",
        help_heading = "teeserve: TLS, attestation and access"
    )]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM). In production fetch it from the key broker (--kbs_tls_key_secret).
    #[arg(
        long = "tls_key",
        alias = "tls-key",
        value_name = "PEM",
        help_heading = "teeserve: TLS, attestation and access"
    )]
    pub tls_key: Option<PathBuf>,
    /// Publish /v1/attestation although the TLS key is a file on the host (--tls_key or
    /// --ssl_config_file). Off by default: the host holds that key too and could answer in the
    /// server's place; the document says "key_origin": "host", which requesters refuse unless
    /// their policy has tls_key_origin = ["host"].
    #[arg(
        long = "attest_host_tls_key",
        alias = "attest-host-tls-key",
        help_heading = "teeserve: TLS, attestation and access"
    )]
    pub attest_host_tls_key: bool,
    /// Require client certificates signed by this CA (mTLS on gRPC and REST).
    #[arg(
        long = "tls_client_ca",
        alias = "tls-client-ca",
        value_name = "PEM",
        help_heading = "teeserve: TLS, attestation and access"
    )]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve an RA-TLS certificate made inside the TEE (its evidence binds the TLS key).
    #[arg(
        long = "tls_ra",
        alias = "tls-ra",
        help_heading = "teeserve: TLS, attestation and access"
    )]
    pub tls_ra: bool,
    /// Serve plaintext (no TLS). Only for local experiments.
    #[arg(long, help_heading = "teeserve: TLS, attestation and access")]
    pub insecure: bool,
    /// The TEE platform this server runs in (needed with --kbs, --tls_ra and /v1/attestation).
    #[arg(
        long,
        value_enum,
        help_heading = "teeserve: TLS, attestation and access"
    )]
    pub platform: Option<PlatformKind>,
    #[command(flatten, next_help_heading = "teeserve: TLS, attestation and access")]
    pub paths: PlatformPaths,
    /// Key broker (HOST:PORT): the model key (and TLS key) are fetched over RA-TLS before the
    /// ports open.
    #[arg(
        long,
        value_name = "HOST:PORT",
        requires = "kbs_ca",
        help_heading = "teeserve: key broker and model key"
    )]
    pub kbs: Option<String>,
    /// CA (PEM) of the key broker's certificate.
    #[arg(
        long = "kbs_ca",
        alias = "kbs-ca",
        value_name = "PEM",
        help_heading = "teeserve: key broker and model key"
    )]
    pub kbs_ca: Option<PathBuf>,
    /// Name expected in the key broker's certificate (default: the host of --kbs).
    #[arg(
        long = "kbs_server_name",
        alias = "kbs-server-name",
        value_name = "NAME",
        help_heading = "teeserve: key broker and model key"
    )]
    pub kbs_server_name: Option<String>,
    /// Secret holding the model key.
    #[arg(
        long = "kbs_model_key_secret",
        alias = "kbs-model-key-secret",
        default_value = "model-key",
        value_name = "NAME",
        help_heading = "teeserve: key broker and model key"
    )]
    pub kbs_model_key_secret: String,
    /// Secret holding the TLS private key (PEM), used with --tls_cert.
    #[arg(
        long = "kbs_tls_key_secret",
        alias = "kbs-tls-key-secret",
        value_name = "NAME",
        help_heading = "teeserve: key broker and model key"
    )]
    pub kbs_tls_key_secret: Option<String>,
    /// Secret holding the owner's list of admitted model files (JSON: per model, "sha256"
    /// digests of the sealed files and/or "min_version"); every other file is refused, so a
    /// retired sealed version cannot be brought back by the host.
    #[arg(
        long = "kbs_admitted_models_secret",
        alias = "kbs-admitted-models-secret",
        value_name = "NAME",
        requires = "kbs",
        help_heading = "teeserve: key broker and model key"
    )]
    pub kbs_admitted_models_secret: Option<String>,
    /// Seconds between fetches of the admitted-models list from the key broker while serving:
    /// a version the owner retires (or a change to what a model may do) reaches this server
    /// within this period, and a version no longer admitted stops serving at once.
    #[arg(
        long = "kbs_admitted_refresh_seconds", alias = "kbs-admitted-refresh-seconds",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=86_400),
        help_heading = "teeserve: key broker and model key",
    )]
    pub kbs_admitted_refresh_seconds: u64,
    /// Seconds to keep retrying an unreachable key broker before giving up.
    #[arg(
        long = "kbs_retry_seconds",
        alias = "kbs-retry-seconds",
        default_value_t = 60,
        help_heading = "teeserve: key broker and model key"
    )]
    pub kbs_retry_seconds: u64,
    /// A local model key file (development only: on a TEE host use the key broker).
    #[arg(
        long = "model_key",
        alias = "model-key",
        value_name = "FILE",
        conflicts_with = "kbs",
        help_heading = "teeserve: key broker and model key"
    )]
    pub model_key: Option<PathBuf>,
    /// Collateral bundle (JSON) published in /v1/attestation so requesters can verify offline.
    #[arg(
        long = "attestation_collateral",
        alias = "attestation-collateral",
        value_name = "FILE",
        help_heading = "teeserve: TLS, attestation and access"
    )]
    pub attestation_collateral: Option<PathBuf>,
    /// Inference engine: tract (pure Rust, built in) or onnxruntime (needs --onnxruntime_lib).
    #[arg(long, value_enum, default_value_t = EngineKind::Tract, help_heading = "teeserve: engines")]
    pub engine: EngineKind,
    /// ONNX Runtime shared library (libonnxruntime.so), e.g. onnxruntime/capi/libonnxruntime.so.1.*
    /// from the onnxruntime Python wheel. Loaded at start; nothing is downloaded.
    #[arg(
        long = "onnxruntime_lib",
        alias = "onnxruntime-lib",
        value_name = "FILE",
        env = "TEESERVE_ONNXRUNTIME_LIB",
        help_heading = "teeserve: engines"
    )]
    pub onnxruntime_lib: Option<PathBuf>,
    /// Threads one ONNX Runtime inference spreads its operators over (the session's intra-op
    /// pool, shared by the inferences running at once; as --tensorflow_intra_op_parallelism
    /// for TensorFlow). 0: chosen per inference from the load: the worker count for an
    /// inference that runs alone, one for an inference that starts beside others (two sessions
    /// of each model over one copy of its weights).
    #[arg(
        long = "onnxruntime_intra_op_parallelism",
        alias = "onnxruntime-intra-op-parallelism",
        value_name = "N",
        default_value_t = 0,
        help_heading = "teeserve: engines"
    )]
    pub onnxruntime_intra_op_parallelism: usize,
    /// TensorFlow shared library for SavedModels (`saved_model.pb` versions):
    /// tensorflow/libtensorflow_cc.so.2 from the tensorflow-cpu Python wheel, with
    /// libtensorflow_framework.so.2 beside it. Opened when the first SavedModel loads; nothing is
    /// downloaded. ONNX models run on --engine whatever this says.
    #[arg(
        long = "tensorflow_lib",
        alias = "tensorflow-lib",
        value_name = "FILE",
        env = "TEESERVE_TENSORFLOW_LIB",
        help_heading = "teeserve: engines"
    )]
    pub tensorflow_lib: Option<PathBuf>,
    /// Requests in flight before RESOURCE_EXHAUSTED / HTTP 429.
    #[arg(
        long = "max_in_flight",
        default_value_t = 256,
        help_heading = "teeserve: listeners and limits"
    )]
    pub max_in_flight: usize,
    /// Inferences that run at once (default: the cores), plus one expected under a millisecond
    /// when none of these is idle (so that long ones do not hold up short ones). A model's
    /// weights are held once whatever the number: tract shares one plan between the workers,
    /// TensorFlow and ONNX Runtime one session, on which the workers' inferences run
    /// concurrently.
    #[arg(long = "workers", help_heading = "teeserve: engines")]
    pub workers: Option<usize>,
    /// Largest request (gRPC message or REST body), bytes.
    #[arg(long = "max_request_bytes", default_value_t = 64 << 20, help_heading = "teeserve: listeners and limits")]
    pub max_request_bytes: usize,
    /// Request deadline, milliseconds (DEADLINE_EXCEEDED / HTTP 504 past it).
    #[arg(
        long = "request_timeout_ms",
        visible_alias = "rest_api_timeout_in_ms",
        default_value_t = 30_000,
        help_heading = "teeserve: listeners and limits"
    )]
    pub request_timeout_ms: u64,
    /// Encode gRPC outputs as tensor_content instead of typed fields.
    #[arg(long = "enable_serialization_as_tensor_content")]
    pub tensor_content: bool,
    /// Seconds to let in-flight requests finish on SIGTERM.
    #[arg(
        long = "drain_seconds",
        default_value_t = 10,
        help_heading = "teeserve: listeners and limits"
    )]
    pub drain_seconds: u64,
    /// Bytes one request's input tensors may take once decoded (elements times element size;
    /// strings with their content). Checked against the shapes a request declares before
    /// anything is allocated: one value may fill a whole shape. Over it: INVALID_ARGUMENT / 400.
    #[arg(long = "max_request_tensor_bytes", default_value_t = teeserve_serving::DEFAULT_MAX_TENSOR_BYTES, help_heading = "teeserve: listeners and limits")]
    pub max_request_tensor_bytes: usize,
    /// Bytes one request's output tensors may take (elements times element size). A model's
    /// outputs can be far larger than its inputs (an outer product, a fill shaped by an input's
    /// value): they are checked as they leave the engine, before they are copied or encoded,
    /// and held in the in-flight memory budget until the answer is sent. Over it:
    /// RESOURCE_EXHAUSTED / 429.
    #[arg(long = "max_response_tensor_bytes", default_value_t = teeserve_serving::DEFAULT_MAX_TENSOR_BYTES, help_heading = "teeserve: listeners and limits")]
    pub max_response_tensor_bytes: usize,
    /// Bytes all requests in flight may hold together: bodies as they arrive, what decoding
    /// them takes, and their tensors. A request that does not fit: RESOURCE_EXHAUSTED / 429.
    #[arg(long = "max_in_flight_bytes", default_value_t = teeserve_serving::DEFAULT_MAX_IN_FLIGHT_BYTES, help_heading = "teeserve: listeners and limits")]
    pub max_in_flight_bytes: usize,
    /// Requests in flight one peer (an IPv4 address, an IPv6 /64) may have at once (default:
    /// half of --max_in_flight), so that one requester cannot take every place from the
    /// others. Behind a proxy every request comes from the proxy: raise it to --max_in_flight.
    #[arg(
        long = "max_in_flight_per_peer",
        help_heading = "teeserve: listeners and limits"
    )]
    pub max_in_flight_per_peer: Option<usize>,
    /// Bytes of --max_in_flight_bytes one peer may hold at once (default: half of it).
    #[arg(
        long = "max_in_flight_bytes_per_peer",
        help_heading = "teeserve: listeners and limits"
    )]
    pub max_in_flight_bytes_per_peer: Option<usize>,
    /// Connections open at once on each port; one more is closed as soon as it is accepted.
    #[arg(long = "max_connections", default_value_t = ConnectionLimits::default().max_connections, help_heading = "teeserve: listeners and limits")]
    pub max_connections: usize,
    /// Seconds a client has to finish the TLS handshake and, on HTTP/1, to send each request's
    /// header (including the wait for the next request on a kept-alive connection).
    #[arg(long = "header_timeout_seconds", default_value_t = ConnectionLimits::default().header_timeout.as_secs(), help_heading = "teeserve: listeners and limits")]
    pub header_timeout_seconds: u64,
    /// Seconds a connection may stay open with no request in progress (HTTP/2: then GOAWAY).
    /// A health Watch stream does not count as a request in progress; it ends at the GOAWAY.
    #[arg(long = "idle_timeout_seconds", default_value_t = ConnectionLimits::default().idle_timeout.as_secs(), help_heading = "teeserve: listeners and limits")]
    pub idle_timeout_seconds: u64,
    /// Seconds a connection asked to close (idle, or at its maximum age) may take to finish
    /// what is open on it; then it is cut. A stream that never ends, or a response the peer
    /// never reads, holds a connection no longer than this past its GOAWAY.
    #[arg(long = "connection_grace_seconds", default_value_t = ConnectionLimits::default().grace.as_secs(), help_heading = "teeserve: listeners and limits")]
    pub connection_grace_seconds: u64,
    /// Seconds after which a connection is asked to close (HTTP/2: GOAWAY) even if busy, and
    /// cut after the grace period; clients reconnect. 0: no maximum.
    #[arg(long = "max_connection_age_seconds", default_value_t = secs(ConnectionLimits::default().max_age), help_heading = "teeserve: listeners and limits")]
    pub max_connection_age_seconds: u64,
    /// Seconds a response may wait for the peer to read any of it (an HTTP/2 window of 0, or a
    /// full TCP window); then its connection is cut. 0: no limit.
    #[arg(long = "send_timeout_seconds", default_value_t = secs(ConnectionLimits::default().send_timeout), help_heading = "teeserve: listeners and limits")]
    pub send_timeout_seconds: u64,
    #[command(flatten)]
    pub compat: super::serve_compat::TfServingCompat,
}

/// Seconds of an optional duration, 0 for none (for flags where 0 turns a bound off).
fn secs(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| d.as_secs())
}

/// A duration given in seconds where 0 turns the bound off.
fn unless_zero(seconds: u64) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

pub fn run(a: ServeArgs) -> Result<i32> {
    if a.version {
        crate::util::say(format!("teeserve {}", env!("CARGO_PKG_VERSION")))?;
        return Ok(0);
    }
    for warning in a.compat.check().map_err(anyhow::Error::msg)? {
        eprintln!("warning: {warning}");
    }
    let platform: Option<Arc<dyn teeserve_attest::platform::Platform>> = match a.platform {
        Some(k) => Some(Arc::from(open_platform(k, &a.paths)?)),
        None => None,
    };
    let engine = match (a.engine, a.onnxruntime_lib) {
        (EngineKind::Tract, _) => EngineChoice::Tract,
        (EngineKind::Onnxruntime, Some(lib)) => EngineChoice::OnnxRuntime {
            lib,
            intra_op_threads: a.onnxruntime_intra_op_parallelism,
        },
        (EngineKind::Onnxruntime, None) => anyhow::bail!(
            "--engine onnxruntime needs --onnxruntime_lib FILE (the libonnxruntime.so to load)"
        ),
    };
    let o = ServeOptions {
        port: a.port,
        rest_api_port: a.rest_api_port,
        grpc_bind: a.grpc_bind,
        rest_bind: a.rest_bind,
        model_name: a.model_name,
        model_base_path: a.model_base_path,
        model_config_file: a.model_config_file,
        model_config_file_poll_wait_seconds: a.model_config_file_poll_wait_seconds,
        file_system_poll_wait_seconds: a.file_system_poll_wait_seconds,
        enable_batching: a.enable_batching,
        batching_parameters_file: a.batching_parameters_file,
        monitoring_config_file: a.monitoring_config_file,
        cors: a.cors,
        tls: TlsOptions {
            ssl_config_file: a.ssl_config_file,
            cert: a.tls_cert,
            key: a.tls_key,
            client_ca: a.tls_client_ca,
            ra_tls: a.tls_ra,
            monitoring_client_ca: a.monitoring_client_ca,
            reload_client_ca: a.reload_config_client_ca,
            reload_from_anyone: a.reload_config_from_anyone,
            insecure: a.insecure,
            attest_host_key: a.attest_host_tls_key,
        },
        model_key_file: a.model_key,
        kbs: a.kbs.map(|addr| KbsOptions {
            addr,
            ca: a.kbs_ca.unwrap_or_default(),
            server_name: a.kbs_server_name,
            model_key_secret: a.kbs_model_key_secret,
            tls_key_secret: a.kbs_tls_key_secret,
            admitted_models_secret: a.kbs_admitted_models_secret,
            retry_for: Duration::from_secs(a.kbs_retry_seconds),
            admitted_refresh: Duration::from_secs(a.kbs_admitted_refresh_seconds),
        }),
        attestation_collateral: a.attestation_collateral,
        engine,
        tensorflow: a.tensorflow_lib.map(|lib| TensorFlowOptions {
            lib,
            tags: a
                .saved_model_tags
                .split(',')
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect(),
            intra_op_parallelism: a.tensorflow_intra_op_parallelism,
            inter_op_parallelism: a.tensorflow_inter_op_parallelism,
        }),
        core: CoreOptions {
            workers: a.workers.unwrap_or_else(|| CoreOptions::default().workers),
            max_in_flight: a.max_in_flight,
            timeout: Duration::from_millis(a.request_timeout_ms),
            tensor_content: a.tensor_content,
            max_tensor_bytes: a.max_request_tensor_bytes,
            max_response_tensor_bytes: a.max_response_tensor_bytes,
            max_in_flight_bytes: a.max_in_flight_bytes,
            max_in_flight_per_peer: a
                .max_in_flight_per_peer
                .unwrap_or(a.max_in_flight / 2)
                .max(1),
            max_in_flight_bytes_per_peer: a
                .max_in_flight_bytes_per_peer
                .unwrap_or(a.max_in_flight_bytes / 2)
                .max(1),
        },
        max_request_bytes: a.max_request_bytes,
        drain_secs: a.drain_seconds,
        connections: ConnectionLimits {
            max_connections: a.max_connections,
            header_timeout: Duration::from_secs(a.header_timeout_seconds),
            idle_timeout: Duration::from_secs(a.idle_timeout_seconds),
            grace: Duration::from_secs(a.connection_grace_seconds),
            max_age: unless_zero(a.max_connection_age_seconds),
            send_timeout: unless_zero(a.send_timeout_seconds),
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("async runtime")?;
    rt.block_on(async move {
        let server = Server::start(o, platform)
            .await
            .map_err(|e| anyhow::anyhow!(describe(&e)))?;
        let show = |a: Option<std::net::SocketAddr>| {
            a.map(|a| a.to_string()).unwrap_or_else(|| "off".into())
        };
        crate::util::say(format_args!(
            "listening grpc={} rest={}",
            show(server.grpc_addr),
            show(server.rest_addr)
        ))?;
        tracing::info!(
            "serving: gRPC on {}, REST on {}",
            show(server.grpc_addr),
            show(server.rest_addr)
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stopping (signal received)");
        server.shutdown().await;
        Ok(0)
    })
}

/// The flag of `serve` that sets an option of the server.
fn flag(o: ServeOption) -> &'static str {
    match o {
        ServeOption::Port => "--port",
        ServeOption::RestApiPort => "--rest_api_port",
        ServeOption::ModelBasePath => "--model_base_path",
        ServeOption::ModelConfigFile => "--model_config_file",
        ServeOption::EnableBatching => "--enable_batching",
        ServeOption::BatchingParametersFile => "--batching_parameters_file",
        ServeOption::MonitoringConfigFile => "--monitoring_config_file",
        ServeOption::ModelKeyFile => "--model_key",
        ServeOption::Engine => "--engine",
        ServeOption::TensorflowLib => "--tensorflow_lib",
        ServeOption::AttestationCollateral => "--attestation_collateral",
        ServeOption::Kbs => "--kbs",
        ServeOption::KbsCa => "--kbs_ca",
        ServeOption::KbsTlsKeySecret => "--kbs_tls_key_secret",
        ServeOption::SslConfigFile => "--ssl_config_file",
        ServeOption::TlsCert => "--tls_cert",
        ServeOption::TlsKey => "--tls_key",
        ServeOption::TlsClientCa => "--tls_client_ca",
        ServeOption::TlsRa => "--tls_ra",
        ServeOption::MonitoringClientCa => "--monitoring_client_ca",
        ServeOption::ReloadClientCa => "--reload_config_client_ca",
        ServeOption::Insecure => "--insecure",
        ServeOption::Platform => "--platform",
    }
}

/// The server's start-up error in the words of `serve`'s flags.
fn describe(e: &ServeError) -> String {
    match e {
        ServeError::Option { option, detail } => format!("{} {detail}", flag(*option)),
        ServeError::Needs { option, needs } => format!(
            "{} needs {}",
            flag(*option),
            needs.iter().map(|n| flag(*n)).collect::<Vec<_>>().join(" or ")
        ),
        ServeError::Options(OptionsError::NoPorts) => {
            "--port and --rest_api_port are both 0: nothing would be served".into()
        }
        ServeError::Options(OptionsError::SamePort) => {
            "--rest_api_port must differ from --port".into()
        }
        ServeError::Options(OptionsError::NoModels) => {
            "give --model_base_path (with --model_name) or --model_config_file".into()
        }
        ServeError::Options(OptionsError::NoTls) => "TLS is required: give --tls_cert (with --tls_key or a key from the broker), --ssl_config_file or --tls_ra; plaintext only with --insecure".into(),
        other => other.to_string(),
    }
}
