//! Inference engines: for ONNX models tract (pure Rust, the default) and, when built with the
//! `onnxruntime` feature, ONNX Runtime loaded at run time; for TensorFlow SavedModels,
//! TensorFlow loaded at run time. A model's format picks its engine. One module per engine;
//! what they share is in `model.rs`.

mod model;
mod onnx;
pub mod onnx_light;
#[cfg(feature = "onnxruntime")]
mod onnxruntime;
#[cfg(feature = "onnxruntime")]
mod ort_weights;
pub mod tensorflow;
mod tract;

use std::sync::Arc;

pub use model::{Engine, EngineError, LoadedModel, OutputRoom, RunCost, QUICK_RUN, SHORT_RUN};
#[cfg(feature = "onnxruntime")]
pub use onnxruntime::OnnxRuntimeEngine;
pub use teeserve_tensor::{
    signature_def, Signature, Signatures, TensorSpec, DEFAULT_SIGNATURE, PREDICT_METHOD,
};
pub use tensorflow::{TensorFlowEngine, TensorFlowOptions};
pub use tract::TractEngine;

/// Which engine `teeserve serve` runs models on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EngineChoice {
    /// tract (pure Rust).
    #[default]
    Tract,
    /// ONNX Runtime, loaded from this library file.
    OnnxRuntime {
        /// The path of libonnxruntime.
        lib: std::path::PathBuf,
        /// Threads per inference (the session's intra-op pool); 0: chosen per inference from
        /// the load (the workers' count alone, one beside other inferences).
        intra_op_threads: usize,
    },
}

impl EngineChoice {
    /// Starts the engine; `workers` is the number of inferences that may run at once.
    pub fn start(&self, workers: usize) -> Result<Arc<dyn Engine>, EngineError> {
        match self {
            EngineChoice::Tract => Ok(Arc::new(TractEngine)),
            #[cfg(feature = "onnxruntime")]
            EngineChoice::OnnxRuntime {
                lib,
                intra_op_threads,
            } => {
                let (threads, by_load) = match *intra_op_threads {
                    0 => (onnxruntime::default_intra_op_threads(workers), true),
                    n => (n, false),
                };
                Ok(Arc::new(OnnxRuntimeEngine::new(lib, threads, by_load)?))
            }
            #[cfg(not(feature = "onnxruntime"))]
            EngineChoice::OnnxRuntime { .. } => {
                let _ = workers;
                Err(EngineError::NotBuilt {
                    engine: "ONNX Runtime",
                    feature: "onnxruntime",
                })
            }
        }
    }
}
