//! The time to verify a signed audit log of N entries (default 100,000), as
//! `teeserve kbs log verify` does it: recompute the tree from the entries, check every
//! checkpoint's signature (one per entry, as the broker writes them), every recorded leaf and
//! every entry. The log is made here in the broker's layout: grant-like JSON lines of about
//! 400 bytes in `audit.jsonl`, and in `audit.jsonl.tlog` one record per entry with its leaf
//! hash and a checkpoint signed over the tree so far.
//!
//!     cargo run --release -p teeserve-kbs --example log_verify [-- ENTRIES]
use std::io::Write;
use std::time::Instant;

use teeserve_ratls::tlog::checkpoint::Checkpoint;
use teeserve_ratls::tlog::merkle::{leaf_hash, CompactTree};
use teeserve_ratls::tlog::note::SigningKey;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("audit.jsonl");
    let key = SigningKey::generate("bench.test/kbs")?;
    let t = Instant::now();
    let mut entries = std::io::BufWriter::new(std::fs::File::create(&log)?);
    let mut records =
        std::io::BufWriter::new(std::fs::File::create(teeserve_kbs::sidecar_path(&log))?);
    let mut tree = CompactTree::new();
    for i in 0..n {
        let line = format!(
            r#"{{"time":"2026-11-26T15:57:11Z","peer":"127.0.0.1:{}","port":"native","tee":"sgx","measurements":{{"mrenclave":"{}","mrsigner":"{}","isv_prod_id":1,"isv_svn":1}},"tcb_status":"UpToDate","policy":"tfserving","secret":"model-key","decision":"granted","policy_sha256":"{}","peer_key_sha256":"{:064x}"}}"#,
            40000 + i % 20000,
            "11".repeat(32),
            "22".repeat(32),
            "33".repeat(32),
            i
        );
        writeln!(entries, "{line}")?;
        let leaf = leaf_hash(line.as_bytes());
        tree.push(leaf);
        let checkpoint = Checkpoint {
            origin: "bench.test/kbs".into(),
            size: tree.size(),
            root: tree.root(),
        }
        .sign(&key)?;
        let record = serde_json::json!({
            "size": tree.size(),
            "leaves": [hex::encode(leaf)],
            "checkpoint": checkpoint,
        });
        writeln!(records, "{record}")?;
    }
    entries.flush()?;
    records.flush()?;
    drop((entries, records));
    let made = t.elapsed();
    let bytes =
        std::fs::metadata(&log)?.len() + std::fs::metadata(teeserve_kbs::sidecar_path(&log))?.len();
    let t = Instant::now();
    let s = teeserve_kbs::verify_log(&log, &key.verifier())?;
    let verified = t.elapsed();
    assert_eq!(s.entries, n);
    let t = Instant::now();
    let proof = teeserve_kbs::prove_inclusion(&log, n / 2)?;
    let proved = t.elapsed();
    println!(
        "made a signed log of {n} entries and {n} checkpoints ({:.1} MB) in {:.2} s",
        bytes as f64 / 1e6,
        made.as_secs_f64()
    );
    println!(
        "verified {} entries, tree size {}, root {} in {:.2} s",
        s.entries,
        s.size,
        s.root,
        verified.as_secs_f64()
    );
    println!(
        "proved entry {} in {:.2} s ({} bytes of proof)",
        n / 2,
        proved.as_secs_f64(),
        proof.len()
    );
    Ok(())
}
