//! `teeserve keygen / seal / unseal` as a user runs them.
mod harness;
use harness::*;

#[test]
fn keygen_is_private_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_in(d, &["keygen", "--out", "k"]).ok();
    assert_eq!(std::fs::read(d.join("k")).unwrap().len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(d.join("k")).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let r = run_in(d, &["keygen", "--out", "k"]).fails(2);
    assert!(r.stderr.contains("refusing to overwrite"), "{}", r.stderr);
    run_in(d, &["keygen", "--out", "k16", "--size", "16"]).ok();
    assert_eq!(std::fs::read(d.join("k16")).unwrap().len(), 16);
    run_in(d, &["keygen", "--out", "k8", "--size", "8"]).fails(2);
}

#[test]
fn a_model_tree_round_trips_and_tampering_leaves_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("model/1")).unwrap();
    std::fs::create_dir_all(d.join("model/2")).unwrap();
    let big: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(d.join("model/1/model.onnx"), &big).unwrap();
    std::fs::write(d.join("model/2/model.onnx"), b"v2").unwrap();
    run_in(d, &["keygen", "--out", "k"]).ok();
    run_in(d, &["seal", "--key", "k", "model", "sealed"]).ok();
    let sealed = std::fs::read(d.join("sealed/1/model.onnx.sealed")).unwrap();
    assert!(
        !sealed.windows(64).any(|w| w == &big[1000..1064]),
        "plaintext visible in sealed file"
    );
    run_in(d, &["unseal", "--key", "k", "sealed", "back"]).ok();
    assert_eq!(std::fs::read(d.join("back/1/model.onnx")).unwrap(), big);
    assert_eq!(std::fs::read(d.join("back/2/model.onnx")).unwrap(), b"v2");

    // Bound name.
    run_in(
        d,
        &[
            "unseal",
            "--key",
            "k",
            "--expect-name",
            "1/model.onnx",
            "sealed/1/model.onnx.sealed",
            "one",
        ],
    )
    .ok();
    let r = run_in(
        d,
        &[
            "unseal",
            "--key",
            "k",
            "--expect-name",
            "2/model.onnx",
            "sealed/1/model.onnx.sealed",
            "two",
        ],
    )
    .fails(2);
    assert!(r.stderr.contains("bound name mismatch"), "{}", r.stderr);

    // A flipped byte late in the file: an error that says so, and nothing left behind.
    let mut m = sealed.clone();
    let n = m.len();
    m[n - 100] ^= 1;
    std::fs::write(d.join("tampered.sealed"), &m).unwrap();
    let r = run_in(d, &["unseal", "--key", "k", "tampered.sealed", "out.onnx"]).fails(2);
    assert!(r.stderr.contains("tampered"), "{}", r.stderr);
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !leftovers
            .iter()
            .any(|n| n.to_string_lossy().contains("out.onnx")),
        "{leftovers:?}"
    );

    // The wrong key.
    run_in(d, &["keygen", "--out", "k2"]).ok();
    let r = run_in(
        d,
        &["unseal", "--key", "k2", "sealed/2/model.onnx.sealed", "x"],
    )
    .fails(2);
    assert!(r.stderr.contains("wrong key"), "{}", r.stderr);
}

#[test]
fn stdin_and_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_in(d, &["keygen", "--out", "k"]).ok();
    std::fs::write(d.join("p"), b"hello sealed world").unwrap();
    let out = std::process::Command::new(bin())
        .args(["seal", "--key", "k", "--name", "p", "-", "-"])
        .current_dir(d)
        .stdin(std::fs::File::open(d.join("p")).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(d.join("s"), &out.stdout).unwrap();
    let r = run_in(d, &["unseal", "--key", "k", "s", "-"]).ok();
    assert_eq!(r.stdout, "hello sealed world");
}

#[test]
fn gramine_vector_and_gramine_format() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let g = vectors().join("gramine");
    run_in(
        d,
        &[
            "unseal",
            "--key",
            s(&g.join("wrap_key")),
            "--format",
            "gramine",
            "--expect-name",
            "enc_files/input.txt",
            s(&g.join("input.txt.pf")),
            "input.txt",
        ],
    )
    .ok();
    let out = std::fs::read(d.join("input.txt")).unwrap();
    assert_eq!(out.len(), 52_258);
    run_in(d, &["keygen", "--out", "k16", "--size", "16"]).ok();
    run_in(
        d,
        &[
            "seal",
            "--key",
            "k16",
            "--format",
            "gramine",
            "--gramine-path",
            "models/x",
            "input.txt",
            "x.pf",
        ],
    )
    .ok();
    run_in(
        d,
        &[
            "unseal",
            "--key",
            "k16",
            "--format",
            "gramine",
            "--expect-name",
            "models/x",
            "x.pf",
            "x.txt",
        ],
    )
    .ok();
    assert_eq!(std::fs::read(d.join("x.txt")).unwrap(), out);
    let r = run_in(d, &["seal", "--key", "k16", "input.txt", "y"]).fails(2);
    assert!(r.stderr.contains("needs 32"), "{}", r.stderr);
}
