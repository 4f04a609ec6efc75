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
            "model/1/model.onnx",
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
            "model/2/model.onnx",
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
fn unsealing_a_directory_checks_every_bound_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for v in ["1", "2"] {
        std::fs::create_dir_all(d.join(format!("digits/{v}"))).unwrap();
        std::fs::write(
            d.join(format!("digits/{v}/model.onnx")),
            format!("weights of version {v}"),
        )
        .unwrap();
    }
    run_in(d, &["keygen", "--out", "k"]).ok();
    let r = run_in(d, &["seal", "--key", "k", "digits", "sealed/digits"]).ok();
    assert!(r.stderr.contains("model \"digits\""), "{}", r.stderr);
    // The names carry the model, the version and the file.
    run_in(
        d,
        &[
            "unseal",
            "--key",
            "k",
            "--expect-name",
            "digits/2/model.onnx",
            "sealed/digits/2/model.onnx.sealed",
            "-",
        ],
    )
    .ok();
    run_in(d, &["unseal", "--key", "k", "sealed/digits", "back"]).ok();
    assert_eq!(
        std::fs::read(d.join("back/2/model.onnx")).unwrap(),
        b"weights of version 2"
    );

    // The host swaps the two versions' sealed files: unsealing the directory refuses, naming
    // the file and both names, and writes no plaintext of the swapped file.
    let one = d.join("sealed/digits/1/model.onnx.sealed");
    let two = d.join("sealed/digits/2/model.onnx.sealed");
    let (a, b) = (std::fs::read(&one).unwrap(), std::fs::read(&two).unwrap());
    std::fs::write(&one, &b).unwrap();
    std::fs::write(&two, &a).unwrap();
    let r = run_in(d, &["unseal", "--key", "k", "sealed/digits", "swapped"]).fails(2);
    assert!(r.stderr.contains("bound name mismatch"), "{}", r.stderr);
    assert!(r.stderr.contains("digits/2/model.onnx"), "{}", r.stderr);
    assert!(r.stderr.contains("digits/1/model.onnx"), "{}", r.stderr);
    assert!(!d.join("swapped/1/model.onnx").exists());

    // The model is the one the files were sealed for, wherever the directory lies; a file of
    // another model among them is refused, and so is the whole tree when another model is
    // expected.
    std::fs::write(&one, &a).unwrap();
    std::fs::write(&two, &b).unwrap();
    std::fs::rename(d.join("sealed/digits"), d.join("sealed/copy")).unwrap();
    let r = run_in(d, &["unseal", "--key", "k", "sealed/copy", "o"]).ok();
    assert!(r.stderr.contains("bound to \"digits\""), "{}", r.stderr);
    let r = run_in(
        d,
        &[
            "unseal",
            "--key",
            "k",
            "--expect-name",
            "other",
            "sealed/copy",
            "o2",
        ],
    )
    .fails(2);
    assert!(r.stderr.contains("other/1/model.onnx"), "{}", r.stderr);
    std::fs::create_dir_all(d.join("other/2")).unwrap();
    std::fs::write(d.join("other/2/model.onnx"), b"another model").unwrap();
    run_in(d, &["seal", "--key", "k", "other", "sealed/other"]).ok();
    std::fs::copy(
        d.join("sealed/other/2/model.onnx.sealed"),
        d.join("sealed/copy/2/model.onnx.sealed"),
    )
    .unwrap();
    let r = run_in(d, &["unseal", "--key", "k", "sealed/copy", "o3"]).fails(2);
    assert!(r.stderr.contains("\"other/2/model.onnx\""), "{}", r.stderr);

    // A file outside any version directory is not part of a model: sealing says so.
    std::fs::write(d.join("digits/notes.txt"), b"x").unwrap();
    let r = run_in(d, &["seal", "--key", "k", "digits", "s2"]).fails(2);
    assert!(
        r.stderr.contains("not inside a version directory"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_refused_file_in_a_directory_leaves_no_plaintext_of_the_files_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for v in ["1", "2"] {
        std::fs::create_dir_all(d.join(format!("digits/{v}"))).unwrap();
        std::fs::write(
            d.join(format!("digits/{v}/model.onnx")),
            format!("weights of version {v}"),
        )
        .unwrap();
    }
    run_in(d, &["keygen", "--out", "k"]).ok();
    run_in(d, &["seal", "--key", "k", "digits", "sealed/digits"]).ok();
    // Version 1 unseals first; version 2's last byte is flipped, so it is refused after.
    let two = d.join("sealed/digits/2/model.onnx.sealed");
    let mut b = std::fs::read(&two).unwrap();
    *b.last_mut().unwrap() ^= 1;
    std::fs::write(&two, &b).unwrap();

    let r = run_in(d, &["unseal", "--key", "k", "sealed/digits", "back"]).fails(2);
    assert!(r.stderr.contains("2/model.onnx.sealed"), "{}", r.stderr);
    assert!(
        !d.join("back").exists(),
        "the output folder it made is removed, with version 1's plaintext"
    );

    // Into a folder that was already there: what unseal wrote goes, what was there stays.
    std::fs::create_dir_all(d.join("mine")).unwrap();
    std::fs::write(d.join("mine/notes.txt"), b"the user's").unwrap();
    run_in(d, &["unseal", "--key", "k", "sealed/digits", "mine"]).fails(2);
    assert!(!d.join("mine/1/model.onnx").exists());
    assert!(!d.join("mine/1").exists());
    assert_eq!(
        std::fs::read(d.join("mine/notes.txt")).unwrap(),
        b"the user's"
    );
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
    let vectors = teeserve_testkit::require_vectors!();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let g = vectors.join("gramine");
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

#[path = "../../seal/tests/support/independent.rs"]
mod independent;

/// Issue: the stock TF Serving recipe encrypts the whole model directory. A SavedModel base
/// directory of two versions, sealed in Gramine's format as docs/deploy.md path 2 says, is read
/// back file by file with an independent Gramine reader, each file bound to the host path the
/// manifest's encrypted mount opens it by.
#[test]
fn a_savedmodel_directory_sealed_for_the_tf_serving_manifest_opens_under_the_mounted_paths() {
    let manifest = std::fs::read_to_string(
        repo().join("deploy/gramine/tfserving/tensorflow_model_server.manifest.template"),
    )
    .unwrap();
    assert!(
        manifest.contains(
            r#"{ type = "encrypted", path = "/models/{{ model_name }}", uri = "file:models/{{ model_name }}""#
        ),
        "the manifest's model mount changed; update this test and docs/deploy.md"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let files = [
        ("1/saved_model.pb", 5000usize),
        ("1/variables/variables.index", 300),
        ("1/variables/variables.data-00000-of-00001", 20_000),
        ("1/assets.extra/tf_serving_warmup_requests", 100),
        ("2/saved_model.pb", 5100),
        ("2/variables/variables.index", 310),
        ("2/variables/variables.data-00000-of-00001", 3072),
    ];
    for (rel, n) in files {
        let p = d.join("resnet").join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let bytes: Vec<u8> = (0..n).map(|i| (i * 7 + rel.len()) as u8).collect();
        std::fs::write(p, bytes).unwrap();
    }
    run_in(d, &["keygen", "--size", "16", "--out", "wrap_key"]).ok();
    run_in(
        d,
        &[
            "seal",
            "--key",
            "wrap_key",
            "--format",
            "gramine",
            "resnet",
            "models/resnet",
        ],
    )
    .ok();
    let key = std::fs::read(d.join("wrap_key")).unwrap();
    for (rel, _) in files {
        let sealed = std::fs::read(d.join("models/resnet").join(rel)).unwrap();
        let plain = std::fs::read(d.join("resnet").join(rel)).unwrap();
        assert_eq!(
            independent::bound_path(&key, &sealed),
            format!("models/resnet/{rel}"),
            "{rel}: Gramine opens it by the mount URI's host path"
        );
        assert_eq!(independent::decrypt(&key, &sealed), plain, "{rel}");
    }
}
