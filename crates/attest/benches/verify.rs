//! Quotes verified per second on one core: cold (collateral verified each time), warm (cached,
//! prepared collateral), and Phala's dcap-qvl `verify` on the same vector in the same run.
//!
//! It needs the real vectors; without them it says where it looked and exits successfully.
use std::path::Path;

use criterion::{Criterion, Throughput};
use teeserve_attest::{Collateral, Verifier};

fn bench(c: &mut Criterion, vectors: &Path) {
    for (name, at) in [
        ("sgx-v3-dcapqvl", 1751000000u64),
        ("tdx-v4-dcapqvl", 1751000000),
    ] {
        let d = vectors.join("dcap");
        let quote = std::fs::read(d.join(format!("{name}.quote"))).unwrap();
        let json = std::fs::read(d.join(format!("{name}.collateral.json"))).unwrap();
        let coll = Collateral::from_json(&json).unwrap();
        let qvl: dcap_qvl::QuoteCollateralV3 = serde_json::from_slice(&json).unwrap();
        let v = Verifier::default();
        let prepared = v.prepare(&coll, at as i64).unwrap();
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(1));
        g.bench_function("teeserve cold", |b| {
            b.iter(|| v.verify(&quote, &coll, at as i64).unwrap())
        });
        g.bench_function("teeserve warm", |b| {
            b.iter(|| v.verify_prepared(&quote, &prepared, at as i64).unwrap())
        });
        g.bench_function("dcap-qvl verify", |b| {
            b.iter(|| dcap_qvl::verify::verify(&quote, &qvl, at).unwrap())
        });
        g.finish();
    }
}

fn main() {
    // `vectors()` says on stderr where it looked (and panics under TEESERVE_REQUIRE_VECTORS=1).
    let Some(vectors) = teeserve_testkit::vectors() else {
        return;
    };
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &vectors);
    c.final_summary();
}
