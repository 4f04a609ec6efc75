//! `teeserve-load`: a requester that keeps a TF Serving-compatible endpoint busy and counts
//! every request. Each connection checks the server's attestation before it carries data
//! (`--attest`, as `teeserve predict` does); a request that meets a broken or refused
//! connection, or UNAVAILABLE, is tried again on a new connection after a backoff; an answer
//! counts only if its outputs equal the reference (the first answer, or `--expected`).
//!
//! The summary is one JSON line on stdout: requests answered, wrong, failed and retried,
//! latency percentiles, the versions that answered; overall and per phase. SIGUSR1 starts a
//! new phase (to tell "during the failure" from before and after); SIGINT or SIGTERM ends the
//! run early, with the requests in hand finished first.
#![forbid(unsafe_code, unused_must_use)]

mod client;
mod stats;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::Value;
use teeserve_attest::{Collateral, Policy, TrustAnchor};
use teeserve_client::requester::{self, Connection};

use client::{Answer, Attest, Endpoint, Outputs, Prepared};
use stats::{Outcome, Stats};

/// Keep a TF Serving-compatible endpoint busy over gRPC or REST with TLS, checking its
/// attestation on every connection, retrying what a requester should retry, and counting
/// every request. Prints one JSON summary line.
#[derive(Debug, Parser)]
#[command(name = "teeserve-load", version)]
struct Args {
    /// The endpoint, HOST:PORT (gRPC port, or REST port with --rest).
    #[arg(long, value_name = "HOST:PORT")]
    server: String,
    /// Model name.
    #[arg(long)]
    model: String,
    /// Input: a .npy array for the model's only input, or JSON as `teeserve predict --input`
    /// takes it (a nested list, or a TF Serving body with "instances" or "inputs").
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Rows per request: the input's rows are repeated (or cut) to this many.
    #[arg(long, value_name = "ROWS")]
    batch: Option<usize>,
    /// Use the REST API instead of gRPC.
    #[arg(long)]
    rest: bool,
    /// CA certificate (PEM) that signs the server's TLS certificate.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, value_name = "PEM", requires = "key")]
    cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(long, value_name = "PEM", requires = "cert")]
    key: Option<PathBuf>,
    /// The name expected in the server's certificate, also sent as SNI (default: the host of
    /// --server).
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// Before a connection carries data, check that the server's TLS key lives in a TEE this
    /// policy (TOML) admits, over a fresh nonce, as `teeserve predict --attest` does; every
    /// handshake of that connection must then present the attested key.
    #[arg(long, value_name = "POLICY.toml")]
    attest: Option<PathBuf>,
    /// Root certificate to trust for attestation instead of the Intel SGX Root CA.
    #[arg(long, value_name = "PEM", requires = "attest")]
    root: Option<PathBuf>,
    /// Collateral bundle for attestation (default: the one the server publishes).
    #[arg(long, value_name = "FILE", requires = "attest")]
    collateral: Option<PathBuf>,
    /// Ask for the server's standing attestation document only, never a quote over a fresh
    /// nonce (by default one is asked for when the server's TLS key is one the host gave).
    #[arg(long = "no-nonce", requires = "attest")]
    no_nonce: bool,
    /// Connections (each with one request at a time).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seconds to run (SIGINT or SIGTERM ends the run earlier; a second one ends the process
    /// at once, without the summary).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many requests.
    #[arg(long)]
    requests: Option<u64>,
    /// The expected outputs (JSON: an object by output name, or `teeserve predict`'s output
    /// with its "outputs"); default: the first answer.
    #[arg(long, value_name = "FILE")]
    expected: Option<PathBuf>,
    /// Attempts per request before it counts as failed.
    #[arg(long, default_value_t = 10)]
    max_attempts: u32,
    /// Seconds an attempt (opening and attesting a connection, or one request) may take; one
    /// that takes longer is abandoned and tried again, as a broken connection is.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// First wait before a retry, milliseconds; doubled each time up to 1 s, with jitter.
    #[arg(long, default_value_t = 25)]
    backoff_ms: u64,
    /// Ask for a receipt of every answer (x-teeserve-receipt: 1); an answer without one fails.
    #[arg(long)]
    receipt: bool,
    /// Write every request's latency (milliseconds, one per line) to this file.
    #[arg(long, value_name = "FILE")]
    latencies: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    let code = match run(args) {
        Ok(()) => 0,
        Err(e) => {
            let parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", parts.join(": "));
            2
        }
    };
    std::process::exit(code);
}

fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// `--expected`: the outputs by name.
fn read_expected(path: &std::path::Path) -> Result<serde_json::Map<String, Value>> {
    let v: Value = serde_json::from_slice(&read(path)?)
        .with_context(|| format!("--expected {} is not JSON", path.display()))?;
    let outputs = match v.get("outputs") {
        Some(o) => o.clone(),
        None => v,
    };
    match outputs {
        Value::Object(m) => Ok(m),
        _ => anyhow::bail!(
            "--expected {}: give an object of outputs by name",
            path.display()
        ),
    }
}

fn endpoint(a: &Args) -> Result<Endpoint> {
    let server_name = a
        .server_name
        .clone()
        .unwrap_or_else(|| teeserve_client::host_of(&a.server));
    let ca = match &a.ca {
        Some(p) => Some(
            teeserve_client::ca_verifier(&read(p)?)
                .map_err(|e| anyhow::anyhow!("--ca {}: {e}", p.display()))?,
        ),
        None => None,
    };
    anyhow::ensure!(
        ca.is_some() || a.attest.is_some(),
        "give --ca to verify the server's certificate, or --attest to rely on its attestation"
    );
    let identity = match (&a.cert, &a.key) {
        // The key's PEM is wiped once parsed; errors name the file.
        (Some(c), Some(k)) => Some((
            teeserve_tls::load_certs(c).map_err(|e| anyhow::anyhow!("--cert: {e}"))?,
            teeserve_tls::load_key(k).map_err(|e| anyhow::anyhow!("--key: {e}"))?,
        )),
        _ => None,
    };
    let attest = match &a.attest {
        Some(p) => {
            let text = String::from_utf8(read(p)?)
                .with_context(|| format!("--attest {} is not UTF-8", p.display()))?;
            let policy =
                Policy::from_toml(&text).with_context(|| format!("--attest {}", p.display()))?;
            let anchor = match &a.root {
                Some(r) => TrustAnchor::from_pem(&read(r)?)
                    .with_context(|| format!("--root {}", r.display()))?,
                None => TrustAnchor::intel(),
            };
            let collateral = match &a.collateral {
                Some(c) => Some(
                    Collateral::from_json(&read(c)?)
                        .with_context(|| format!("--collateral {}", c.display()))?,
                ),
                None => None,
            };
            Some(Attest {
                policy,
                anchor,
                collateral,
                no_nonce: a.no_nonce,
            })
        }
        None => None,
    };
    Ok(Endpoint {
        server: a.server.clone(),
        server_name,
        rest: a.rest,
        ca,
        identity,
        attest,
    })
}

/// What the workers share.
struct Run {
    endpoint: Endpoint,
    request: Prepared,
    reference: OnceLock<Outputs>,
    stats: Stats,
    stop: AtomicBool,
    deadline: Instant,
    /// Requests still to start (`--requests`), or u64::MAX.
    left: AtomicU64,
    max_attempts: u32,
    backoff: Duration,
    timeout: Duration,
}

impl Run {
    /// Takes the next request to send, or None when the run is over.
    fn take(&self) -> Option<()> {
        if self.stop.load(Ordering::SeqCst) || Instant::now() >= self.deadline {
            return None;
        }
        self.left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .ok()
            .map(|_| ())
    }

    fn judge(&self, answer: Answer) -> Outcome {
        let reference = self.reference.get_or_init(|| answer.outputs.clone());
        if reference.same_as(&answer.outputs) {
            Outcome::Answered(answer.version)
        } else {
            Outcome::Wrong(format!(
                "outputs differ from the reference (version {})",
                answer
                    .version
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "unknown".into())
            ))
        }
    }
}

/// A small xorshift generator for backoff jitter.
struct Jitter(u64);

impl Jitter {
    fn new(seed: u64) -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
        Self((seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ t) | 1)
    }

    /// A factor in [0.5, 1).
    fn factor(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        0.5 + (self.0 >> 11) as f64 / (1u64 << 53) as f64 / 2.0
    }
}

/// The wait before attempt `attempt + 1`.
fn backoff(base: Duration, attempt: u32, jitter: &mut Jitter) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    exp.min(Duration::from_secs(1)).mul_f64(jitter.factor())
}

/// One connection's loop: a request at a time, each tried until it is answered, refused for
/// good, or out of attempts.
async fn worker(id: usize, run: Arc<Run>, mut conn: Option<Connection>) {
    let mut jitter = Jitter::new(id as u64 + 1);
    while run.take().is_some() {
        let phase = run.stats.phase();
        let started = Instant::now();
        let mut attempt = 0u32;
        let outcome = loop {
            attempt += 1;
            let failure = match conn.as_mut() {
                None => match within(run.timeout, run.endpoint.open(&run.stats)).await {
                    Ok(c) => {
                        conn = Some(c);
                        attempt -= 1;
                        continue;
                    }
                    Err(f) => f,
                },
                Some(c) => match within(run.timeout, client::send(c, &run.request)).await {
                    Ok(answer) => break run.judge(answer),
                    Err(f) => {
                        // The connection may be broken; the next attempt opens (and
                        // attests) a new one.
                        conn = None;
                        f
                    }
                },
            };
            if !failure.retryable || attempt >= run.max_attempts {
                break Outcome::Failed(failure.message);
            }
            run.stats.retry(phase, &failure.message);
            tokio::time::sleep(backoff(run.backoff, attempt, &mut jitter)).await;
        };
        run.stats
            .record(phase, &outcome, attempt > 1, started.elapsed());
    }
}

/// `attempt`'s result, or a failure worth another attempt once `limit` has passed without one.
async fn within<T>(
    limit: Duration,
    attempt: impl std::future::Future<Output = Result<T, client::Failure>>,
) -> Result<T, client::Failure> {
    tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(client::Failure::retry(format!(
                "no answer within {} s",
                limit.as_secs_f64()
            )))
        })
}

/// A flag's number of seconds, positive and small enough to add to the clock.
fn seconds(flag: &str, v: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero() && Instant::now().checked_add(*d).is_some())
        .with_context(|| format!("{flag} must be a positive number of seconds, not {v}"))
}

fn run(a: Args) -> Result<()> {
    anyhow::ensure!(a.connections > 0, "--connections must be at least 1");
    let duration = seconds("--duration", a.duration)?;
    let timeout = seconds("--timeout", a.timeout)?;
    anyhow::ensure!(a.max_attempts > 0, "--max-attempts must be at least 1");
    let input = requester::read_input_file(&a.input).map_err(anyhow::Error::msg)?;
    let expected = a.expected.as_deref().map(read_expected).transpose()?;
    let endpoint = endpoint(&a)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("async runtime")?;
    rt.block_on(async move {
        // The handlers are in place before anything else, so that an early SIGUSR1 is not
        // the default action (the end of the process) and an early SIGTERM is not lost.
        let signals = Signals::new()?;
        let stats = Stats::new();
        // The first connection reads the model's signature, to shape the request; it is
        // tried as often as a request would be.
        let mut jitter = Jitter::new(0);
        let mut attempt = 0;
        let mut first = loop {
            attempt += 1;
            match within(timeout, endpoint.open(&stats)).await {
                Ok(c) => break c,
                Err(f) if f.retryable && attempt < a.max_attempts => {
                    let wait = backoff(Duration::from_millis(a.backoff_ms), attempt, &mut jitter);
                    tokio::time::sleep(wait).await;
                }
                Err(f) => anyhow::bail!("{}: {}", a.server, f.message),
            }
        };
        let inputs = client::inputs(&mut first, &a.model, &input, a.batch)
            .await
            .map_err(anyhow::Error::msg)?;
        let policy = endpoint.attest.as_ref().map(|t| &t.policy);
        let mut request = Prepared::new(&a.model, &inputs, a.rest, policy);
        request.receipt = a.receipt;
        let reference = OnceLock::new();
        if let Some(e) = expected {
            let _ = reference.set(Outputs::Json(e));
        }
        let run = Arc::new(Run {
            endpoint,
            request,
            reference,
            stats,
            stop: AtomicBool::new(false),
            deadline: Instant::now() + duration,
            left: AtomicU64::new(a.requests.unwrap_or(u64::MAX)),
            max_attempts: a.max_attempts,
            backoff: Duration::from_millis(a.backoff_ms),
            timeout,
        });
        let signals = tokio::spawn(signals.forward(run.clone()));
        eprintln!(
            "teeserve-load: {} connection(s) to {} for up to {} s",
            a.connections, a.server, a.duration
        );
        let mut workers = Vec::new();
        let mut first = Some(first);
        for id in 0..a.connections {
            workers.push(tokio::spawn(worker(id, run.clone(), first.take())));
        }
        for w in workers {
            w.await.context("a worker stopped")?;
        }
        signals.abort();
        if let Some(path) = &a.latencies {
            let mut text = String::new();
            for l in run.stats.latencies() {
                text.push_str(&format!("{l:.3}\n"));
            }
            std::fs::write(path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let summary = run.stats.summary();
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{summary}");
        Ok(())
    })
}

/// The signals the run obeys: SIGUSR1 starts a new phase; SIGINT and SIGTERM end the run.
struct Signals {
    usr1: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            usr1: signal(SignalKind::user_defined1()).context("SIGUSR1 handler")?,
            term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
        })
    }

    async fn forward(mut self, run: Arc<Run>) {
        loop {
            tokio::select! {
                _ = self.usr1.recv() => {
                    run.stats.next_phase();
                    continue;
                }
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
            // The first ends the run once the requests under way are through; a second, when
            // they do not get through, ends the process.
            if run.stop.swap(true, Ordering::SeqCst) {
                eprintln!("teeserve-load: stopped before the run was through");
                std::process::exit(130);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_second_with_jitter() {
        let mut j = Jitter::new(7);
        let base = Duration::from_millis(25);
        for attempt in 1..40 {
            let d = backoff(base, attempt, &mut j);
            let full = base
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(Duration::from_secs(1));
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?} vs {full:?}");
        }
    }
}
