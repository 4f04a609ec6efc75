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
use crate::engine::{LoadedModel, OutputRoom};
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
    /// The most bytes one request's outputs may take (a batch's: that, times its requests).
    max_output_bytes: usize,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Batcher({:?})", self.params)
    }
}

impl Batcher {
    /// A batcher with these parameters.
    /// A batcher whose requests' outputs may take `max_output_bytes` each
    /// (`--max_response_tensor_bytes`).
    pub fn new(params: BatchingParameters, metrics: Arc<Metrics>, max_output_bytes: usize) -> Self {
        Self {
            threads: Arc::new(Semaphore::new(params.num_batch_threads.max(1))),
            params,
            queues: Mutex::new(HashMap::new()),
            metrics,
            max_output_bytes,
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
            return self.target(target, signature).run_now(inputs).await;
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
                        self.target(target, signature.clone()),
                        target.name.clone(),
                        self.params.clone(),
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

    fn target(&self, target: &ResolvedModel, signature: Arc<str>) -> Target {
        Target {
            model: target.model.clone(),
            signature,
            threads: self.threads.clone(),
            max_output_bytes: self.max_output_bytes,
        }
    }
}

/// What a model's batches run on: the model and signature, the batch threads, and the bound
/// on one request's outputs.
#[derive(Clone)]
struct Target {
    model: Arc<dyn LoadedModel>,
    signature: Arc<str>,
    threads: Arc<Semaphore>,
    max_output_bytes: usize,
}

impl Target {
    /// Runs one request's inputs on their own, on a batch thread.
    async fn run_now(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, ApiError> {
        let permit = self
            .threads
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::new(Code::Unavailable, "shutting down"))?;
        self.run(permit, inputs, self.max_output_bytes).await
    }

    /// Whether one request's outputs (its rows of a batch's) are within its bound, checked
    /// output by output as an engine checks them ([`OutputRoom`]).
    fn within_bound(&self, outs: &[Tensor]) -> Result<(), ApiError> {
        let names = self
            .model
            .signatures()
            .get(&self.signature)
            .map(|s| &s.outputs);
        let mut room = OutputRoom::new(self.max_output_bytes);
        for (i, t) in outs.iter().enumerate() {
            let name = names
                .and_then(|n| n.get(i))
                .map_or("output", |o| o.name.as_str());
            room.take(name, t.len() as u128, t.dtype().element_bytes())?;
        }
        Ok(())
    }

    /// Runs `inputs` on the batch thread `permit` holds.
    async fn run(
        &self,
        permit: tokio::sync::OwnedSemaphorePermit,
        inputs: Vec<Tensor>,
        max_output_bytes: usize,
    ) -> Result<Vec<Tensor>, ApiError> {
        let (model, signature) = (self.model.clone(), self.signature.clone());
        tokio::task::spawn_blocking(move || {
            let _p = permit;
            model.run_within(&signature, inputs, max_output_bytes)
        })
        .await
        .map_err(|e| ApiError::new(Code::Internal, e.to_string()))?
        .map_err(ApiError::from)
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

/// The most requests waiting for a batch, per model: `max_enqueued_batches` full batches.
fn queue_capacity(p: &BatchingParameters) -> usize {
    p.max_enqueued_batches
        .saturating_mul(p.max_batch_size)
        .clamp(1, 1 << 20)
}

/// A batch being formed: the jobs of one group, until it is full or its time is up.
struct Forming {
    group: u64,
    jobs: Vec<Job>,
    rows: usize,
    /// `batch_timeout_micros` after its first job.
    deadline: Instant,
}

/// Forms and starts a model's batches. Each group's batch forms side by side with the others',
/// and closes when it is full or when `batch_timeout_micros` have passed since its first job:
/// one requester's many connections (many groups) do not make another's batch wait for theirs
/// to fill in turn. At most `max_enqueued_batches` full batches of jobs wait; while that many
/// do, no more are taken from the channel, whose senders then answer UNAVAILABLE.
async fn batch_loop(
    mut rx: mpsc::Receiver<Job>,
    target: Target,
    name: String,
    p: BatchingParameters,
    metrics: Arc<Metrics>,
) {
    let cap = queue_capacity(&p);
    let mut b = Batches {
        open: std::collections::VecDeque::new(),
        waiting: 0,
        max_batch_size: p.max_batch_size,
        timeout: Duration::from_micros(p.batch_timeout_micros),
        start: Start {
            target,
            name,
            metrics,
        },
    };
    let mut ended = false;
    loop {
        // Every job already queued joins its group's batch.
        while b.waiting < cap && !ended {
            match rx.try_recv() {
                Ok(j) => b.place(j).await,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => ended = true,
            }
        }
        b.start_due(ended).await;
        if ended && b.open.is_empty() {
            return;
        }
        // Then wait for a job, or for the first batch's time to be up.
        let first = b.open.iter().map(|f| f.deadline).min();
        let next = match first {
            Some(d) if b.waiting >= cap => {
                tokio::time::sleep_until(d.into()).await;
                continue;
            }
            Some(d) => match tokio::time::timeout_at(d.into(), rx.recv()).await {
                Ok(j) => j,
                Err(_) => continue,
            },
            None => rx.recv().await,
        };
        match next {
            Some(j) => b.place(j).await,
            None => ended = true,
        }
    }
}

/// A model's batches being formed, one per group, and the jobs they hold.
struct Batches {
    open: std::collections::VecDeque<Forming>,
    waiting: usize,
    max_batch_size: usize,
    timeout: Duration,
    start: Start,
}

impl Batches {
    /// Adds a job to its group's batch, or opens one for it; a job that does not fit in its
    /// group's batch starts that batch and opens the next.
    async fn place(&mut self, job: Job) {
        self.waiting += 1;
        if let Some(i) = self.open.iter().position(|b| b.group == job.group) {
            if self.open[i].rows + job.rows <= self.max_batch_size {
                self.open[i].rows += job.rows;
                self.open[i].jobs.push(job);
                return;
            }
            self.start_at(i).await;
        }
        self.open.push_back(Forming {
            group: job.group,
            rows: job.rows,
            deadline: Instant::now() + self.timeout,
            jobs: vec![job],
        });
    }

    /// Starts the batches that are full or whose time is up (all of them once the queue has
    /// ended), the oldest first.
    async fn start_due(&mut self, ended: bool) {
        let now = Instant::now();
        while let Some(i) = self
            .open
            .iter()
            .position(|b| ended || b.rows >= self.max_batch_size || b.deadline <= now)
        {
            self.start_at(i).await;
        }
    }

    async fn start_at(&mut self, i: usize) {
        if let Some(b) = self.open.remove(i) {
            self.waiting -= b.jobs.len();
            self.start.batch(b).await;
        }
    }
}

/// Where a model's batches start: its target, its name and the metrics that count batches.
struct Start {
    target: Target,
    name: String,
    metrics: Arc<Metrics>,
}

impl Start {
    /// Starts a batch once a batch thread is free.
    async fn batch(&self, b: Forming) {
        let Ok(permit) = self.target.threads.clone().acquire_owned().await else {
            return;
        };
        self.metrics.batch(&self.name, b.rows);
        tokio::spawn(run_batch(
            b.jobs,
            b.rows,
            self.target.clone(),
            self.name.clone(),
            permit,
        ));
    }
}

/// Runs one batch: the jobs' inputs concatenated along the batch dimension, one run, and each
/// job answered with its rows of the outputs (or each job run alone, when an output has no
/// batch dimension to split).
async fn run_batch(
    jobs: Vec<Job>,
    rows: usize,
    target: Target,
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
            let bound = target.max_output_bytes.saturating_mul(jobs.len());
            target.run(permit, inputs, bound).await
        }
        Err(e) => Err(ApiError::from(e)),
    };
    // Outputs past the bound of the whole batch: each request is held to its own bound, so
    // that one request's large rows do not fail the others' (which may be other peers').
    if jobs.len() > 1
        && result
            .as_ref()
            .is_err_and(|e| e.code == Code::ResourceExhausted)
    {
        for j in jobs {
            let r = target.run_now(j.inputs).await;
            let _ = j.reply.send(r);
        }
        return;
    }
    if let Ok(outs) = &result {
        if jobs.len() > 1 && outs.iter().any(|t| t.shape.first() != Some(&rows)) {
            // An output the batch cannot be split along: its value depends on every
            // request of the batch, so no request may see it. Each runs on its own.
            tracing::warn!(
                "model {name}: an output has no batch dimension; the {} requests of the batch run one by one",
                jobs.len()
            );
            for j in jobs {
                let r = target.run_now(j.inputs).await;
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
        // Each request's rows within its own bound, as if it had run alone.
        let r = r.and_then(|outs: Vec<Tensor>| target.within_bound(&outs).map(|()| outs));
        let _ = j.reply.send(r);
    }
}
