//! Prometheus metrics with TF Serving's names (`util/prometheus_exporter.cc`: characters outside
//! `[a-zA-Z0-9_]` become `:`, so `/tensorflow/serving/request_count` is exported as
//! `:tensorflow:serving:request_count`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{LazyLock, Mutex};

/// Histogram bucket bounds in microseconds: exponential, scale 10, growth 1.8, 33 buckets.
static BOUNDS: LazyLock<Vec<f64>> =
    LazyLock::new(|| (0..33).map(|i| 10.0 * 1.8f64.powi(i)).collect());

fn bounds() -> &'static [f64] {
    &BOUNDS
}

/// A map keyed by label values, one level per label: a request's labels are looked up as the
/// `&str`s it has, and copied only the first time they are seen.
type Labels<V> = BTreeMap<String, V>;

/// The value under `key`, made the first time.
fn slot<'m, V: Default>(map: &'m mut Labels<V>, key: &str) -> Option<&'m mut V> {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key)
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
    /// By model, then status.
    requests: Mutex<Labels<Labels<u64>>>,
    /// By model, API, then entry point.
    latency: Mutex<Labels<Labels<Labels<Hist>>>>,
    /// By model, then engine.
    runtime: Mutex<Labels<Labels<Hist>>>,
    batch_sizes: Mutex<Labels<Hist>>,
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
            if let Some(n) = slot(&mut m, model).and_then(|m| slot(m, status)) {
                *n += 1;
            }
        }
    }

    /// Records a successful request's latency.
    pub fn latency(&self, model: &str, api: &str, entrypoint: &str, micros: f64) {
        if let Ok(mut m) = self.latency.lock() {
            let h = slot(&mut m, model)
                .and_then(|m| slot(m, api))
                .and_then(|m| slot(m, entrypoint));
            if let Some(h) = h {
                observe(h, micros);
            }
        }
    }

    /// Records time spent in the engine.
    pub fn runtime(&self, model: &str, engine: &str, micros: f64) {
        if let Ok(mut m) = self.runtime.lock() {
            if let Some(h) = slot(&mut m, model).and_then(|m| slot(m, engine)) {
                observe(h, micros);
            }
        }
    }

    /// Records a processed batch size.
    pub fn batch(&self, model: &str, size: usize) {
        if let Ok(mut m) = self.batch_sizes.lock() {
            if let Some(h) = slot(&mut m, model) {
                observe(h, size as f64);
            }
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
            for (model, by_status) in m.iter() {
                for (status, n) in by_status {
                    let _ = writeln!(out, ":tensorflow:serving:request_count{{model_name=\"{model}\",status=\"{status}\"}} {n}");
                }
            }
        }
        out.push_str("# TYPE :tensorflow:serving:request_latency histogram\n");
        if let Ok(m) = self.latency.lock() {
            for (model, by_api) in m.iter() {
                for (api, by_entry) in by_api {
                    for (ep, h) in by_entry {
                        hist(
                            &mut out,
                            ":tensorflow:serving:request_latency",
                            &format!("model_name=\"{model}\",API=\"{api}\",entrypoint=\"{ep}\""),
                            h,
                        );
                    }
                }
            }
        }
        out.push_str("# TYPE :tensorflow:serving:runtime_latency histogram\n");
        if let Ok(m) = self.runtime.lock() {
            for (model, by_runtime) in m.iter() {
                for (rt, h) in by_runtime {
                    hist(
                        &mut out,
                        ":tensorflow:serving:runtime_latency",
                        &format!("model_name=\"{model}\",API=\"Predict\",runtime=\"{rt}\""),
                        h,
                    );
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_set_is_counted_apart_and_listed_in_order() {
        let m = Metrics::default();
        for (model, status) in [("b", "OK"), ("a", "NOT_FOUND"), ("b", "OK"), ("a", "OK")] {
            m.request(model, status);
        }
        m.runtime("b", "tract", 15.0);
        m.runtime("b", "tract", 5.0);
        m.latency("a", "predict", "grpc", 20.0);
        let text = m.render();
        let counts: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(":tensorflow:serving:request_count{"))
            .collect();
        assert_eq!(
            counts,
            [
                ":tensorflow:serving:request_count{model_name=\"a\",status=\"NOT_FOUND\"} 1",
                ":tensorflow:serving:request_count{model_name=\"a\",status=\"OK\"} 1",
                ":tensorflow:serving:request_count{model_name=\"b\",status=\"OK\"} 2",
            ]
        );
        let runtime = "model_name=\"b\",API=\"Predict\",runtime=\"tract\"";
        for want in [
            format!(":tensorflow:serving:runtime_latency_bucket{{{runtime},le=\"10\"}} 1"),
            format!(":tensorflow:serving:runtime_latency_bucket{{{runtime},le=\"18\"}} 2"),
            format!(":tensorflow:serving:runtime_latency_count{{{runtime}}} 2"),
            format!(":tensorflow:serving:runtime_latency_sum{{{runtime}}} 20"),
            ":tensorflow:serving:request_latency_count{model_name=\"a\",API=\"predict\",entrypoint=\"grpc\"} 1".to_owned(),
        ] {
            assert!(text.lines().any(|l| l == want), "{want} not in\n{text}");
        }
    }
}
