//! The README walkthrough, run as written (three roles as separate processes), and a negative
//! run in which the server's measurement is not in the broker's policy.
mod harness;
use harness::*;
use std::path::Path;
use std::process::Command;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// The README's walkthrough block, with its ports replaced by free ones.
fn walkthrough() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("<!-- walkthrough:start -->")
        .expect("walkthrough start marker");
    let end = readme
        .find("<!-- walkthrough:end -->")
        .expect("walkthrough end marker");
    let block = &readme[start..end];
    let script: String = block
        .lines()
        .filter(|l| !l.starts_with("```") && !l.starts_with("<!--"))
        .map(|l| format!("{l}\n"))
        .collect();
    script
        .replace("4430", &free_port().to_string())
        .replace("8500", &free_port().to_string())
        .replace("8501", &free_port().to_string())
}

/// The REST port the walkthrough's `serve` was given.
fn rest_port(script: &str) -> String {
    script
        .split("--rest_api_port ")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .to_owned()
}

fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("models"), &dir.path().join("models"));
    copy_dir(&repo().join("testdata"), &dir.path().join("testdata"));
    dir
}

fn bash(dir: &Path, script: &str) -> std::process::Output {
    let path = format!(
        "{}:{}",
        bin().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let full =
        format!("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{script}");
    Command::new("bash")
        .arg("-c")
        .arg(full)
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[test]
fn readme_walkthrough_runs_as_written() {
    let dir = workdir();
    let out = bash(dir.path(), &walkthrough());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "walkthrough failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    // gRPC predict, REST predict (curl), attested REST predict.
    assert!(stdout.matches("\"class\"").count() >= 2, "{stdout}");
    assert!(stdout.contains("\"predictions\""), "{stdout}");
    assert!(stdout.contains("\"attestation\""), "{stdout}");
    assert!(stderr.contains("admitted by policy"), "{stderr}");
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.lines().filter(|l| l.contains("\"granted\"")).count() >= 2,
        "{audit}"
    );
}

/// The host keeps a sealed version that the owner's admitted-models list leaves out (here a
/// second version, sealed by the owner but not admitted): the server never serves it, says why
/// in the version's status, and keeps serving the admitted version.
#[test]
fn a_sealed_version_the_owner_did_not_admit_is_not_served() {
    let dir = workdir();
    copy_dir(
        &dir.path().join("models/digits/1"),
        &dir.path().join("models/digits/2"),
    );
    let script = walkthrough();
    let rest_port = rest_port(&script);
    let check = format!(
        "curl -s --cacert tls/ca.pem https://127.0.0.1:{rest_port}/v1/models/digits > status.json"
    );
    let cut = script.find("# Requester: gRPC and REST").unwrap();
    let out = bash(
        dir.path(),
        &format!(
            "{}
{check}
",
            &script[..cut]
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("status.json")).unwrap()).unwrap();
    let versions = status["model_version_status"].as_array().unwrap();
    let v = |n: &str| versions.iter().find(|x| x["version"] == n).unwrap();
    assert_eq!(v("1")["state"], "AVAILABLE", "{status}");
    assert_eq!(v("2")["state"], "END", "{status}");
    let msg = v("2")["status"]["error_message"].as_str().unwrap();
    assert!(
        msg.contains("not among the digests the owner admits"),
        "{msg}"
    );
}

fn files_containing(root: &Path, needle: &[u8], skip: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let p = e.path();
        if p.starts_with(skip) {
            continue;
        }
        if p.is_dir() {
            files_containing(&p, needle, skip, out);
        } else if let Ok(b) = std::fs::read(&p) {
            if b.windows(needle.len()).any(|w| w == needle) {
                out.push(p.display().to_string());
            }
        }
    }
}

#[test]
fn a_server_not_in_the_policy_is_refused_and_no_plaintext_reaches_disk() {
    let dir = workdir();
    let script = walkthrough();
    // Owner's part only, with a policy pinned to another measurement.
    let cut = script.find("# TEE host: the server attests").unwrap();
    let owner = script[..cut].replace("$(teeserve attest measure)", &"ab".repeat(32));
    let kbs_port = owner
        .split("listen = \"127.0.0.1:")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let serve = format!(
        "if teeserve serve --platform simulated --sim_dir sim --kbs 127.0.0.1:{kbs_port} --kbs_ca tls/ca.pem --kbs_tls_key_secret tls-key \
         --model_name digits --model_base_path sealed/digits --tls_cert tls/server.pem --port {} --rest_api_port {}; then echo \"serve exited 0\"; else echo \"serve exited $?\"; fi",
        free_port(),
        free_port()
    );
    let out = bash(dir.path(), &format!("{owner}\n{serve}\n"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("serve exited 2"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains("rule mrenclave") && stderr.contains("is not one of"),
        "{stderr}"
    );
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"rule\":\"mrenclave\""), "{audit}");
    // The plaintext model exists only in the owner's models/ directory.
    let model = std::fs::read(dir.path().join("models/digits/1/model.onnx")).unwrap();
    let needle = &model[model.len() / 2..model.len() / 2 + 64];
    let mut found = Vec::new();
    files_containing(dir.path(), needle, &dir.path().join("models"), &mut found);
    assert!(found.is_empty(), "plaintext model bytes found in {found:?}");
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        vec!["--help"],
        vec!["demo", "--help"],
        vec!["attest", "verify", "--help"],
        vec!["attest", "quote", "--help"],
        vec!["attest", "measure", "--help"],
        vec!["collateral", "fetch", "--help"],
        vec!["sim", "init", "--help"],
        vec!["keygen", "--help"],
        vec!["seal", "--help"],
        vec!["unseal", "--help"],
        vec!["kbs", "--help"],
        vec!["kbs", "get", "--help"],
        vec!["tls", "init", "--help"],
        vec!["serve", "--help"],
        vec!["predict", "--help"],
    ] {
        let r = run(&sub).ok();
        assert!(r.stdout.contains("Usage:"), "{sub:?}: {}", r.stdout);
    }
}

/// The owner changes their mind while the server runs. The broker's admitted-models list first
/// admits versions 1 and 2 (version 2 serves). The owner retires version 2 (list updated,
/// broker SIGHUP): within the refresh period (`--kbs_admitted_refresh_seconds`) it stops
/// serving and version 1 takes over, without a restart. The owner then admits version 2 only:
/// it serves again, and when the host removes it to make the server fall back, version 1 is not
/// served again.
#[test]
fn the_owners_retirement_reaches_a_running_server() {
    let dir = workdir();
    copy_dir(
        &dir.path().join("models/digits/1"),
        &dir.path().join("models/digits/2"),
    );
    let script = walkthrough();
    let rest_port = rest_port(&script);
    let cut = script.find("# Requester: gRPC and REST").unwrap();
    assert!(
        script.contains("--kbs_admitted_models_secret admitted-models"),
        "the serve line changed: {script}"
    );
    let setup = script[..cut]
        .replace(
            "--kbs_admitted_models_secret admitted-models",
            "--kbs_admitted_models_secret admitted-models --kbs_admitted_refresh_seconds 1 --file_system_poll_wait_seconds 1",
        )
        .replace(
            "printf '{\"digits\": {\"sha256\": [\"%s\"]}}\\n' \\\n  \"$(sha256sum sealed/digits/1/model.onnx.sealed | cut -d' ' -f1)\" > admitted-models.json",
            "printf '{\"digits\": {\"sha256\": [\"%s\", \"%s\"]}}\\n' \"$(sha256sum sealed/digits/1/model.onnx.sealed | cut -d' ' -f1)\" \"$(sha256sum sealed/digits/2/model.onnx.sealed | cut -d' ' -f1)\" > admitted-models.json",
        );
    assert!(
        setup.contains("\"%s\", \"%s\""),
        "the list line changed: {setup}"
    );
    let out = bash(
        dir.path(),
        &format!(
            r#"{setup}
status() {{ curl -s --cacert tls/ca.pem https://127.0.0.1:{rest_port}/v1/models/digits > "$1"; }}
status start.json
# The owner retires version 2 at the broker.
printf '{{"digits": {{"sha256": ["%s"]}}}}\n' "$(sha256sum sealed/digits/1/model.onnx.sealed | cut -d' ' -f1)" > admitted-models.json
kill -HUP "$(jobs -p | head -n1)"
sleep 3
status retired.json
# The owner admits version 2 only.
printf '{{"digits": {{"sha256": ["%s"]}}}}\n' "$(sha256sum sealed/digits/2/model.onnx.sealed | cut -d' ' -f1)" > admitted-models.json
kill -HUP "$(jobs -p | head -n1)"
sleep 3
status readmitted.json
# The host removes version 2, hoping version 1 comes back.
rm -r sealed/digits/2
sleep 3
status fallback.json
"#
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.path().join(f)).unwrap()).unwrap()
    };
    let state = |v: &serde_json::Value, n: &str| -> (String, String) {
        let x = v["model_version_status"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["version"] == n)
            .cloned()
            .unwrap_or_default();
        (
            x["state"].as_str().unwrap_or("ABSENT").to_owned(),
            x["status"]["error_message"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        )
    };
    let start = read("start.json");
    assert_eq!(state(&start, "2").0, "AVAILABLE", "{start}");
    let retired = read("retired.json");
    let (s2, why2) = state(&retired, "2");
    assert_eq!(s2, "END", "{retired}");
    assert!(why2.contains("retired by the owner"), "{retired}");
    assert_eq!(state(&retired, "1").0, "AVAILABLE", "{retired}");
    let readmitted = read("readmitted.json");
    assert_eq!(state(&readmitted, "2").0, "AVAILABLE", "{readmitted}");
    let fallback = read("fallback.json");
    let (s1, why1) = state(&fallback, "1");
    assert_ne!(s1, "AVAILABLE", "version 1 came back: {fallback}");
    assert!(why1.contains("not among the digests"), "{fallback}");
}
