//! Dynamic batching (`--enable_batching`): requests for the same model version are queued and
//! run together along dimension 0, up to `max_batch_size` rows or `batch_timeout_micros`. A full
//! queue answers UNAVAILABLE (HTTP 503), as TF Serving's batch scheduler does.
//!
//! A model whose rows depend on each other (a batch statistic, attention across the batch)
//! would give one requester an output computed over another's inputs. So a batch holds the
//! requests of one connection only, unless the owner declared the model row-independent in
//! its admitted-models list ([`crate::models::ModelAdmission::row_independent`]); the
//! attestation document says which models may share batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::Code;

use crate::api::error::ApiError;
use crate::api::metrics::Metrics;
use crate::engine::LoadedModel;
use crate::models::config::BatchingParameters;
use crate::models::ResolvedModel;
use teeserve_tensor::Tensor;

struct Job {
    inputs: Vec<Tensor>,
    rows: usize,
    /// Jobs of one group may share a batch: the connection, or 0 for any requester.
    group: u64,
    reply: oneshot::Sender<Result<Vec<Tensor>, ApiError>>,
}

/// Queues and batch threads, one queue per loaded model.
pub struct Batcher {
    params: BatchingParameters,
    queues: Mutex<HashMap<(usize, String), mpsc::Sender<Job>>>,
    threads: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Batcher({:?})", self.params)
    }
}

impl Batcher {
    /// A batcher with these parameters.
    pub fn new(params: BatchingParameters, metrics: Arc<Metrics>) -> Self {
        Self {
            threads: Arc::new(Semaphore::new(params.num_batch_threads.max(1))),
            params,
            queues: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Queues a request and waits for its rows of the batch's outputs.
    pub async fn submit(
        &self,
        target: &ResolvedModel,
        signature: &str,
        inputs: Vec<Tensor>,
    ) -> Result<Vec<Tensor>, ApiError> {
        let rows = inputs
            .first()
            .and_then(|t| t.shape.first().copied())
            .unwrap_or(0);
        let batchable = rows > 0
            && inputs.iter().all(|t| t.shape.first() == Some(&rows))
            && target
                .model
                .signatures()
                .get(signature)
                .is_some_and(has_batch_dimension);
        let signature: Arc<str> = signature.into();
        if !batchable || rows > self.params.max_batch_size {
            return run_now(
                target.model.clone(),
                signature,
                inputs,
                self.threads.clone(),
            )
            .await;
        }
        let key = (
            Arc::as_ptr(&target.model) as *const () as usize,
            signature.to_string(),
        );
        let tx = {
            let mut q = self
                .queues
                .lock()
                .map_err(|_| ApiError::new(Code::Internal, "batch queue lock poisoned"))?;
            q.entry(key)
                .or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(queue_capacity(&self.params));
                    tokio::spawn(batch_loop(
                        rx,
                        target.model.clone(),
                        signature.clone(),
                        target.name.clone(),
                        self.params.clone(),
                        self.threads.clone(),
                        self.metrics.clone(),
                    ));
                    tx
                })
                .clone()
        };
        let group = if target.row_independent {
            0
        } else {
            crate::api::scope::current().connection
        };
        let (reply, rx) = oneshot::channel();
        tx.try_send(Job {
            inputs,
            rows,
            group,
            reply,
        })
        .map_err(|_| {
            ApiError::new(
                Code::Unavailable,
                format!(
                    "The batch scheduling queue for model {} is full; retry later",
                    target.name
                ),
            )
        })?;
        rx.await
            .map_err(|_| ApiError::new(Code::Internal, "the batch was dropped"))?
    }
}

/// Whether every input and output of a signature has a leading dimension of any size, the
/// batch dimension requests are joined and split along. An output without one (a scalar, or a
/// fixed first dimension) cannot be split by request: TF Serving refuses to batch such a
/// signature, and a batch would give every request the output computed over all of them.
pub(crate) fn has_batch_dimension(sig: &crate::engine::Signature) -> bool {
    sig.inputs
        .iter()
        .chain(&sig.outputs)
        .all(|s| s.shape.first() == Some(&-1))
}

async fn run_now(
    model: Arc<dyn LoadedModel>,
    signature: Arc<str>,
    inputs: Vec<Tensor>,
    threads: Arc<Semaphore>,
) -> Result<Vec<Tensor>, ApiError> {
    let permit = threads
        .acquire_owned()
        .await
        .map_err(|_| ApiError::new(Code::Unavailable, "shutting down"))?;
    tokio::task::spawn_blocking(move || {
        let _p = permit;
        model.run(&signature, inputs)
    })
    .await
    .map_err(|e| ApiError::new(Code::Internal, e.to_string()))?
    .map_err(ApiError::from)
}

/// The most requests waiting for a batch, per model: `max_enqueued_batches` full batches.
fn queue_capacity(p: &BatchingParameters) -> usize {
    p.max_enqueued_batches
        .saturating_mul(p.max_batch_size)
        .clamp(1, 1 << 20)
}

async fn batch_loop(
    mut rx: mpsc::Receiver<Job>,
    model: Arc<dyn LoadedModel>,
    signature: Arc<str>,
    name: String,
    p: BatchingParameters,
    threads: Arc<Semaphore>,
    metrics: Arc<Metrics>,
) {
    // Jobs of another group than the batch being formed, in arrival order, for the next ones.
    // They count against the queue's capacity: while it is full of them, no more are taken
    // from the channel, so that a full queue still answers UNAVAILABLE.
    let mut held: std::collections::VecDeque<Job> = std::collections::VecDeque::new();
    let cap = queue_capacity(&p);
    loop {
        let first = match held.pop_front() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => break,
            },
        };
        let group = first.group;
        let mut jobs = vec![first];
        let mut rows = jobs[0].rows;
        let mut i = 0;
        while i < held.len() && rows < p.max_batch_size {
            if held[i].group == group && rows + held[i].rows <= p.max_batch_size {
                if let Some(j) = held.remove(i) {
                    rows += j.rows;
                    jobs.push(j);
                }
            } else {
                i += 1;
            }
        }
        let deadline = Instant::now() + Duration::from_micros(p.batch_timeout_micros);
        while rows < p.max_batch_size && held.len() < cap {
            let next = if p.batch_timeout_micros == 0 {
                rx.try_recv().ok()
            } else {
                tokio::time::timeout_at(deadline.into(), rx.recv())
                    .await
                    .unwrap_or_default()
            };
            match next {
                Some(j) if j.group != group => held.push_back(j),
                Some(j) if rows + j.rows <= p.max_batch_size => {
                    rows += j.rows;
                    jobs.push(j);
                }
                Some(j) => {
                    // Does not fit: run it in the next batch.
                    let model = model.clone();
                    let signature = signature.clone();
                    let threads = threads.clone();
                    tokio::spawn(async move {
                        let r = run_now(model, signature, j.inputs, threads).await;
                        let _ = j.reply.send(r);
                    });
                    break;
                }
                None => break,
            }
        }
        let permit = match threads.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return,
        };
        metrics.batch(&name, rows);
        let (model, signature) = (model.clone(), signature.clone());
        let (threads, name) = (threads.clone(), name.clone());
        tokio::spawn(run_batch(
            jobs, rows, model, signature, threads, name, permit,
        ));
    }
}

/// Runs one batch: the jobs' inputs concatenated along the batch dimension, one run, and each
/// job answered with its rows of the outputs (or each job run alone, when an output has no
/// batch dimension to split).
async fn run_batch(
    jobs: Vec<Job>,
    rows: usize,
    model: Arc<dyn LoadedModel>,
    signature: Arc<str>,
    threads: Arc<Semaphore>,
    name: String,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let n_inputs = jobs[0].inputs.len();
    let merged: Result<Vec<Tensor>, _> = (0..n_inputs)
        .map(|i| {
            let parts: Vec<&Tensor> = jobs.iter().map(|j| &j.inputs[i]).collect();
            Tensor::concat_rows(&parts)
        })
        .collect();
    let result = match merged {
        Ok(inputs) => {
            let model = model.clone();
            let signature = signature.clone();
            tokio::task::spawn_blocking(move || {
                let _p = permit;
                model.run(&signature, inputs)
            })
            .await
            .map_err(|e| ApiError::new(Code::InvalidArgument, e.to_string()))
            .and_then(|r| r.map_err(ApiError::from))
        }
        Err(e) => Err(ApiError::from(e)),
    };
    if let Ok(outs) = &result {
        if jobs.len() > 1 && outs.iter().any(|t| t.shape.first() != Some(&rows)) {
            // An output the batch cannot be split along: its value depends on every
            // request of the batch, so no request may see it. Each runs on its own.
            tracing::warn!(
                "model {name}: an output has no batch dimension; the {} requests of the batch run one by one",
                jobs.len()
            );
            for j in jobs {
                let r = run_now(model.clone(), signature.clone(), j.inputs, threads.clone()).await;
                let _ = j.reply.send(r);
            }
            return;
        }
    }
    let mut offset = 0;
    for j in jobs {
        let r = match &result {
            Ok(outs) => Ok(outs
                .iter()
                .map(|t| {
                    if t.shape.first() == Some(&rows) {
                        t.slice_rows(offset, offset + j.rows)
                    } else {
                        // One job: its own output, whole.
                        t.clone()
                    }
                })
                .collect()),
            Err(e) => Err(e.clone()),
        };
        offset += j.rows;
        let _ = j.reply.send(r);
    }
}
