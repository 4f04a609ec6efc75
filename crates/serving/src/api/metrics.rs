//! Prometheus metrics with TF Serving's names (`util/prometheus_exporter.cc`: characters outside
//! `[a-zA-Z0-9_]` become `:`, so `/tensorflow/serving/request_count` is exported as
//! `:tensorflow:serving:request_count`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Histogram bucket bounds in microseconds: exponential, scale 10, growth 1.8, 33 buckets.
fn bounds() -> Vec<f64> {
    (0..33).map(|i| 10.0 * 1.8f64.powi(i)).collect()
}

#[derive(Debug, Default)]
struct Hist {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

/// The server's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String), u64>>,
    latency: Mutex<BTreeMap<(String, String, String), Hist>>,
    runtime: Mutex<BTreeMap<(String, String), Hist>>,
    batch_sizes: Mutex<BTreeMap<String, Hist>>,
}

fn observe(h: &mut Hist, v: f64) {
    let b = bounds();
    if h.buckets.is_empty() {
        h.buckets = vec![0; b.len()];
    }
    for (i, bound) in b.iter().enumerate() {
        if v <= *bound {
            h.buckets[i] += 1;
        }
    }
    h.sum += v;
    h.count += 1;
}

impl Metrics {
    /// Counts a request with its status (`OK`, `NOT_FOUND`, ...).
    pub fn request(&self, model: &str, status: &str) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((model.to_owned(), status.to_owned())).or_default() += 1;
        }
    }

    /// Records a successful request's latency.
    pub fn latency(&self, model: &str, api: &str, entrypoint: &str, micros: f64) {
        if let Ok(mut m) = self.latency.lock() {
            observe(
                m.entry((model.to_owned(), api.to_owned(), entrypoint.to_owned()))
                    .or_default(),
                micros,
            );
        }
    }

    /// Records time spent in the engine.
    pub fn runtime(&self, model: &str, engine: &str, micros: f64) {
        if let Ok(mut m) = self.runtime.lock() {
            observe(
                m.entry((model.to_owned(), engine.to_owned())).or_default(),
                micros,
            );
        }
    }

    /// Records a processed batch size.
    pub fn batch(&self, model: &str, size: usize) {
        if let Ok(mut m) = self.batch_sizes.lock() {
            observe(m.entry(model.to_owned()).or_default(), size as f64);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let b = bounds();
        let hist = |out: &mut String, name: &str, labels: &str, h: &Hist| {
            for (i, bound) in b.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{labels},le=\"{bound}\"}} {}",
                    h.buckets.get(i).copied().unwrap_or(0)
                );
            }
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
        };
        out.push_str("# TYPE :tensorflow:serving:request_count counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((model, status), n) in m.iter() {
                let _ = writeln!(out, ":tensorflow:serving:request_count{{model_name=\"{model}\",status=\"{status}\"}} {n}");
            }
        }
        out.push_str("# TYPE :tensorflow:serving:request_latency histogram\n");
        if let Ok(m) = self.latency.lock() {
            for ((model, api, ep), h) in m.iter() {
                hist(
                    &mut out,
                    ":tensorflow:serving:request_latency",
                    &format!("model_name=\"{model}\",API=\"{api}\",entrypoint=\"{ep}\""),
                    h,
                );
            }
        }
        out.push_str("# TYPE :tensorflow:serving:runtime_latency histogram\n");
        if let Ok(m) = self.runtime.lock() {
            for ((model, rt), h) in m.iter() {
                hist(
                    &mut out,
                    ":tensorflow:serving:runtime_latency",
                    &format!("model_name=\"{model}\",API=\"Predict\",runtime=\"{rt}\""),
                    h,
                );
            }
        }
        out.push_str(
            "# TYPE :tensorflow:serving:batching_session:processed_batch_size histogram\n",
        );
        if let Ok(m) = self.batch_sizes.lock() {
            for (model, h) in m.iter() {
                hist(
                    &mut out,
                    ":tensorflow:serving:batching_session:processed_batch_size",
                    &format!("model_name=\"{model}\""),
                    h,
                );
            }
        }
        out
    }
}
