//! The gramine and tdx evidence producers against directories that imitate Gramine's
//! /dev/attestation and Linux configfs-tsm, including their failure modes.
use std::path::Path;

use teeserve_attest::platform::gramine::GraminePlatform;
use teeserve_attest::platform::tdx::TdxPlatform;
use teeserve_attest::platform::{detect, DetectPaths, Platform};
use teeserve_attest::sim::{self, SimOptions, SimPlatform};

fn sim_quote(dir: &Path, rd: &[u8; 64]) -> Vec<u8> {
    if !dir.join("sim").exists() {
        sim::init(&dir.join("sim"), &SimOptions::default()).unwrap();
    }
    SimPlatform::open(&dir.join("sim"), [5; 32])
        .unwrap()
        .quote(rd)
        .unwrap()
}

#[test]
fn gramine_writes_report_data_then_reads_the_quote() {
    let tmp = tempfile::tempdir().unwrap();
    let att = tmp.path().join("attestation");
    std::fs::create_dir_all(&att).unwrap();
    std::fs::write(att.join("attestation_type"), "dcap").unwrap();
    std::fs::write(att.join("user_report_data"), [0u8; 64]).unwrap();
    let rd = [7u8; 64];
    std::fs::write(att.join("quote"), sim_quote(tmp.path(), &rd)).unwrap();
    let p = GraminePlatform::new(&att);
    let q = p.quote(&rd).unwrap();
    assert_eq!(
        std::fs::read(att.join("user_report_data")).unwrap(),
        rd.to_vec(),
        "64 bytes written in one write"
    );
    assert_eq!(
        teeserve_attest::Quote::parse(&q)
            .unwrap()
            .body
            .report_data(),
        &rd
    );

    // A quote over other report data (stale) is refused.
    let e = p.quote(&[8u8; 64]).unwrap_err().to_string();
    assert!(e.contains("stale quote"), "{e}");
    // A short read.
    std::fs::write(att.join("quote"), [1u8; 100]).unwrap();
    let e = p.quote(&rd).unwrap_err().to_string();
    assert!(e.contains("short or malformed"), "{e}");
    // Remote attestation disabled in the manifest.
    std::fs::write(att.join("attestation_type"), "none").unwrap();
    let e = p.quote(&rd).unwrap_err().to_string();
    assert!(e.contains("sgx.remote_attestation"), "{e}");
    // Not under Gramine at all.
    let e = GraminePlatform::new(&tmp.path().join("missing"))
        .quote(&rd)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("user_report_data") && e.contains("gramine"),
        "{e}"
    );
}

/// Imitates configfs-tsm: when an entry appears, fill in what the kernel would.
fn fake_tsm(
    root: &Path,
    provider: &'static str,
    generation: &'static str,
    quote: Vec<u8>,
) -> std::thread::JoinHandle<()> {
    let root = root.to_owned();
    std::thread::spawn(move || {
        for _ in 0..400 {
            if let Some(e) = std::fs::read_dir(&root).unwrap().flatten().next() {
                let d = e.path();
                std::fs::write(d.join("provider"), provider).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(20));
                std::fs::write(d.join("generation"), generation).unwrap();
                std::fs::write(d.join("outblob"), &quote).unwrap();
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    })
}

#[test]
fn tdx_configfs_tsm_round_trip_and_failures() {
    let vectors = teeserve_testkit::require_vectors!();
    let tmp = tempfile::tempdir().unwrap();
    let quote = std::fs::read(vectors.join("dcap/tdx-v4-dcapqvl.quote")).unwrap();
    for (provider, generation, quote, want) in [
        ("tdx_guest", "1", quote.clone(), None),
        (
            "tdx_guest",
            "2",
            quote.clone(),
            Some("written concurrently"),
        ),
        (
            "sev_guest",
            "1",
            quote.clone(),
            Some("is not \"tdx_guest\""),
        ),
        ("tdx_guest", "1", vec![0u8; 10], Some("short read")),
    ] {
        let root = tmp
            .path()
            .join(format!("tsm-{provider}-{generation}-{}", quote.len()));
        std::fs::create_dir_all(&root).unwrap();
        let h = fake_tsm(&root, provider, generation, quote.clone());
        let r = TdxPlatform::new(&root).quote(&[3u8; 64]);
        h.join().unwrap();
        match want {
            None => {
                assert_eq!(r.unwrap(), quote);
                let entry = std::fs::read_dir(&root)
                    .unwrap()
                    .flatten()
                    .next()
                    .unwrap()
                    .path();
                assert_eq!(std::fs::read(entry.join("inblob")).unwrap(), vec![3u8; 64]);
            }
            Some(msg) => {
                let e = r.unwrap_err().to_string();
                assert!(e.contains(msg), "{provider}/{generation}: {e}");
            }
        }
    }
    let e = TdxPlatform::new(&tmp.path().join("none"))
        .quote(&[0; 64])
        .unwrap_err()
        .to_string();
    assert!(e.contains("configfs-tsm report directory not found"), "{e}");
}

#[test]
fn auto_detection_never_picks_simulation() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = DetectPaths {
        gramine: tmp.path().join("attestation"),
        tsm: tmp.path().join("tsm"),
    };
    let e = detect(&paths).unwrap_err().to_string();
    assert!(
        e.contains("looked for") && e.contains("--platform simulated"),
        "{e}"
    );
    std::fs::create_dir_all(&paths.gramine).unwrap();
    std::fs::write(paths.gramine.join("quote"), b"").unwrap();
    assert_eq!(detect(&paths).unwrap().name(), "gramine");
}
