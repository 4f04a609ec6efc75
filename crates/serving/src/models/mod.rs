//! Models: the repository of served models (the layout of a base path, the version policy,
//! labels, reading plaintext and sealed files, the owner's admitted list, polling), and the
//! text formats of TF Serving's configuration files. Loading a version hands its bytes to an
//! engine; a version's warmup requests are replayed by the serving API, through [`WarmUp`].
//!
//! - `repository.rs`: the served models and their versions' states; loading, resolving;
//! - `version_policy.rs`: `<base_path>/<version>/` and which versions are served;
//! - `files.rs`: a version's files read, unsealed in memory, checked and hashed;
//! - `admitted.rs`: the owner's admitted-models list;
//! - `reload.rs`: a new model list replacing the served one (the reload RPC, config polling);
//! - `warmup_file.rs`: a version's warmup file and its records;
//! - `config.rs`: TF Serving's text-format configuration files.

pub(crate) mod admitted;
pub(crate) mod config;
pub(crate) mod files;
pub(crate) mod reload;
pub(crate) mod repository;
pub(crate) mod version_policy;
pub(crate) mod warmup_file;

pub use admitted::{AdmittedModels, ModelAdmission};
pub use config::{
    model_server_config_message, BatchingParameters, ModelConfig, SslConfig, TextProtoError,
    MAX_MODELS,
};
pub use files::{ModelFileError, MAX_MODEL_BYTES, MODEL_FILE, SEALED_FILE};
pub use reload::Reloaded;
pub use repository::{
    ModelCode, ModelRepository, ModelSource, ModelState, ResolveError, ResolvedModel, ServedModel,
    State, VersionState,
};
pub use version_policy::VersionPolicy;
pub use warmup_file::{
    frame_record, records as warmup_records, WarmUp, WarmupError, MAX_RECORDS, MAX_WARMUP_BYTES,
    WARMUP_FILE,
};
