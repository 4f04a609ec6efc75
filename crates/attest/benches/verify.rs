//! Quotes verified per second on one core: cold (collateral verified each time), warm (cached,
//! prepared collateral), and Phala's dcap-qvl `verify` on the same vector in the same run.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use teeserve_attest::{Collateral, Verifier};

fn vectors() -> std::path::PathBuf {
    std::env::var("TEESERVE_VECTORS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors")
        })
}

fn bench(c: &mut Criterion) {
    for (name, at) in [
        ("sgx-v3-dcapqvl", 1751000000u64),
        ("tdx-v4-dcapqvl", 1751000000),
    ] {
        let d = vectors().join("dcap");
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

criterion_group!(benches, bench);
criterion_main!(benches);
