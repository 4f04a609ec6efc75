//! In-memory sealing throughput (the crypto pipeline without file-system costs), for comparison
//! with `openssl speed -evp aes-256-gcm` / `aes-128-gcm`. File-to-file figures: bench/seal.sh.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use teeserve_seal::gramine::{self, PfVersion};
use teeserve_seal::stream::{self, SealOptions};
use teeserve_seal::SealKey;

fn bench(c: &mut Criterion) {
    let size = 256 << 20;
    let data: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
    let k32 = SealKey::generate(32).unwrap();
    let k16 = SealKey::generate(16).unwrap();
    let mut g = c.benchmark_group("seal 256 MiB in memory");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(size as u64));
    let mut out = Vec::with_capacity(size + (1 << 20));
    g.bench_function("teeserve seal (2 threads)", |b| {
        b.iter(|| {
            out.clear();
            stream::seal(
                &k32,
                "m",
                size as u64,
                &data[..],
                &mut out,
                &SealOptions::default(),
            )
            .unwrap();
        })
    });
    g.bench_function("teeserve seal (1 thread)", |b| {
        b.iter(|| {
            out.clear();
            let o = SealOptions {
                threads: 1,
                ..Default::default()
            };
            stream::seal(&k32, "m", size as u64, &data[..], &mut out, &o).unwrap();
        })
    });
    let sealed = out.clone();
    let mut plain = Vec::with_capacity(size);
    g.bench_function("teeserve unseal (2 threads)", |b| {
        b.iter(|| {
            plain.clear();
            stream::unseal(&k32, &sealed[..], &mut plain, None).unwrap();
        })
    });
    let mut pf = std::io::Cursor::new(Vec::with_capacity(size + size / 64));
    g.bench_function("gramine protected file write", |b| {
        b.iter(|| {
            pf.get_mut().clear();
            pf.set_position(0);
            gramine::encrypt_file(&k16, "m", size as u64, &data[..], &mut pf, PfVersion::V1)
                .unwrap();
        })
    });
    let pfb = pf.get_ref().clone();
    g.bench_function("gramine protected file read", |b| {
        b.iter(|| {
            plain.clear();
            gramine::decrypt_file(&k16, &pfb[..], &mut plain, None).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
