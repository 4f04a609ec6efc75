//! What every engine shares: the [`Engine`] and [`LoadedModel`] traits, the [`EngineError`] they
//! return, and the [`RunCost`] that decides where a run happens. A model's signatures are
//! `teeserve-tensor`'s, which a requester reads too.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use teeserve_tensor::{Signatures, Tensor};

/// Why an engine could not start, load a model, or run it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine's shared library could not be loaded.
    #[error("{engine} library {path}: {detail}")]
    Library {
        /// The engine.
        engine: &'static str,
        /// The library file given.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// This build does not contain the engine.
    #[error(
        "this teeserve was built without the {engine} engine (build with `--features {feature}`)"
    )]
    NotBuilt {
        /// The engine.
        engine: &'static str,
        /// The cargo feature that adds it.
        feature: &'static str,
    },
    /// The bytes are not a model in a format the engine reads, or its signature cannot be read.
    #[error("{0}")]
    Format(String),
    /// The engine cannot load or prepare this model.
    #[error("{detail}")]
    Load {
        /// The engine.
        engine: &'static str,
        /// What it could not do, and why.
        detail: String,
    },
    /// An input could not be handed to the engine.
    #[error("input {name:?}: {detail}")]
    Input {
        /// The input.
        name: String,
        /// What was wrong.
        detail: String,
    },
    /// Running the model failed.
    #[error("{detail}")]
    Run {
        /// The engine.
        engine: &'static str,
        /// The engine's message.
        detail: String,
    },
    /// The outputs of a run take more memory than a response may hold.
    #[error("output {name:?}: the outputs take at least {bytes} bytes, more than the {limit} bytes a response's outputs may take (--max_response_tensor_bytes)")]
    OutputTooLarge {
        /// The output that went past the bound.
        name: String,
        /// The outputs' bytes up to and including it.
        bytes: u128,
        /// The bound.
        limit: usize,
    },
    /// An output could not be read back from the engine.
    #[error("output {name:?}: {detail}")]
    Output {
        /// The output.
        name: String,
        /// What was wrong.
        detail: String,
    },
}

/// Inferences shorter than this may run on the thread that decoded the request instead of being
/// handed to an inference worker thread: the two thread switches of the hand-off cost more than
/// such a model computes, and holding an I/O thread this long delays no other request noticeably.
pub const QUICK_RUN: Duration = Duration::from_micros(100);

/// The memory a run's outputs may still take, counted down as they are copied out of an
/// engine, so that an output no response could carry is refused before its copy is made
/// (a model can make outputs far larger than its inputs: an outer product, a fill whose shape
/// is an input's value).
#[derive(Debug, Clone, Copy)]
pub struct OutputRoom {
    limit: usize,
    taken: u128,
}

impl OutputRoom {
    /// Room for `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { limit, taken: 0 }
    }

    /// Takes room for output `name` of `elements` elements of `element_bytes` each, or refuses.
    pub fn take(
        &mut self,
        name: &str,
        elements: u128,
        element_bytes: usize,
    ) -> Result<(), EngineError> {
        self.taken = self
            .taken
            .saturating_add(elements.saturating_mul(element_bytes as u128));
        if self.taken > self.limit as u128 {
            return Err(EngineError::OutputTooLarge {
                name: name.to_owned(),
                bytes: self.taken,
                limit: self.limit,
            });
        }
        Ok(())
    }
}

/// How long a model's inferences have been taking, to decide where the next one runs.
#[derive(Debug, Default)]
pub struct RunCost {
    /// Moving average of the run time in nanoseconds (0: never run).
    average_nanos: AtomicU64,
    /// The most input elements of a run that took less than [`QUICK_RUN`].
    quick_elements: AtomicU64,
}

impl RunCost {
    /// Records a run over `elements` input elements that took `took`.
    pub fn record(&self, elements: usize, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // Races between concurrent updates lose a sample at worst; this is a hint.
        let old = self.average_nanos.load(Ordering::Relaxed);
        let new = if old == 0 {
            nanos.max(1)
        } else {
            (old - old / 8).saturating_add(nanos / 8).max(1)
        };
        self.average_nanos.store(new, Ordering::Relaxed);
        if took < QUICK_RUN {
            self.quick_elements
                .fetch_max(elements as u64, Ordering::Relaxed);
        }
    }

    /// Whether a run over `elements` input elements is expected to take less than
    /// [`QUICK_RUN`]: runs have been that quick on average, and on inputs at least this large
    /// (a larger input, or a shape the engine has not prepared a plan for yet, may take longer).
    pub fn is_quick(&self, elements: usize) -> bool {
        let avg = self.average_nanos.load(Ordering::Relaxed);
        avg != 0
            && u128::from(avg) < QUICK_RUN.as_nanos()
            && elements as u64 <= self.quick_elements.load(Ordering::Relaxed)
    }
}

/// A loaded model, safe to run from many threads at once.
pub trait LoadedModel: Send + Sync + std::fmt::Debug {
    /// Its signatures.
    fn signatures(&self) -> &Signatures;
    /// The engine that runs it (the `runtime` label of the latency metric).
    fn engine(&self) -> &'static str;
    /// Runs one inference of signature `signature` (one of [`LoadedModel::signatures`], the
    /// empty name for [`DEFAULT_SIGNATURE`](teeserve_tensor::DEFAULT_SIGNATURE)); inputs and
    /// outputs are in signature order. Outputs that take more than `max_output_bytes` in all are
    /// refused ([`EngineError::OutputTooLarge`]) before they are copied out of the engine.
    fn run_within(
        &self,
        signature: &str,
        inputs: Vec<Tensor>,
        max_output_bytes: usize,
    ) -> Result<Vec<Tensor>, EngineError>;
    /// [`LoadedModel::run_within`] with no bound on the outputs (tools and tests; the server
    /// always runs within `--max_response_tensor_bytes`).
    fn run(&self, signature: &str, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        self.run_within(signature, inputs, usize::MAX)
    }
    /// How long its inferences have been taking (kept by the caller of `run`).
    fn cost(&self) -> &RunCost;
}

/// An inference engine.
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// Its name (`tract`).
    fn name(&self) -> &'static str;
    /// Loads an ONNX model from memory.
    fn load(&self, onnx_bytes: &[u8]) -> Result<Arc<dyn LoadedModel>, EngineError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_is_quick_only_after_quick_runs_on_inputs_as_large() {
        let c = RunCost::default();
        assert!(!c.is_quick(64), "never run: unknown");
        c.record(64, Duration::from_micros(5));
        assert!(c.is_quick(64));
        assert!(c.is_quick(10));
        assert!(!c.is_quick(65), "larger than any quick run");
    }

    #[test]
    fn slow_runs_move_a_model_off_the_quick_path_and_back_as_they_age() {
        let c = RunCost::default();
        c.record(64, Duration::from_micros(5));
        c.record(64, Duration::from_millis(20)); // e.g. a plan made for a new shape
        assert!(!c.is_quick(64));
        let mut back = 0;
        while !c.is_quick(64) {
            c.record(64, Duration::from_micros(5));
            back += 1;
            assert!(back < 100, "the average never came down");
        }
        assert!(
            back > 10,
            "one slow run should weigh for a while, came back after {back}"
        );
    }

    #[test]
    fn a_slow_model_is_never_quick() {
        let c = RunCost::default();
        for _ in 0..50 {
            c.record(1, QUICK_RUN);
        }
        assert!(!c.is_quick(1));
    }
}
