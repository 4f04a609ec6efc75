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

/// Inferences shorter than this may run on the inference pool's short lane when its other
/// threads are all taken (`api::pool`): long enough for a one-row run of small models on a
/// busy machine, short enough that a peer filling the lane with such runs delays others little
/// and that image models (MobileNetV2 takes about 5 ms here) never run beside the others there.
pub const SHORT_RUN: Duration = Duration::from_millis(1);

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

/// How long a model's inferences have been taking, by size, to decide where the next one runs.
///
/// The times are kept apart by the size of the run's inputs (in powers of two of their
/// elements): one average over every run let a requester's large runs (a fill of 128 MB taking a
/// quarter of a second) make a stranger's one-row runs look slow, which then queued behind the
/// large ones on the inference threads instead of taking microseconds on an I/O thread.
#[derive(Debug)]
pub struct RunCost {
    /// Per size class (`class`): moving average of the run time in nanoseconds (0: never run).
    average_nanos: [AtomicU64; CLASSES],
}

/// Size classes: 0 elements, then `[2^(k-1), 2^k)` for class k up to 64.
const CLASSES: usize = 65;

/// The size class of a run over `elements` input elements.
fn class(elements: usize) -> usize {
    (usize::BITS - elements.leading_zeros()) as usize
}

impl Default for RunCost {
    fn default() -> Self {
        Self {
            average_nanos: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl RunCost {
    /// Records a run over `elements` input elements that took `took`.
    pub fn record(&self, elements: usize, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let average = &self.average_nanos[class(elements)];
        // Races between concurrent updates lose a sample at worst; this is a hint.
        let old = average.load(Ordering::Relaxed);
        // A sample up to twice SHORT_RUN counts for at most four times the average: one run
        // that was slow for a reason of the moment (its thread preempted on a busy machine)
        // does not move its size off the quick path, and runs that stay slow move it within a
        // few runs. A longer sample counts in full: otherwise a peer could run one long run
        // (a cost its inputs' size does not show) for every three cheap ones and keep the
        // average where it was.
        let new = if old == 0 {
            nanos.max(1)
        } else {
            let nanos = if u128::from(nanos) > 2 * SHORT_RUN.as_nanos() {
                nanos
            } else {
                nanos.min(old.saturating_mul(4))
            };
            (old - old / 8).saturating_add(nanos / 8).max(1)
        };
        average.store(new, Ordering::Relaxed);
    }

    /// Whether a run over `elements` input elements is expected to take less than
    /// [`QUICK_RUN`]: runs of its size, or if none has been seen, of the next larger size that
    /// has, have been that quick on average (a larger input, or a shape the engine has not
    /// prepared a plan for yet, may take longer; a smaller one is taken to be no slower).
    pub fn is_quick(&self, elements: usize) -> bool {
        self.expected(elements)
            .is_some_and(|avg| u128::from(avg) < QUICK_RUN.as_nanos())
    }

    /// Whether a run over `elements` input elements is expected to take less than
    /// [`SHORT_RUN`], judged as [`RunCost::is_quick`] judges.
    pub fn is_short(&self, elements: usize) -> bool {
        self.expected(elements)
            .is_some_and(|avg| u128::from(avg) < SHORT_RUN.as_nanos())
    }

    /// The average time in nanoseconds of runs of the size of `elements`, or of the next larger
    /// size seen; None if no run that large has been seen.
    fn expected(&self, elements: usize) -> Option<u64> {
        self.average_nanos[class(elements)..]
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .find(|&avg| avg != 0)
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
        assert!(c.is_quick(0));
        assert!(!c.is_quick(128), "larger than any quick run");
    }

    #[test]
    fn large_runs_do_not_make_small_ones_look_slow() {
        let c = RunCost::default();
        c.record(64, Duration::from_micros(5));
        for _ in 0..100 {
            c.record(33_554_432, Duration::from_millis(250));
        }
        assert!(
            c.is_quick(64),
            "a stranger's large runs moved small ones off"
        );
        assert!(!c.is_quick(33_554_432));
        assert!(
            !c.is_quick(1 << 20),
            "between them: taken as the larger size"
        );
        assert!(!c.is_quick(usize::MAX));
    }

    #[test]
    fn one_slow_run_does_not_move_a_model_off_the_quick_path_but_runs_that_stay_slow_do() {
        let c = RunCost::default();
        for _ in 0..20 {
            c.record(64, Duration::from_micros(5));
        }
        c.record(64, Duration::from_millis(1)); // preempted
        assert!(c.is_quick(64), "one slow run moved it off");
        let mut off = 0;
        while c.is_quick(64) {
            c.record(64, Duration::from_millis(1));
            off += 1;
            assert!(off < 20, "runs that stay slow never moved it off");
        }
        let mut back = 0;
        while !c.is_quick(64) {
            c.record(64, Duration::from_micros(5));
            back += 1;
            assert!(back < 100, "the average never came down");
        }
    }

    #[test]
    fn long_runs_between_cheap_ones_are_not_hidden_by_them() {
        let c = RunCost::default();
        for _ in 0..20 {
            c.record(64, Duration::from_micros(20));
        }
        // One run of a second for every three cheap ones, a thousand times.
        for _ in 0..1000 {
            c.record(64, Duration::from_secs(1));
            assert!(!c.is_short(64), "a run of a second passed for short");
            for _ in 0..3 {
                c.record(64, Duration::from_micros(20));
            }
        }
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
