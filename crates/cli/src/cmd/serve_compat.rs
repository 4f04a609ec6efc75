//! The flags of TF Serving's `tensorflow_model_server` (2.x) that teeserve does not need, so
//! that a TF Serving command line starts teeserve as it is: each is accepted, and when given
//! it says in one warning line what teeserve does instead. Two are refused, because their
//! meaning would weaken a guarantee (a plaintext gRPC socket; ALTS in place of TLS).
//!
//! TF Serving's boolean flags take `--flag`, `--flag=true` or `--flag=false`.

use clap::Args;

/// TF Serving flags that teeserve accepts without needing them.
#[derive(Debug, Args, Default)]
#[command(next_help_heading = "TF Serving flags teeserve accepts but does not need (each warns)")]
pub struct TfServingCompat {
    /// Replay assets.extra/tf_serving_warmup_requests (default true). teeserve always replays
    /// a version's warmup file before serving it.
    #[arg(long = "enable_model_warmup", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub enable_model_warmup: Option<bool>,
    /// Times each warmup record is replayed. teeserve replays each once.
    #[arg(long = "num_request_iterations_for_warmup", value_name = "N")]
    pub num_request_iterations_for_warmup: Option<i64>,
    /// gRPC channel arguments (e.g. grpc.max_connection_age_ms=2000). teeserve's connections
    /// are bounded by --max_connection_age_seconds, --idle_timeout_seconds and
    /// --connection_grace_seconds instead.
    #[arg(long = "grpc_channel_arguments", value_name = "ARGS")]
    pub grpc_channel_arguments: Option<String>,
    /// gRPC server threads. teeserve's I/O runs on its async runtime; inferences on --workers.
    #[arg(long = "grpc_max_threads", value_name = "N")]
    pub grpc_max_threads: Option<i64>,
    /// REST server threads. As --grpc_max_threads.
    #[arg(long = "rest_api_num_threads", value_name = "N")]
    pub rest_api_num_threads: Option<i64>,
    /// Threads of a TensorFlow session (intra and inter). teeserve takes
    /// --tensorflow_intra_op_parallelism and --tensorflow_inter_op_parallelism.
    #[arg(long = "tensorflow_session_parallelism", value_name = "N")]
    pub tensorflow_session_parallelism: Option<i64>,
    /// A ConfigProto for TensorFlow sessions. teeserve builds the session's configuration
    /// from its own flags (a host-given ConfigProto could, e.g., turn on device-placement
    /// logging).
    #[arg(long = "tensorflow_session_config_file", value_name = "FILE")]
    pub tensorflow_session_config_file: Option<String>,
    /// Labels may point at versions not loaded yet. teeserve resolves a label when a request
    /// uses it, and answers NOT_FOUND while its version is not available.
    #[arg(long = "allow_version_labels_for_unavailable_models", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub allow_version_labels_for_unavailable_models: Option<bool>,
    /// Per-model batching_params.pbtxt inside SavedModels. teeserve takes one
    /// --batching_parameters_file.
    #[arg(long = "enable_per_model_batching_parameters", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub enable_per_model_batching_parameters: Option<bool>,
    /// Threads loading models. teeserve loads one version at a time.
    #[arg(long = "num_load_threads", value_name = "N")]
    pub num_load_threads: Option<i64>,
    /// Threads unloading models. As --num_load_threads.
    #[arg(long = "num_unload_threads", value_name = "N")]
    pub num_unload_threads: Option<i64>,
    /// Retries of a failed load. teeserve retries a version when its files change, at the
    /// next --file_system_poll_wait_seconds.
    #[arg(long = "max_num_load_retries", value_name = "N")]
    pub max_num_load_retries: Option<i64>,
    /// Wait between load retries. As --max_num_load_retries.
    #[arg(long = "load_retry_interval_micros", value_name = "N")]
    pub load_retry_interval_micros: Option<i64>,
    /// Flush file-system caches after loading. teeserve holds nothing of a model file but the
    /// bytes it read.
    #[arg(long = "flush_filesystem_caches", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub flush_filesystem_caches: Option<bool>,
    /// A PlatformConfigMap. teeserve picks each version's engine from its files.
    #[arg(long = "platform_config_file", value_name = "FILE")]
    pub platform_config_file: Option<String>,
    /// GPU memory share. teeserve runs on CPUs (inside the TEE).
    #[arg(long = "per_process_gpu_memory_fraction", value_name = "F")]
    pub per_process_gpu_memory_fraction: Option<f64>,
    /// Serve gRPC health checks. teeserve always serves grpc.health.v1.
    #[arg(long = "enable_grpc_healthcheck_service", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub enable_grpc_healthcheck_service: Option<bool>,
    /// TensorFlow's profiler service. teeserve has none (it would show requests' traces).
    #[arg(long = "enable_profiler", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub enable_profiler: Option<bool>,
    /// Check each signature's method name. teeserve checks it for Classify and Regress.
    #[arg(long = "enable_signature_method_name_check", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub enable_signature_method_name_check: Option<bool>,
    /// Trim the MetaGraphDef kept in memory. teeserve keeps only the signatures.
    #[arg(long = "remove_unused_fields_from_bundle_metagraph", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub remove_unused_fields_from_bundle_metagraph: Option<bool>,
    /// Prefer a TFLite model. teeserve serves ONNX models and SavedModels.
    #[arg(long = "prefer_tflite_model", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub prefer_tflite_model: Option<bool>,
    /// TFLite interpreter pools. As --prefer_tflite_model.
    #[arg(long = "num_tflite_pools", value_name = "N")]
    pub num_tflite_pools: Option<i64>,
    /// TFLite interpreters per pool. As --prefer_tflite_model.
    #[arg(long = "num_tflite_interpreters_per_pool", value_name = "N")]
    pub num_tflite_interpreters_per_pool: Option<i64>,
    /// A thread-pool factory configuration. teeserve sizes its pools from --workers.
    #[arg(long = "thread_pool_factory_config_file", value_name = "FILE")]
    pub thread_pool_factory_config_file: Option<String>,
    /// Mixed precision (e.g. bfloat16). teeserve runs models in the precision they were saved in.
    #[arg(long = "mixed_precision", value_name = "MODE")]
    pub mixed_precision: Option<String>,
    /// XLA JIT on CPU. teeserve leaves TensorFlow's compilation at its default.
    #[arg(long = "xla_cpu_compilation_enabled", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub xla_cpu_compilation_enabled: Option<bool>,
    /// XLA JIT on GPU. teeserve runs on CPUs.
    #[arg(long = "xla_gpu_compilation_enabled", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub xla_gpu_compilation_enabled: Option<bool>,
    /// Skip TPU initialisation. teeserve uses no TPU.
    #[arg(long = "skip_initialize_tpu", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub skip_initialize_tpu: Option<bool>,
    /// Refused: a plaintext gRPC Unix socket would carry requesters' data outside TLS on the
    /// TEE host.
    #[arg(long = "grpc_socket_path", value_name = "PATH")]
    pub grpc_socket_path: Option<String>,
    /// Refused when true: ALTS would replace the TLS that requesters verify (and that carries
    /// the attestation).
    #[arg(long = "use_alts_credentials", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub use_alts_credentials: Option<bool>,
}

impl TfServingCompat {
    /// One warning per flag given, saying what teeserve does instead; or why a flag is
    /// refused.
    pub fn check(&self) -> Result<Vec<String>, String> {
        if let Some(p) = &self.grpc_socket_path {
            return Err(format!(
                "--grpc_socket_path {p:?} is refused: a plaintext gRPC socket on the TEE host would carry requesters' data outside TLS; use --port (gRPC over TLS) instead"
            ));
        }
        if self.use_alts_credentials == Some(true) {
            return Err("--use_alts_credentials is refused: requesters verify the server's TLS key (and its attestation), which ALTS would replace".into());
        }
        let mut out = Vec::new();
        let mut note = |flag: &str, given: bool, instead: &str| {
            if given {
                out.push(format!("--{flag} is accepted for TF Serving compatibility and has no effect: {instead}"));
            }
        };
        note(
            "enable_model_warmup",
            self.enable_model_warmup.is_some(),
            "teeserve always replays a version's warmup file before serving it",
        );
        note(
            "num_request_iterations_for_warmup",
            self.num_request_iterations_for_warmup.is_some(),
            "each warmup record is replayed once",
        );
        note("grpc_channel_arguments", self.grpc_channel_arguments.is_some(), "connections are bounded by --max_connection_age_seconds, --idle_timeout_seconds and --connection_grace_seconds");
        note(
            "grpc_max_threads",
            self.grpc_max_threads.is_some(),
            "I/O runs on the async runtime, inferences on --workers",
        );
        note(
            "rest_api_num_threads",
            self.rest_api_num_threads.is_some(),
            "I/O runs on the async runtime, inferences on --workers",
        );
        note(
            "tensorflow_session_parallelism",
            self.tensorflow_session_parallelism.is_some(),
            "use --tensorflow_intra_op_parallelism and --tensorflow_inter_op_parallelism",
        );
        note(
            "tensorflow_session_config_file",
            self.tensorflow_session_config_file.is_some(),
            "the session's configuration comes from teeserve's own flags",
        );
        note(
            "allow_version_labels_for_unavailable_models",
            self.allow_version_labels_for_unavailable_models.is_some(),
            "a label is resolved when a request uses it",
        );
        note(
            "enable_per_model_batching_parameters",
            self.enable_per_model_batching_parameters.is_some(),
            "one --batching_parameters_file applies to every model",
        );
        note(
            "num_load_threads",
            self.num_load_threads.is_some(),
            "versions load one at a time",
        );
        note(
            "num_unload_threads",
            self.num_unload_threads.is_some(),
            "versions unload one at a time",
        );
        note(
            "max_num_load_retries",
            self.max_num_load_retries.is_some(),
            "a failed version is tried again when its files change",
        );
        note(
            "load_retry_interval_micros",
            self.load_retry_interval_micros.is_some(),
            "a failed version is tried again when its files change",
        );
        note(
            "flush_filesystem_caches",
            self.flush_filesystem_caches.is_some(),
            "model files are read once into memory",
        );
        note(
            "platform_config_file",
            self.platform_config_file.is_some(),
            "each version's engine is picked from its files",
        );
        note(
            "per_process_gpu_memory_fraction",
            self.per_process_gpu_memory_fraction.is_some(),
            "teeserve runs on CPUs",
        );
        note(
            "enable_grpc_healthcheck_service",
            self.enable_grpc_healthcheck_service.is_some(),
            "grpc.health.v1 is always served",
        );
        note(
            "enable_profiler",
            self.enable_profiler.is_some(),
            "teeserve has no profiler service",
        );
        note(
            "enable_signature_method_name_check",
            self.enable_signature_method_name_check.is_some(),
            "method names are checked for Classify and Regress",
        );
        note(
            "remove_unused_fields_from_bundle_metagraph",
            self.remove_unused_fields_from_bundle_metagraph.is_some(),
            "only the signatures are kept",
        );
        note(
            "prefer_tflite_model",
            self.prefer_tflite_model.is_some(),
            "teeserve serves ONNX models and SavedModels",
        );
        note(
            "num_tflite_pools",
            self.num_tflite_pools.is_some(),
            "teeserve serves ONNX models and SavedModels",
        );
        note(
            "num_tflite_interpreters_per_pool",
            self.num_tflite_interpreters_per_pool.is_some(),
            "teeserve serves ONNX models and SavedModels",
        );
        note(
            "thread_pool_factory_config_file",
            self.thread_pool_factory_config_file.is_some(),
            "pools are sized from --workers",
        );
        note(
            "mixed_precision",
            self.mixed_precision.is_some(),
            "models run in the precision they were saved in",
        );
        note(
            "xla_cpu_compilation_enabled",
            self.xla_cpu_compilation_enabled.is_some(),
            "TensorFlow's compilation stays at its default",
        );
        note(
            "xla_gpu_compilation_enabled",
            self.xla_gpu_compilation_enabled.is_some(),
            "teeserve runs on CPUs",
        );
        note(
            "skip_initialize_tpu",
            self.skip_initialize_tpu.is_some(),
            "teeserve uses no TPU",
        );
        note(
            "use_alts_credentials",
            self.use_alts_credentials.is_some(),
            "TLS is used",
        );
        Ok(out)
    }
}
