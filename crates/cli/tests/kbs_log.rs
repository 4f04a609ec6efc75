//! `teeserve kbs log` as processes against a real broker's signed audit log: verify, prove and
//! check-proof on an honest log; every rewrite an attacker with the broker's disk could make
//! (a grant edited, a refusal deleted, two lines swapped, the tail cut off, a checkpoint
//! re-signed with another key, a fork, a line appended) refused by `verify`, naming the entry;
//! and a broker killed with SIGKILL after a grant's line and before its secret leaves a log
//! that still verifies.
mod harness;
use harness::*;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use teeserve_ratls::tlog::checkpoint::Checkpoint;
use teeserve_ratls::tlog::note::SigningKey;

/// The owner's files: a simulated platform, TLS material, a model key, the log's key and a
/// kbs.toml that signs its log, grants model-key to this binary and refuses `other`.
fn setup(d: &Path) {
    run_in(d, &["sim", "init", "--dir", "sim"]).ok();
    run_in(d, &["tls", "init", "--dir", "tls", "--name", "kbs"]).ok();
    run_in(d, &["keygen", "--out", "model.key"]).ok();
    let vkey = run_in(
        d,
        &[
            "kbs",
            "log",
            "keygen",
            "--out",
            "log.key",
            "--origin",
            "kbs.test/log",
        ],
    )
    .ok()
    .stdout;
    assert_eq!(
        vkey.trim(),
        std::fs::read_to_string(d.join("log.key.pub"))
            .unwrap()
            .trim()
    );
    let me = run(&["attest", "measure"]).ok().stdout.trim().to_owned();
    std::fs::write(
        d.join("kbs.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\ntls_cert = \"tls/kbs.pem\"\ntls_key = \"tls/kbs.key\"\naudit_log = \"audit.jsonl\"\n\
             [log]\nsigning_key = \"log.key\"\n\
             [collateral]\nbundle = \"sim/collateral.json\"\nroot = \"sim/root.pem\"\n\
             [secrets.model-key]\nfile = \"model.key\"\n[secrets.other]\nfile = \"model.key\"\n\
             [[policies]]\nname = \"p\"\nmrenclave = [\"{me}\"]\nallow_simulated = true\nsecrets = [\"model-key\"]\n\
             [[policies]]\nname = \"q\"\nmrenclave = [\"{}\"]\nallow_simulated = true\nsecrets = [\"other\"]\n",
            "00".repeat(32)
        ),
    )
    .unwrap();
}

/// Starts `teeserve kbs` in `d`; returns it and its native address.
fn broker(d: &Path) -> (Kill, String) {
    let (child, addr) = start_kbs(d);
    (child, addr)
}

fn get_command(d: &Path, addr: &str, secret: &str, out: &str) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(d).args([
        "kbs",
        "get",
        "--kbs",
        addr,
        "--ca",
        "tls/ca.pem",
        "--platform",
        "simulated",
        "--sim-dir",
        "sim",
        "--secret",
        secret,
        "--out",
        out,
    ]);
    c
}

fn get(d: &Path, addr: &str, secret: &str, out: &str) -> i32 {
    get_command(d, addr, secret, out)
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .code()
        .unwrap_or(-1)
}

fn verify(d: &Path) -> Run {
    run_in(
        d,
        &[
            "kbs",
            "log",
            "verify",
            "--log",
            "audit.jsonl",
            "--key",
            "log.key.pub",
        ],
    )
}

fn copy_log(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["audit.jsonl", "audit.jsonl.tlog", "log.key.pub", "log.key"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(p: &Path, l: &[String]) {
    std::fs::write(p, l.iter().map(|x| format!("{x}\n")).collect::<String>()).unwrap();
}

/// Runs `verify` on a copy of the log after `attack`, and returns what it said.
fn attacked(d: &Path, name: &str, attack: impl FnOnce(&Path)) -> String {
    let c = d.join(name);
    copy_log(d, &c);
    attack(&c);
    let r = verify(&c).fails(1);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    r.stderr
}

#[test]
fn an_honest_log_verifies_and_proves_and_every_rewrite_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let (mut kbs, addr) = broker(d);
    // start, grant, refusal, grant, refusal, grant, stop.
    for (secret, code) in [
        ("model-key", 0),
        ("other", 1),
        ("model-key", 0),
        ("other", 1),
        ("model-key", 0),
    ] {
        let out = format!("got-{}", std::fs::read_dir(d).unwrap().count());
        assert_eq!(get(d, &addr, secret, &out), code, "{secret}");
    }
    // SIGTERM: the broker logs its stop.
    assert!(Command::new("kill")
        .args(["-TERM", &kbs.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    kbs.0.wait().unwrap();
    let entries = lines(&d.join("audit.jsonl"));
    assert_eq!(entries.len(), 7, "{entries:?}");
    assert!(
        entries[0].contains("\"event\":\"start\"") && entries[6].contains("\"event\":\"stop\"")
    );
    let ok = verify(d).ok();
    assert!(
        ok.stdout
            .starts_with("verified 7 entries, tree size 7, root "),
        "{}",
        ok.stdout
    );

    // An inclusion proof of the first grant, checked offline with the verifier key alone.
    let proof = run_in(
        d,
        &[
            "kbs",
            "log",
            "prove",
            "--log",
            "audit.jsonl",
            "--index",
            "1",
        ],
    )
    .ok();
    assert!(proof.stdout.starts_with("c2sp.org/tlog-proof@v1\nextra "));
    std::fs::write(d.join("grant.tlog-proof"), &proof.stdout).unwrap();
    let check = |args: &[&str]| {
        let mut a = vec!["kbs", "log", "check-proof", "--key", "log.key.pub"];
        a.extend_from_slice(args);
        run_in(d, &a)
    };
    let r = check(&["--proof", "grant.tlog-proof"]).ok();
    assert!(
        r.stdout.starts_with("included: entry 1 is in tree size 7"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("\"decision\":\"granted\""),
        "{}",
        r.stdout
    );
    std::fs::write(d.join("entry.json"), format!("{}\n", entries[1])).unwrap();
    check(&["--proof", "grant.tlog-proof", "--entry", "entry.json"]).ok();
    std::fs::write(d.join("entry.json"), &entries[3]).unwrap();
    let r = check(&["--proof", "grant.tlog-proof", "--entry", "entry.json"]).fails(1);
    assert!(
        r.stderr.contains("inclusion proof of entry 1"),
        "{}",
        r.stderr
    );
    // Another key does not verify it.
    run_in(
        d,
        &[
            "kbs",
            "log",
            "keygen",
            "--out",
            "other.key",
            "--origin",
            "kbs.test/log",
        ],
    )
    .ok();
    let r = run_in(
        d,
        &[
            "kbs",
            "log",
            "check-proof",
            "--proof",
            "grant.tlog-proof",
            "--key",
            "other.key.pub",
        ],
    )
    .fails(1);
    assert!(
        r.stderr.contains("not signed by kbs.test/log+"),
        "{}",
        r.stderr
    );

    // A consistency proof from size 2 to 7, against the checkpoint a party saw at size 2.
    let old = &serde_json::from_str::<serde_json::Value>(&lines(&d.join("audit.jsonl.tlog"))[1])
        .unwrap()["checkpoint"];
    std::fs::write(d.join("seen.checkpoint"), old.as_str().unwrap()).unwrap();
    let proof = run_in(
        d,
        &[
            "kbs",
            "log",
            "prove",
            "--log",
            "audit.jsonl",
            "--from-size",
            "2",
        ],
    )
    .ok();
    std::fs::write(d.join("grew.proof"), &proof.stdout).unwrap();
    let r = check(&[
        "--proof",
        "grew.proof",
        "--old-checkpoint",
        "seen.checkpoint",
    ])
    .ok();
    assert!(
        r.stdout.starts_with("consistent: tree size 2 "),
        "{}",
        r.stdout
    );
    let proof = run_in(
        d,
        &[
            "kbs",
            "log",
            "prove",
            "--log",
            "audit.jsonl",
            "--from-size",
            "3",
        ],
    )
    .ok();
    std::fs::write(d.join("grew.proof"), &proof.stdout).unwrap();
    let r = check(&[
        "--proof",
        "grew.proof",
        "--old-checkpoint",
        "seen.checkpoint",
    ])
    .fails(1);
    assert!(
        r.stderr.contains("is not the tree this proof starts from"),
        "{}",
        r.stderr
    );

    // The attacks.
    let key = SigningKey::parse(&std::fs::read_to_string(d.join("log.key")).unwrap()).unwrap();
    let e = attacked(d, "edited", |c| {
        let mut l = lines(&c.join("audit.jsonl"));
        l[3] = l[3].replace("\"policy\":\"p\"", "\"policy\":\"q\"");
        write_lines(&c.join("audit.jsonl"), &l);
    });
    assert!(e.contains("entry 3 (line 4): edited"), "{e}");
    let e = attacked(d, "deleted", |c| {
        let mut l = lines(&c.join("audit.jsonl"));
        assert!(l[2].contains("\"refused\""));
        l.remove(2);
        write_lines(&c.join("audit.jsonl"), &l);
    });
    assert!(e.contains("entry 2 (line 3): deleted"), "{e}");
    let e = attacked(d, "swapped", |c| {
        let mut l = lines(&c.join("audit.jsonl"));
        l.swap(4, 5);
        write_lines(&c.join("audit.jsonl"), &l);
    });
    assert!(e.contains("entry 4 (line 5): swapped with entry 5"), "{e}");
    let e = attacked(d, "truncated", |c| {
        let l = lines(&c.join("audit.jsonl"));
        write_lines(&c.join("audit.jsonl"), &l[..5]);
    });
    assert!(
        e.contains("entry 5 (line 6): missing") && e.contains("the tail was cut off"),
        "{e}"
    );
    let e = attacked(d, "appended", |c| {
        let mut l = lines(&c.join("audit.jsonl"));
        l.push(l[1].clone());
        write_lines(&c.join("audit.jsonl"), &l);
    });
    assert!(
        e.contains("entry 7 (line 8): appended without a checkpoint"),
        "{e}"
    );
    let e = attacked(d, "resigned", |c| {
        // The attacker edits a grant and signs a matching checkpoint with a key of its own.
        let forger = SigningKey::generate("kbs.test/log").unwrap();
        let mut t = lines(&c.join("audit.jsonl.tlog"));
        let mut r: serde_json::Value = serde_json::from_str(&t[3]).unwrap();
        let cp = Checkpoint::open(r["checkpoint"].as_str().unwrap(), &key.verifier()).unwrap();
        r["checkpoint"] = cp.sign(&forger).unwrap().into();
        t[3] = r.to_string();
        write_lines(&c.join("audit.jsonl.tlog"), &t);
    });
    assert!(
        e.contains("audit.jsonl.tlog line 4 (tree size 4): signature: not signed by kbs.test/log+"),
        "{e}"
    );
    let e = attacked(d, "forked", |c| {
        // The broker's key signs a second tree of size 4 (a log restored from a backup and
        // written on): one party was shown one history, another the other.
        let mut l = lines(&c.join("audit.jsonl"));
        l.truncate(3);
        l.push(r#"{"decision":"granted","secret":"model-key","policy":"p"}"#.into());
        let leaves: Vec<_> = l
            .iter()
            .map(|x| teeserve_ratls::tlog::merkle::leaf_hash(x.as_bytes()))
            .collect();
        let cp = Checkpoint {
            origin: "kbs.test/log".into(),
            size: 4,
            root: teeserve_ratls::tlog::merkle::root(&leaves),
        };
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(c.join("audit.jsonl.tlog"))
            .unwrap();
        let rec =
            serde_json::json!({"size": 4, "leaves": [], "checkpoint": cp.sign(&key).unwrap()});
        writeln!(f, "{rec}").unwrap();
    });
    assert!(
        e.contains("fork: the checkpoints at") && e.contains("tree size 4"),
        "{e}"
    );
    // The attacks left the honest log as it was.
    verify(d).ok();
}

#[test]
fn a_broker_killed_between_a_grant_and_its_secret_leaves_a_log_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let tlog = d.join("audit.jsonl.tlog");
    let mut killed_before_release = false;
    for attempt in 0..10 {
        let (mut kbs, addr) = broker(d);
        let before = std::fs::metadata(&tlog).unwrap().len();
        let out = format!("secret-{attempt}");
        let mut client = get_command(d, &addr, "model-key", &out)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The grant's checkpoint is written before the files are synced and the secret is
        // sent: kill the broker the moment it appears.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::fs::metadata(&tlog).unwrap().len() == before {
            assert!(std::time::Instant::now() < deadline, "no grant was logged");
            std::hint::spin_loop();
        }
        kbs.0.kill().unwrap();
        kbs.0.wait().unwrap();
        let released = client.wait().unwrap().success();
        let last = lines(&d.join("audit.jsonl")).pop().unwrap();
        assert!(last.contains("\"granted\""), "{last}");
        verify(d).ok();
        if !released {
            assert!(!d.join(&out).exists());
            killed_before_release = true;
            break;
        }
    }
    assert!(
        killed_before_release,
        "in 10 tries the secret always left before the kill"
    );
    // The broker starts again on that log and keeps signing it.
    let (_kbs, addr) = broker(d);
    assert_eq!(get(d, &addr, "model-key", "after.key"), 0);
    verify(d).ok();
}
