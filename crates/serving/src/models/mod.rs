//! Models: the repository of served models (the layout of a base path, the version policy,
//! labels, reading plaintext and sealed files, the owner's admitted list, polling), and the
//! text formats of TF Serving's configuration files. Loading a version hands its bytes to an
//! engine; a version's warmup requests are replayed by the serving API, through [`WarmUp`].

pub(crate) mod config;
pub(crate) mod repository;

pub use config::{BatchingParameters, ModelConfig, SslConfig, TextProtoError, VersionPolicy};
pub use repository::{
    AdmittedModels, ModelAdmission, ModelCode, ModelFileError, ModelRepository, ModelSource,
    ModelState, ResolveError, ResolvedModel, ServedModel, State, VersionState, MAX_MODEL_BYTES,
    MODEL_FILE, SEALED_FILE,
};
