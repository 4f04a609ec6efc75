//! What the load generator counts: every request's outcome and latency, by phase (a phase
//! starts at launch and at each SIGUSR1), and the JSON summary it prints.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How one request ended, after its retries.
#[derive(Debug)]
pub enum Outcome {
    /// Answered, and the answer equals the reference; the version that answered (gRPC).
    Answered(Option<i64>),
    /// Answered, but not with the reference output.
    Wrong(String),
    /// No answer: a refusal that is not retried, or the attempts ran out.
    Failed(String),
}

/// Distinct error messages kept per phase (the rest are counted under one key).
const MAX_DISTINCT_ERRORS: usize = 20;

/// A phase's counts (or, summed, the whole run's).
#[derive(Debug, Default, Clone)]
struct Phase {
    /// Seconds after the start at which the phase began.
    began: f64,
    answered: u64,
    wrong: u64,
    failed: u64,
    /// Attempts beyond each request's first.
    retries: u64,
    /// Requests that needed at least one retry.
    requests_retried: u64,
    latencies_ms: Vec<f32>,
    versions: BTreeMap<String, u64>,
    /// Why requests failed or answered wrongly.
    errors: BTreeMap<String, u64>,
    /// Why attempts were retried.
    retry_causes: BTreeMap<String, u64>,
}

fn count(map: &mut BTreeMap<String, u64>, msg: &str) {
    let key = if map.len() >= MAX_DISTINCT_ERRORS && !map.contains_key(msg) {
        "(other messages)".to_owned()
    } else {
        msg.chars().take(160).collect()
    };
    *map.entry(key).or_default() += 1;
}

/// Counters shared by the workers.
#[derive(Debug)]
pub struct Stats {
    start: Instant,
    current: AtomicUsize,
    phases: Mutex<Vec<Phase>>,
    /// Connections opened (each after its own attestation check when one is asked for).
    pub connections: AtomicU64,
    /// Attestation documents fetched and checked.
    pub attestations: AtomicU64,
}

impl Stats {
    /// Counters starting now, in phase 0.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            current: AtomicUsize::new(0),
            phases: Mutex::new(vec![Phase::default()]),
            connections: AtomicU64::new(0),
            attestations: AtomicU64::new(0),
        }
    }

    /// The phase requests starting now belong to.
    pub fn phase(&self) -> usize {
        self.current.load(Ordering::SeqCst)
    }

    /// Starts the next phase.
    pub fn next_phase(&self) {
        if let Ok(mut p) = self.phases.lock() {
            p.push(Phase {
                began: self.start.elapsed().as_secs_f64(),
                ..Default::default()
            });
            self.current.store(p.len() - 1, Ordering::SeqCst);
        }
    }

    /// Counts an attempt that will be retried.
    pub fn retry(&self, phase: usize, cause: &str) {
        if let Ok(mut p) = self.phases.lock() {
            if let Some(p) = p.get_mut(phase) {
                p.retries += 1;
                count(&mut p.retry_causes, cause);
            }
        }
    }

    /// Counts a finished request that started in `phase`.
    pub fn record(&self, phase: usize, outcome: &Outcome, retried: bool, latency: Duration) {
        let Ok(mut p) = self.phases.lock() else {
            return;
        };
        let Some(p) = p.get_mut(phase) else {
            return;
        };
        p.latencies_ms.push(latency.as_secs_f32() * 1e3);
        if retried {
            p.requests_retried += 1;
        }
        match outcome {
            Outcome::Answered(v) => {
                p.answered += 1;
                let key = v.map(|v| v.to_string()).unwrap_or_else(|| "unknown".into());
                *p.versions.entry(key).or_default() += 1;
            }
            Outcome::Wrong(why) => {
                p.wrong += 1;
                count(&mut p.errors, why);
            }
            Outcome::Failed(why) => {
                p.failed += 1;
                count(&mut p.errors, why);
            }
        }
    }

    /// Every request's latency in milliseconds, in no particular order.
    pub fn latencies(&self) -> Vec<f32> {
        self.phases
            .lock()
            .map(|p| p.iter().flat_map(|p| p.latencies_ms.clone()).collect())
            .unwrap_or_default()
    }

    /// The summary: totals, latency percentiles and versions, overall and per phase.
    pub fn summary(&self) -> Value {
        let seconds = self.start.elapsed().as_secs_f64();
        let phases = self.phases.lock().map(|p| p.clone());
        let phases = phases.unwrap_or_default();
        let mut total = Phase::default();
        for p in &phases {
            total.add(p);
        }
        let mut out = total.json(seconds);
        out["seconds"] = json!(round3(seconds));
        out["connections"] = json!(self.connections.load(Ordering::SeqCst));
        out["attestations"] = json!(self.attestations.load(Ordering::SeqCst));
        let ends: Vec<f64> = phases
            .iter()
            .skip(1)
            .map(|p| p.began)
            .chain([seconds])
            .collect();
        out["phases"] = Value::Array(
            phases
                .iter()
                .zip(ends)
                .map(|(p, end)| {
                    let mut v = p.json(end - p.began);
                    v["began_s"] = json!(round3(p.began));
                    v
                })
                .collect(),
        );
        out
    }
}

fn merge(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The `p`-quantile of sorted values (nearest rank), 0 for none.
pub fn percentile(sorted: &[f32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1])
}

impl Phase {
    fn add(&mut self, p: &Phase) {
        self.answered += p.answered;
        self.wrong += p.wrong;
        self.failed += p.failed;
        self.retries += p.retries;
        self.requests_retried += p.requests_retried;
        self.latencies_ms.extend_from_slice(&p.latencies_ms);
        merge(&mut self.versions, &p.versions);
        merge(&mut self.errors, &p.errors);
        merge(&mut self.retry_causes, &p.retry_causes);
    }

    fn json(&self, seconds: f64) -> Value {
        let mut l = self.latencies_ms.clone();
        l.sort_by(f32::total_cmp);
        let requests = self.answered + self.wrong + self.failed;
        let ms = |p: f64| round3(percentile(&l, p));
        json!({
            "requests": requests,
            "answered": self.answered,
            "wrong": self.wrong,
            "failed": self.failed,
            "lost": self.wrong + self.failed,
            "retried": self.retries,
            "requests_retried": self.requests_retried,
            "throughput_rps": if seconds > 0.0 { round3(requests as f64 / seconds) } else { 0.0 },
            "latency_ms": {
                "p50": ms(0.50),
                "p90": ms(0.90),
                "p99": ms(0.99),
                "max": l.last().map(|x| round3(f64::from(*x))).unwrap_or(0.0),
            },
            "versions": self.versions,
            "errors": self.errors,
            "retry_causes": self.retry_causes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f32> = (1..=100).map(|x| x as f32).collect();
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[], 0.99), 0.0);
        assert_eq!(percentile(&[7.0], 0.01), 7.0);
    }

    #[test]
    fn phases_split_the_counts_and_the_totals_add_them() {
        let s = Stats::new();
        s.record(
            0,
            &Outcome::Answered(Some(1)),
            false,
            Duration::from_millis(2),
        );
        s.retry(0, "UNAVAILABLE: gone");
        s.next_phase();
        let p = s.phase();
        s.record(
            p,
            &Outcome::Answered(Some(2)),
            true,
            Duration::from_millis(9),
        );
        s.record(
            p,
            &Outcome::Failed("INTERNAL: x".into()),
            false,
            Duration::ZERO,
        );
        let v = s.summary();
        assert_eq!(v["requests"], 3);
        assert_eq!(v["lost"], 1);
        assert_eq!(v["retried"], 1);
        assert_eq!(v["requests_retried"], 1);
        assert_eq!(v["versions"]["1"], 1);
        assert_eq!(v["versions"]["2"], 1);
        assert_eq!(v["phases"][0]["requests"], 1);
        assert_eq!(v["phases"][0]["retry_causes"]["UNAVAILABLE: gone"], 1);
        assert_eq!(v["phases"][1]["failed"], 1);
        assert_eq!(v["phases"][1]["latency_ms"]["max"], 9.0);
    }
}
