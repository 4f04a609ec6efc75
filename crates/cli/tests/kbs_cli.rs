//! `teeserve kbs` and `teeserve kbs get` as processes: grants, refusals with the rule, SIGHUP
//! reload, and a broken reload that keeps the old configuration.
mod harness;
use harness::*;
use std::process::Command;

fn config(measure: &str, extra: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\ntls_cert = \"tls/kbs.pem\"\ntls_key = \"tls/kbs.key\"\naudit_log = \"audit.jsonl\"\n\
         [collateral]\nbundle = \"sim/collateral.json\"\nroot = \"sim/root.pem\"\n\
         [secrets.model-key]\nfile = \"model.key\"\n{extra}\n\
         [[policies]]\nname = \"p\"\nmrenclave = [\"{measure}\"]\nallow_simulated = true\nsecrets = [\"model-key\", \"extra\"]\n"
    )
}

#[test]
fn grants_refusals_and_sighup_reload() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_in(d, &["sim", "init", "--dir", "sim"]).ok();
    run_in(d, &["tls", "init", "--dir", "tls", "--name", "kbs"]).ok();
    run_in(d, &["keygen", "--out", "model.key"]).ok();
    std::fs::write(d.join("extra.bin"), b"extra secret").unwrap();
    let me = run(&["attest", "measure"]).ok().stdout.trim().to_owned();
    // "extra" is listed by the policy but not defined yet: the broker refuses to start.
    std::fs::write(d.join("kbs.toml"), config(&me, "")).unwrap();
    let r = run_in(d, &["kbs", "--config", "kbs.toml"]).fails(2);
    assert!(
        r.stderr.contains("secret \"extra\" is not defined"),
        "{}",
        r.stderr
    );
    std::fs::write(
        d.join("kbs.toml"),
        config(&me, "[secrets.extra]\nfile = \"model.key\""),
    )
    .unwrap();
    let (child, addr) = start_kbs(d);
    let kbs_get = |extra: &[&str]| {
        let mut args = vec![
            "kbs",
            "get",
            "--kbs",
            &addr,
            "--ca",
            "tls/ca.pem",
            "--platform",
            "simulated",
            "--sim-dir",
            "sim",
        ];
        args.extend_from_slice(extra);
        run_in(d, &args)
    };
    let get = |secret: &str, out: &str| kbs_get(&["--secret", secret, "--out", out]);
    get("model-key", "got.key").ok();
    assert_eq!(
        std::fs::read(d.join("got.key")).unwrap(),
        std::fs::read(d.join("model.key")).unwrap()
    );
    let v = kbs_get(&["--verdict"]).ok().json();
    assert_eq!(v["sgx"]["mrenclave"], me);
    let r = get("nope", "x").fails(1);
    assert!(r.stderr.contains("404"), "{}", r.stderr);

    // Reload with a new value for "extra".
    std::fs::write(
        d.join("kbs.toml"),
        config(&me, "[secrets.extra]\nfile = \"extra.bin\""),
    )
    .unwrap();
    let hup = |pid: u32| {
        Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
    };
    assert!(hup(child.0.id()).success());
    let mut reloaded = false;
    for i in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let out = format!("extra{i}.bin");
        if get("extra", &out).code == 0 && std::fs::read(d.join(&out)).unwrap() == b"extra secret" {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "SIGHUP did not reload the configuration");
    // A broken configuration is rejected; the old one stays.
    std::fs::write(d.join("kbs.toml"), "listen = [").unwrap();
    assert!(hup(child.0.id()).success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    get("extra", "after-broken.bin").ok();
    assert_eq!(
        std::fs::read(d.join("after-broken.bin")).unwrap(),
        b"extra secret"
    );
    let audit = std::fs::read_to_string(d.join("audit.jsonl")).unwrap();
    assert!(
        audit.lines().filter(|l| l.contains("\"granted\"")).count() >= 3,
        "{audit}"
    );
}
