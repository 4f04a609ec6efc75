//! The signed audit log end to end on loopback: each grant comes back with the inclusion proof
//! of its entry, which names the configuration's hash and the key the secret went to; reloads,
//! start and stop are entries; the log verifies and proves offline.
use std::path::Path;

use teeserve_attest::platform::{Platform, PlatformError};
use teeserve_attest::sim::{self, SimOptions, SimPlatform};
use teeserve_kbs::{prove_consistency, prove_inclusion, verify_log, Kbs};
use teeserve_ratls::tlog::note::SigningKey;
use teeserve_ratls::tlog::proof::{ConsistencyProof, InclusionProof};
use teeserve_ratls::tlog::sha256_hex;
use teeserve_ratls::{EvidenceFormat, KeyType, RaTlsIdentity};
use teeserve_tls::broker::KbsClient;

const MRENCLAVE: [u8; 32] = [0x11; 32];

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

/// A simulated platform, a CA, the broker's certificate, a model key and a log key in `dir`;
/// returns the CA (PEM) and the log's verifier key.
fn setup(dir: &Path) -> (Vec<u8>, String) {
    sim::init(&dir.join("sim"), &SimOptions::default()).unwrap();
    let ca = teeserve_tls::make_ca("test CA").unwrap();
    let srv = teeserve_tls::issue(&ca, "kbs", &["127.0.0.1".into()], false).unwrap();
    std::fs::write(dir.join("kbs.pem"), &srv.cert_pem).unwrap();
    std::fs::write(dir.join("kbs.key"), srv.key_pem.as_bytes()).unwrap();
    std::fs::write(dir.join("model.key"), [7u8; 32]).unwrap();
    let key = SigningKey::generate("teeserve.test/kbs").unwrap();
    std::fs::write(dir.join("log.key"), key.to_text().as_bytes()).unwrap();
    (ca.cert_pem.into_bytes(), key.verifier().to_string())
}

fn config(log: &str, comment: &str) -> String {
    format!(
        "# {comment}\nlisten = \"127.0.0.1:0\"\ntls_cert = \"kbs.pem\"\ntls_key = \"kbs.key\"\naudit_log = \"audit.jsonl\"\n{log}\n\
         [collateral]\nbundle = \"sim/collateral.json\"\nroot = \"sim/root.pem\"\n\
         [secrets.model-key]\nfile = \"model.key\"\n[secrets.other]\nfile = \"model.key\"\n\
         [[policies]]\nname = \"tfserving\"\nmrenclave = [\"{}\"]\nallow_simulated = true\nsecrets = [\"model-key\"]\n\
         [[policies]]\nname = \"elsewhere\"\nmrenclave = [\"{}\"]\nallow_simulated = true\nsecrets = [\"other\"]\n",
        hex::encode(MRENCLAVE),
        "00".repeat(32)
    )
}

const LOG: &str = "[log]\nsigning_key = \"log.key\"\norigin = \"teeserve.test/kbs\"";

fn lines(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_carry_proofs_and_the_log_verifies_and_proves_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (ca, vkey_text) = setup(d);
    let vkey = teeserve_ratls::tlog::note::VerifierKey::parse(&vkey_text).unwrap();
    std::fs::write(d.join("kbs.toml"), config(LOG, "v1")).unwrap();
    let v1 = sha256_hex(&std::fs::read(d.join("kbs.toml")).unwrap());
    let kbs = Kbs::start(&d.join("kbs.toml")).await.unwrap();
    let platform = Sim(SimPlatform::open(&d.join("sim"), MRENCLAVE).unwrap());
    let id = RaTlsIdentity::generate(&platform, EvidenceFormat::Both, KeyType::P256).unwrap();
    let me = sha256_hex(&teeserve_ratls::spki_of(&id.cert_der).unwrap());
    let addr = kbs.native_addr().to_string();
    let mut c = KbsClient::connect(&addr, &ca, None, &id).await.unwrap();
    let (secret, proof) = c.get_secret_logged("model-key").await.unwrap();
    assert_eq!(&secret[..], &[7u8; 32]);
    let proof = InclusionProof::parse(&proof.expect("a signed log's grant has a proof")).unwrap();
    let cp = proof.verify(&vkey, None).unwrap();
    assert_eq!((proof.index, cp.size), (1, 2));
    let entry: serde_json::Value = serde_json::from_slice(proof.extra.as_ref().unwrap()).unwrap();
    assert_eq!(entry["decision"], "granted");
    assert_eq!(entry["policy"], "tfserving");
    assert_eq!(entry["policy_sha256"], v1);
    assert_eq!(entry["peer_key_sha256"], me);
    // A refusal is an entry too, covered by a checkpoint of its own.
    assert!(c.get_secret("other").await.is_err());
    let s = verify_log(&d.join("audit.jsonl"), &vkey).unwrap();
    assert_eq!((s.entries, s.size, s.checkpoints), (3, 3, 3));

    // The configuration changes: the reload is an entry with the new hash, and grants after
    // it name it.
    std::fs::write(d.join("kbs.toml"), config(LOG, "v2")).unwrap();
    let v2 = sha256_hex(&std::fs::read(d.join("kbs.toml")).unwrap());
    kbs.reload().unwrap();
    let mut c = KbsClient::connect(&addr, &ca, None, &id).await.unwrap();
    let (_, proof) = c.get_secret_logged("model-key").await.unwrap();
    let proof = InclusionProof::parse(&proof.unwrap()).unwrap();
    let entry: serde_json::Value = serde_json::from_slice(proof.extra.as_ref().unwrap()).unwrap();
    assert_eq!(entry["policy_sha256"], v2);
    // A broken configuration is refused, and that is logged too.
    std::fs::write(d.join("kbs.toml"), "listen = [").unwrap();
    assert!(kbs.reload().is_err());
    kbs.stop().unwrap();
    let events: Vec<String> = lines(d)
        .iter()
        .map(|l| {
            l.get("event")
                .or(l.get("decision"))
                .and_then(|v| v.as_str())
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        events,
        [
            "start",
            "granted",
            "refused",
            "reload",
            "granted",
            "reload_rejected",
            "stop"
        ]
    );
    let all = lines(d);
    assert_eq!(all[0]["policy_sha256"], v1);
    assert_eq!(all[0]["log_key"], vkey_text);
    assert_eq!(all[3]["policy_sha256"], v2);
    let s = verify_log(&d.join("audit.jsonl"), &vkey).unwrap();
    assert_eq!(s.entries, 7);

    // Proofs of any entry, and of the log's growth, from the files alone.
    let p = InclusionProof::parse(&prove_inclusion(&d.join("audit.jsonl"), 3).unwrap()).unwrap();
    assert_eq!(p.verify(&vkey, None).unwrap().size, 7);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(p.extra.as_ref().unwrap()).unwrap()["event"],
        "reload"
    );
    let cons =
        ConsistencyProof::parse(&prove_consistency(&d.join("audit.jsonl"), 2).unwrap()).unwrap();
    assert_eq!(cons.verify(&vkey).unwrap().size, 7);
    assert!(prove_inclusion(&d.join("audit.jsonl"), 7).is_err());
    drop(kbs);

    // Started again, the broker continues the same tree.
    std::fs::write(d.join("kbs.toml"), config(LOG, "v2")).unwrap();
    let kbs = Kbs::start(&d.join("kbs.toml")).await.unwrap();
    let mut c = KbsClient::connect(&kbs.native_addr().to_string(), &ca, None, &id)
        .await
        .unwrap();
    let (_, proof) = c.get_secret_logged("model-key").await.unwrap();
    let proof = InclusionProof::parse(&proof.unwrap()).unwrap();
    assert_eq!(proof.verify(&vkey, None).unwrap().size, 9);
    let start = &lines(d)[7];
    assert_eq!(
        (start["event"].as_str(), start["entries_before"].as_u64()),
        (Some("start"), Some(7))
    );
    assert!(start.get("entries_without_checkpoint").is_none());
}

#[tokio::test]
async fn an_unsigned_log_gives_no_proof_and_a_wrong_log_table_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (ca, _) = setup(d);
    std::fs::write(d.join("kbs.toml"), config("", "unsigned")).unwrap();
    let kbs = Kbs::start(&d.join("kbs.toml")).await.unwrap();
    let platform = Sim(SimPlatform::open(&d.join("sim"), MRENCLAVE).unwrap());
    let id = RaTlsIdentity::generate(&platform, EvidenceFormat::Both, KeyType::P256).unwrap();
    let mut c = KbsClient::connect(&kbs.native_addr().to_string(), &ca, None, &id)
        .await
        .unwrap();
    let (_, proof) = c.get_secret_logged("model-key").await.unwrap();
    assert!(proof.is_none());
    assert!(!d.join("audit.jsonl.tlog").exists());
    drop(kbs);
    // Signing a log that was not signed before: the old entries are adopted, and said so.
    std::fs::write(d.join("kbs.toml"), config(LOG, "signed now")).unwrap();
    let kbs = Kbs::start(&d.join("kbs.toml")).await.unwrap();
    kbs.stop().unwrap();
    let start = &lines(d)[2];
    assert_eq!(start["entries_without_checkpoint"], 2);
    drop(kbs);

    let wrong_origin = LOG.replace("teeserve.test/kbs", "someone.else/log");
    std::fs::write(d.join("kbs.toml"), config(&wrong_origin, "x")).unwrap();
    let e = Kbs::start(&d.join("kbs.toml"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("log.origin") && e.contains("teeserve.test/kbs"),
        "{e}"
    );
    let no_audit = config(LOG, "x").replace("audit_log = \"audit.jsonl\"\n", "");
    std::fs::write(d.join("kbs.toml"), no_audit).unwrap();
    let e = Kbs::start(&d.join("kbs.toml"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("set audit_log"), "{e}");
}
