//! `teeserve attest verify` on the real DCAP vectors and on the simulated platform.
mod harness;
use harness::*;

fn verify_vector(vectors: &std::path::Path, name: &str, at: &str) -> Run {
    let d = vectors.join("dcap");
    run(&[
        "attest",
        "verify",
        "--quote",
        s(&d.join(format!("{name}.quote"))),
        "--collateral",
        s(&d.join(format!("{name}.collateral.json"))),
        "--at",
        at,
    ])
}

#[test]
fn vector_sgx_v3_dcapqvl() {
    let vectors = teeserve_testkit::require_vectors!();
    let v = verify_vector(&vectors, "sgx-v3-dcapqvl", "1751000000")
        .ok()
        .json();
    assert_eq!(v["tcb_status"], "ConfigurationAndSWHardeningNeeded");
    assert_eq!(
        v["advisory_ids"],
        serde_json::json!(["INTEL-SA-00289", "INTEL-SA-00615"])
    );
}

#[test]
fn vector_tdx_v4_dcapqvl() {
    let vectors = teeserve_testkit::require_vectors!();
    let v = verify_vector(&vectors, "tdx-v4-dcapqvl", "1751000000")
        .ok()
        .json();
    assert_eq!(v["tcb_status"], "UpToDate");
    assert_eq!(v["advisory_ids"], serde_json::json!([]));
}

#[test]
fn vector_tdx_v5_no_matching_level() {
    let vectors = teeserve_testkit::require_vectors!();
    let r = verify_vector(&vectors, "tdx-v5-dcapqvl", "1772000000").fails(1);
    assert!(r.stderr.contains("no matching TCB level"), "{}", r.stderr);
}

#[test]
fn vector_tdx_v4_padded() {
    let vectors = teeserve_testkit::require_vectors!();
    let v = verify_vector(&vectors, "tdx-v4-automata-padded", "2025-02-13T04:00:32Z")
        .ok()
        .json();
    assert_eq!(v["tcb_status"], "OutOfDate");
    assert_eq!(
        v["advisory_ids"],
        serde_json::json!(["INTEL-SA-00960", "INTEL-SA-00982", "INTEL-SA-00986"])
    );
}

#[test]
fn vector_sgx_tcb_info_v2() {
    let vectors = teeserve_testkit::require_vectors!();
    let v = verify_vector(&vectors, "sgx-v3-automata-tcbinfo-v2", "1739419232")
        .ok()
        .json();
    assert_eq!(v["tcb_status"], "OutOfDate");
    assert_eq!(v["advisory_ids"], serde_json::json!([]));
}

#[test]
fn vector_expired_names_the_item() {
    let vectors = teeserve_testkit::require_vectors!();
    // sgx-v3-dcapqvl's window ends when its QE identity expires, 2025-07-19T10:01:18Z.
    let r = verify_vector(&vectors, "sgx-v3-dcapqvl", "2025-07-19T10:01:19Z").fails(1);
    assert!(
        r.stderr.contains(
            "qe_identity.nextUpdate 2025-07-19T10:01:18Z is before the verification time"
        ),
        "{}",
        r.stderr
    );
    verify_vector(&vectors, "sgx-v3-dcapqvl", "2025-07-19T10:01:18Z").ok();
}

#[test]
fn debug_vectors_are_refused_by_the_default_policy() {
    let vectors = teeserve_testkit::require_vectors!();
    let dir = tempfile::tempdir().unwrap();
    // A debug enclave quote has no collateral; the policy check is shown with the real
    // collateral-free path in the library tests. Here: the quote parses and the CLI reports
    // usage errors cleanly when collateral is missing.
    let d = vectors.join("dcap");
    let r = run_in(
        dir.path(),
        &[
            "attest",
            "verify",
            "--quote",
            s(&d.join("sgx-v3-debug-enclave.quote")),
        ],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--collateral"), "{}", r.stderr);
}

#[test]
fn hex_quote_files_are_accepted() {
    let vectors = teeserve_testkit::require_vectors!();
    let dir = tempfile::tempdir().unwrap();
    let d = vectors.join("dcap");
    let q = std::fs::read(d.join("tdx-v4-dcapqvl.quote")).unwrap();
    std::fs::write(dir.path().join("q.hex"), hex::encode(q) + "\n").unwrap();
    run_in(
        dir.path(),
        &[
            "attest",
            "verify",
            "--quote",
            "q.hex",
            "--collateral",
            s(&d.join("tdx-v4-dcapqvl.collateral.json")),
            "--at",
            "1751000000",
        ],
    )
    .ok();
}

#[test]
fn unreadable_quote_is_exit_2_naming_the_file() {
    let r = run(&[
        "attest",
        "verify",
        "--quote",
        "/nonexistent/q.bin",
        "--collateral",
        "/nonexistent/c.json",
    ])
    .fails(2);
    assert!(r.stderr.contains("/nonexistent/q.bin"), "{}", r.stderr);
}

fn sim(dir: &std::path::Path, extra: &[&str]) {
    let mut args = vec!["sim", "init", "--dir", "p"];
    args.extend_from_slice(extra);
    run_in(dir, &args).ok();
}

/// The arguments of `attest quote` on the simulated platform in `p`, over report data `rd`, to
/// `q.bin`.
fn sim_quote_args(rd: &str) -> [&str; 10] {
    [
        "attest",
        "quote",
        "--platform",
        "simulated",
        "--sim-dir",
        "p",
        "--report-data",
        rd,
        "--out",
        "q.bin",
    ]
}

/// `attest quote` on the simulated platform in `d/p`, over report data `rd`, to `d/q.bin`.
fn sim_quote(d: &std::path::Path, rd: &str) {
    run_in(d, &sim_quote_args(rd)).ok();
}

/// `attest verify` of `quote` against the simulated platform's collateral, plus `extra` flags.
fn verify_sim(d: &std::path::Path, quote: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "attest",
        "verify",
        "--quote",
        quote,
        "--collateral",
        "p/collateral.json",
    ];
    args.extend_from_slice(extra);
    run_in(d, &args)
}

#[test]
fn simulated_quote_verifies_with_its_root_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sim(d, &[]);
    let rd = "ab".repeat(64);
    sim_quote(d, &rd);
    let v = verify_sim(d, "q.bin", &["--root", "p/root.pem"])
        .ok()
        .json();
    assert_eq!(v["tcb_status"], "UpToDate");
    assert_eq!(v["report_data"], rd);
    let me = run(&["attest", "measure"]).ok().stdout.trim().to_owned();
    assert_eq!(v["sgx"]["mrenclave"], me);
    let platform: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("p/platform.json")).unwrap()).unwrap();
    assert_eq!(v["sgx"]["mrsigner"], platform["mrsigner"]);
    assert_eq!(v["root"]["intel"], false);

    // Without --root: refused, and the message says the evidence is simulated.
    let r = verify_sim(d, "q.bin", &[]).fails(1);
    assert!(r.stderr.contains("simulated"), "{}", r.stderr);

    // A policy without allow_simulated refuses it too, naming the rule.
    std::fs::write(d.join("strict.toml"), format!("mrenclave = [\"{me}\"]\n")).unwrap();
    let r = verify_sim(
        d,
        "q.bin",
        &["--root", "p/root.pem", "--policy", "strict.toml"],
    )
    .fails(1);
    assert!(
        r.stderr.contains("allow_simulated") && r.stderr.contains("simulated"),
        "{}",
        r.stderr
    );

    std::fs::write(
        d.join("sim.toml"),
        format!("mrenclave = [\"{me}\"]\nallow_simulated = true\n"),
    )
    .unwrap();
    verify_sim(
        d,
        "q.bin",
        &["--root", "p/root.pem", "--policy", "sim.toml"],
    )
    .ok();
}

#[test]
fn simulated_quote_tampering_fails() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sim(d, &[]);
    sim_quote(d, "01");
    let q = std::fs::read(d.join("q.bin")).unwrap();
    // report data (offset 48+320), ISV signature (436), QE report signature (436+512).
    for (off, what) in [
        (48 + 320, "quote body"),
        (436, "quote body"),
        (436 + 512, "QE report"),
    ] {
        let mut m = q.clone();
        m[off] ^= 1;
        std::fs::write(d.join("m.bin"), &m).unwrap();
        let r = verify_sim(d, "m.bin", &["--root", "p/root.pem"]).fails(1);
        assert!(
            r.stderr.contains("signature") && r.stderr.contains(what),
            "offset {off}: {}",
            r.stderr
        );
    }
}

#[test]
fn a_changed_executable_changes_mrenclave_and_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sim(d, &[]);
    let me = run(&["attest", "measure"]).ok().stdout.trim().to_owned();
    // A copy of the binary with one more byte runs the same, but measures differently.
    let mut exe = std::fs::read(bin()).unwrap();
    exe.push(0);
    let copy = d.join("teeserve-changed");
    std::fs::write(&copy, &exe).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // Another test's child, forked while the copy was open for writing, may hold it open until
    // its exec: running the copy then fails with "Text file busy" (ETXTBSY) for a moment.
    let mut tries = 0;
    let out = loop {
        let r = std::process::Command::new(&copy)
            .args(sim_quote_args("01"))
            .current_dir(d)
            .output();
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            r => break r.unwrap(),
        }
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        d.join("pol.toml"),
        format!("mrenclave = [\"{me}\"]\nallow_simulated = true\n"),
    )
    .unwrap();
    let r = verify_sim(
        d,
        "q.bin",
        &["--root", "p/root.pem", "--policy", "pol.toml"],
    )
    .fails(1);
    assert!(r.stderr.contains("rule mrenclave"), "{}", r.stderr);
}

#[test]
fn stale_and_revoked_simulated_collateral() {
    for (flags, want) in [
        (vec!["--stale"], "is before the verification time"),
        (
            vec!["--revoke", "pck"],
            "PCK certificate (serial 04) is revoked",
        ),
        (vec!["--revoke", "pck-ca"], "is revoked by the root_ca_crl"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        sim(d, &flags);
        sim_quote(d, "01");
        let r = verify_sim(d, "q.bin", &["--root", "p/root.pem"]).fails(1);
        assert!(r.stderr.contains(want), "{flags:?}: {}", r.stderr);
    }
}

#[test]
fn sim_init_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    sim(dir.path(), &[]);
    let r = run_in(dir.path(), &["sim", "init", "--dir", "p"]).fails(2);
    assert!(r.stderr.contains("refusing to overwrite"), "{}", r.stderr);
}
