//! Load on the key broker over loopback: 32 concurrent clients, each doing a full RA-TLS
//! handshake (the broker verifies the quote every time) plus one secret fetch, for 10 seconds;
//! once with an unsigned audit log and once with the signed log (`[log]`: a checkpoint signed
//! and synced with every grant, the proof in the answer), in the same run.
//!
//!     cargo run --release -p teeserve-kbs --example kbs_load [-- CLIENTS SECONDS ROUNDS]
//!
//! With ROUNDS > 1 the two alternate (unsigned, signed, unsigned, ...) and the medians are
//! compared, so that other load on the machine weighs on both alike.
use std::sync::Arc;
use std::time::{Duration, Instant};

use teeserve_attest::platform::{Platform, PlatformError};
use teeserve_attest::sim::{self, SimOptions, SimPlatform};
use teeserve_ratls::{EvidenceFormat, KeyType, RaTlsIdentity};
use teeserve_tls::broker::KbsClient;

#[derive(Debug)]
struct Sim(SimPlatform);
impl Platform for Sim {
    fn name(&self) -> &'static str {
        "simulated"
    }
    fn quote(&self, rd: &[u8; 64]) -> Result<Vec<u8>, PlatformError> {
        Ok(self.0.quote(rd)?)
    }
}

/// One phase: a broker with (`signed`) or without a signed log, `clients` clients for `secs`
/// seconds. Returns grants per second.
async fn phase(clients: usize, secs: u64, signed: bool) -> Result<f64, Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    sim::init(&dir.join("sim"), &SimOptions::default())?;
    let ca = teeserve_tls::make_ca("load CA")?;
    let srv = teeserve_tls::issue(&ca, "kbs", &["127.0.0.1".into()], false)?;
    std::fs::write(dir.join("kbs.pem"), &srv.cert_pem)?;
    std::fs::write(dir.join("kbs.key"), srv.key_pem.as_bytes())?;
    std::fs::write(dir.join("model.key"), [1u8; 32])?;
    let key = teeserve_ratls::tlog::note::SigningKey::generate("load.test/kbs")?;
    std::fs::write(dir.join("log.key"), key.to_text().as_bytes())?;
    let log = if signed {
        "[log]\nsigning_key = \"log.key\"\n"
    } else {
        ""
    };
    let mr = hex::encode([0x11u8; 32]);
    std::fs::write(
        dir.join("kbs.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\ntls_cert = \"kbs.pem\"\ntls_key = \"kbs.key\"\naudit_log = \"audit.jsonl\"\n{log}[collateral]\nbundle = \"sim/collateral.json\"\nroot = \"sim/root.pem\"\n[secrets.model-key]\nfile = \"model.key\"\n[[policies]]\nname = \"p\"\nmrenclave = [\"{mr}\"]\nallow_simulated = true\nsecrets = [\"model-key\"]\n"
        ),
    )?;
    let kbs = teeserve_kbs::Kbs::start(&dir.join("kbs.toml")).await?;
    let addr = kbs.native_addr().to_string();
    let platform = Sim(SimPlatform::open(&dir.join("sim"), [0x11; 32])?);
    let ca_pem = Arc::new(ca.cert_pem.into_bytes());
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let id = Arc::new(RaTlsIdentity::generate(
            &platform,
            EvidenceFormat::Both,
            KeyType::P256,
        )?);
        let (addr, ca_pem) = (addr.clone(), ca_pem.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let mut c = KbsClient::connect(&addr, &ca_pem, None, &id)
                    .await
                    .expect("connect");
                let (s, proof) = c.get_secret_logged("model-key").await.expect("granted");
                assert_eq!(s.len(), 32);
                assert_eq!(proof.is_some(), signed);
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    all.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let p = |q: f64| all[((all.len() as f64 - 1.0) * q).round() as usize];
    let rate = all.len() as f64 / secs as f64;
    println!(
        "key broker, {} audit log: {} grants in {secs} s with {clients} concurrent clients: {rate:.0} grants/s (full RA-TLS handshake + secret each), latency p50 {:.2} ms, p99 {:.2} ms",
        if signed { "signed" } else { "unsigned" },
        all.len(),
        p(0.5),
        p(0.99)
    );
    if signed {
        let s = teeserve_kbs::verify_log(&dir.join("audit.jsonl"), &key.verifier())?;
        println!(
            "  the signed log verifies: {} entries, {} checkpoints",
            s.entries, s.checkpoints
        );
    }
    kbs.stop()?;
    Ok(rate)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let clients: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(32);
    let secs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let rounds: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1).max(1);
    let (mut unsigned, mut signed) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        unsigned.push(phase(clients, secs, false).await?);
        signed.push(phase(clients, secs, true).await?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        v[v.len() / 2]
    };
    let (u, s) = (median(&mut unsigned), median(&mut signed));
    println!(
        "median of {rounds}: unsigned {u:.0} grants/s, signed {s:.0} grants/s: the signed log costs {:.1}% of the grants per second",
        (1.0 - s / u) * 100.0
    );
    Ok(())
}
