//! The host cannot choose the model: a server that unseals its models serves only files sealed
//! for the model and version they sit in, and only those the owner's admitted-models list (when
//! the key broker releases one) admits. Each test is an attack from the host's side: a file
//! dropped, moved or kept in the model directory.
use std::path::{Path, PathBuf};
use std::time::Duration;

use teeserve_seal::binding;
use teeserve_seal::SealKey;
use teeserve_serving::engine::EngineChoice;
use teeserve_serving::{
    AdmittedModels, ModelCode, ModelRepository, ModelSource, ServedModel, State, MODEL_FILE,
    SEALED_FILE,
};
use teeserve_serving::{ModelConfig, VersionPolicy};
use teeserve_serving::{ServeOptions, Server};

fn model_bytes() -> Vec<u8> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read(repo.join("models/digits/1/model.onnx")).unwrap()
}

fn seal(key: &SealKey, bound: &str) -> Vec<u8> {
    let m = model_bytes();
    let mut out = Vec::new();
    teeserve_seal::stream::seal(
        key,
        bound,
        m.len() as u64,
        &m[..],
        &mut out,
        &Default::default(),
    )
    .unwrap();
    out
}

fn put(base: &Path, version: i64, file: &str, bytes: &[u8]) {
    let d = base.join(version.to_string());
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(file), bytes).unwrap();
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

fn repository(base: &Path, source: ModelSource, policy: VersionPolicy) -> ModelRepository {
    let engine = EngineChoice::default().start(1).unwrap();
    let r = ModelRepository::new(
        engine,
        source,
        vec![ModelConfig {
            name: "digits".into(),
            base_path: base.display().to_string(),
            policy,
            labels: Default::default(),
        }],
    );
    r.sync();
    r
}

fn error_of(r: &ModelRepository, version: i64) -> String {
    let m = r.model("digits").unwrap();
    let v = &m.versions[&version];
    assert_eq!(
        v.state,
        State::End,
        "version {version} should have been refused"
    );
    v.error.clone().unwrap()
}

/// The attack of the review: a plaintext model dropped as a new version into the directory of
/// a server that received its model key. It used to be served within the poll interval.
#[tokio::test]
async fn a_plaintext_version_dropped_by_the_host_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("digits");
    let key = SealKey::generate(32).unwrap();
    std::fs::write(dir.path().join("model.key"), key.bytes()).unwrap();
    put(
        &base,
        1,
        SEALED_FILE,
        &seal(&key, &binding::model_file("digits", 1, MODEL_FILE)),
    );
    let o = ServeOptions {
        port: 0,
        rest_api_port: teeserve_serving::free_loopback_port().unwrap(),
        rest_bind: "127.0.0.1".into(),
        model_name: "digits".into(),
        model_base_path: Some(base.clone()),
        file_system_poll_wait_seconds: 1,
        model_key_file: Some(dir.path().join("model.key")),
        tls: teeserve_serving::TlsOptions {
            insecure: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let s = Server::start(o, None).await.unwrap();
    assert!(s.core.resolve("digits", Some(1), None).is_ok());

    // The host adds version 2 in plaintext (a valid model: only its being plaintext is wrong).
    put(&base, 2, MODEL_FILE, &model_bytes());
    let mut status = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let st = s.core.status_of("digits", Some(2), None);
        if let Ok(st) = st {
            let msg = st.model_version_status[0]
                .status
                .as_ref()
                .map(|x| x.error_message.clone())
                .unwrap_or_default();
            if !msg.is_empty() {
                status = Some(msg);
                break;
            }
        }
    }
    let msg = status.expect("version 2 was never examined");
    assert!(msg.contains("plaintext model"), "{msg}");
    // Requests still reach the sealed version 1, over the real socket.
    let mut c =
        teeserve_client::RestClient::connect(&s.rest_addr.unwrap().to_string(), None, "127.0.0.1")
            .await
            .unwrap();
    let (st, body) = c
        .request(hyper::Method::GET, "/v1/models/digits", Vec::new())
        .await
        .unwrap();
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let available: Vec<&str> = v["model_version_status"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["state"] == "AVAILABLE")
        .map(|x| x["version"].as_str().unwrap())
        .collect();
    assert_eq!(available, ["1"], "{v}");
    assert_eq!(s.core.resolve("digits", None, None).unwrap().version, 1);
    s.shutdown().await;
}

#[test]
fn a_file_sealed_for_another_model_or_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("digits");
    let key = SealKey::generate(32).unwrap();
    // Sealed with the same key, for another model of the same owner.
    put(
        &base,
        1,
        SEALED_FILE,
        &seal(&key, &binding::model_file("other", 1, MODEL_FILE)),
    );
    // Sealed for version 1, copied to version 2.
    put(
        &base,
        2,
        SEALED_FILE,
        &seal(&key, &binding::model_file("digits", 1, MODEL_FILE)),
    );
    // What older teeserve wrote: bound to the version only.
    put(&base, 3, SEALED_FILE, &seal(&key, "3/model.onnx"));
    let good = seal(&key, &binding::model_file("digits", 4, MODEL_FILE));
    put(&base, 4, SEALED_FILE, &good);
    let r = repository(
        &base,
        ModelSource {
            key: Some(key),
            admitted: None,
        },
        VersionPolicy::All,
    );
    let e = error_of(&r, 1);
    assert!(
        e.contains("\"other/1/model.onnx\"") && e.contains("\"digits/1/model.onnx\""),
        "{e}"
    );
    let e = error_of(&r, 2);
    assert!(e.contains("not for \"digits/2/model.onnx\""), "{e}");
    let e = error_of(&r, 3);
    assert!(e.contains("\"3/model.onnx\""), "{e}");
    assert_eq!(
        r.served(),
        [ServedModel {
            name: "digits".into(),
            version: 4,
            sha256: sha256(&good),
            code: ModelCode {
                operators: "onnx".into(),
                row_independent: false,
            },
        }]
    );
}

#[test]
fn the_owners_admitted_list_retires_sealed_versions() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("digits");
    let key = SealKey::generate(32).unwrap();
    let v1 = seal(&key, &binding::model_file("digits", 1, MODEL_FILE));
    let v2 = seal(&key, &binding::model_file("digits", 2, MODEL_FILE));
    put(&base, 1, SEALED_FILE, &v1);
    put(&base, 2, SEALED_FILE, &v2);
    let source = |list: &str| ModelSource {
        key: Some(SealKey::from_bytes(key.bytes()).unwrap()),
        admitted: Some(AdmittedModels::from_json(list.as_bytes()).unwrap()),
    };

    // A lowest version: version 1, properly sealed, is retired.
    let r = repository(
        &base,
        source(r#"{"digits": {"min_version": 2}}"#),
        VersionPolicy::All,
    );
    assert!(error_of(&r, 1).contains("below the lowest version the owner admits (2)"));
    assert_eq!(
        r.served().iter().map(|m| m.version).collect::<Vec<_>>(),
        [2]
    );

    // Digests: only the listed file is served, whatever its version number.
    let list = format!(
        r#"{{"digits": {{"sha256": ["{}"]}}}}"#,
        sha256(&v1).to_uppercase()
    );
    let r = repository(&base, source(&list), VersionPolicy::All);
    assert!(error_of(&r, 2).contains("not among the digests the owner admits"));
    assert_eq!(
        r.served().iter().map(|m| m.version).collect::<Vec<_>>(),
        [1]
    );
    // With the newest version refused, Latest(1) falls back to the admitted one.
    let r = repository(&base, source(&list), VersionPolicy::Latest(1));
    assert!(r.ready());
    assert_eq!(
        r.served().iter().map(|m| m.version).collect::<Vec<_>>(),
        [1]
    );

    // A model the list does not name is not served at all.
    let r = repository(
        &base,
        source(r#"{"mnist": {"min_version": 1}}"#),
        VersionPolicy::All,
    );
    assert!(error_of(&r, 1).contains("does not name model \"digits\""));
    assert!(!r.ready());

    // Malformed lists are refused with the reason.
    for (bad, why) in [
        (r#"{"digits": {}}"#, "give \"sha256\""),
        (r#"{"digits": {"sha256": ["abc"]}}"#, "not a SHA-256 digest"),
        (r#"{"digits": {"min_versoin": 1}}"#, "unknown field"),
        ("[1]", "invalid type"),
    ] {
        let e = AdmittedModels::from_json(bad.as_bytes()).unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
    }
}
