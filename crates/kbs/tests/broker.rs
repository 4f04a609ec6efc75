//! The key broker end to end on loopback with the simulated platform: grants, refusals with
//! their rules (in the response and the audit line), Gramine's protocol byte for byte, RA-TLS
//! interop with independently built certificates, and hostile clients.
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use teeserve_attest::platform::{Platform, PlatformError};
use teeserve_attest::sim::{self, SimOptions, SimPlatform};
use teeserve_kbs::Kbs;
use teeserve_ratls::{EvidenceFormat, KeyType, RaTlsIdentity};
use teeserve_tls::broker::{BrokerError, KbsClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

struct Env {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    kbs: Kbs,
    ca: Vec<u8>,
    platform: Sim,
}

fn write(dir: &Path, name: &str, data: impl AsRef<[u8]>) {
    std::fs::write(dir.join(name), data).unwrap();
}

async fn env(opts: SimOptions, extra_policy: &str) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    sim::init(&dir.join("sim"), &opts).unwrap();
    let ca = teeserve_tls::make_ca("test CA").unwrap();
    let srv =
        teeserve_tls::issue(&ca, "kbs", &["localhost".into(), "127.0.0.1".into()], false).unwrap();
    write(&dir, "ca.pem", &ca.cert_pem);
    write(&dir, "kbs.pem", &srv.cert_pem);
    write(&dir, "kbs.key", srv.key_pem.as_bytes());
    write(&dir, "model.key", [7u8; 32]);
    write(&dir, "gramine.key", [9u8; 16]);
    let mr = hex::encode(MRENCLAVE);
    let config = format!(
        r#"
listen = "127.0.0.1:0"
gramine_listen = "127.0.0.1:0"
tls_cert = "kbs.pem"
tls_key = "kbs.key"
audit_log = "audit.jsonl"
[collateral]
bundle = "sim/collateral.json"
root = "sim/root.pem"
[secrets.model-key]
file = "model.key"
[secrets.gramine-key]
file = "gramine.key"
[secrets.other]
file = "model.key"
[limits]
handshake_timeout_secs = 2
request_timeout_secs = 2
[[policies]]
name = "tfserving"
mrenclave = ["{mr}"]
allow_simulated = true
tcb_status = ["UpToDate"]
secrets = ["model-key"]
gramine_secret = "gramine-key"
[[policies]]
name = "pinned-elsewhere"
mrenclave = ["{zeros}"]
allow_simulated = true
secrets = ["other"]
{extra_policy}
"#,
        zeros = "00".repeat(32)
    );
    write(&dir, "kbs.toml", config);
    let kbs = Kbs::start(&dir.join("kbs.toml")).await.unwrap();
    let platform = Sim(SimPlatform::open(&dir.join("sim"), MRENCLAVE).unwrap());
    Env {
        ca: ca.cert_pem.into_bytes(),
        _dir: tmp,
        dir,
        kbs,
        platform,
    }
}

impl Env {
    async fn client(&self, id: &RaTlsIdentity) -> KbsClient {
        KbsClient::connect(&self.kbs.native_addr().to_string(), &self.ca, None, id)
            .await
            .unwrap()
    }
    fn identity(&self) -> RaTlsIdentity {
        RaTlsIdentity::generate(&self.platform, EvidenceFormat::Both, KeyType::P256).unwrap()
    }
    /// The audit log's decisions (not the broker's start, reload and stop events).
    fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v.get("decision").is_some())
            .collect()
    }
}

fn refused_rule(e: BrokerError) -> String {
    match e {
        BrokerError::Refused { reason, .. } => reason,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test]
async fn granted_and_refused_with_rules_in_response_and_audit() {
    let e = env(SimOptions::default(), "").await;
    let id = e.identity();
    let mut c = e.client(&id).await;
    let secret = c.get_secret("model-key").await.unwrap();
    assert_eq!(&secret[..], &[7u8; 32]);
    let v = c.verdict().await.unwrap();
    assert_eq!(v["sgx"]["mrenclave"], hex::encode(MRENCLAVE));

    let r = refused_rule(c.get_secret("other").await.unwrap_err());
    assert!(r.contains("rule mrenclave"), "{r}");
    let r = c.get_secret("nope").await.unwrap_err().to_string();
    assert!(r.contains("404"), "{r}");

    let audit = e.audit();
    assert_eq!(audit[0]["decision"], "granted");
    assert_eq!(audit[0]["secret"], "model-key");
    assert_eq!(audit[0]["policy"], "tfserving");
    assert_eq!(audit[1]["decision"], "refused");
    assert_eq!(audit[1]["rule"], "mrenclave");
    assert!(!std::fs::read_to_string(e.dir.join("audit.jsonl"))
        .unwrap()
        .contains(&hex::encode([7u8; 32])));
}

async fn refused_for(opts: SimOptions, extra: &str, secret: &str, want_rule: &str) {
    let e = env(opts, extra).await;
    let id = e.identity();
    let mut c = e.client(&id).await;
    let r = refused_rule(c.get_secret(secret).await.unwrap_err());
    assert!(r.contains(&format!("rule {want_rule}")), "{r}");
    let audit = e.audit();
    assert_eq!(audit.last().unwrap()["rule"], want_rule, "{audit:?}");
}

#[tokio::test]
async fn debug_enclave_is_refused() {
    refused_for(
        SimOptions {
            debug: true,
            ..Default::default()
        },
        "",
        "model-key",
        "allow_debug",
    )
    .await;
}

#[tokio::test]
async fn simulated_evidence_without_allow_simulated_is_refused() {
    let mr = hex::encode(MRENCLAVE);
    let extra =
        format!("[[policies]]\nname = \"strict\"\nmrenclave = [\"{mr}\"]\nsecrets = [\"other\"]\n");
    let e = env(SimOptions::default(), &extra).await;
    let mut c = e.client(&e.identity()).await;
    // "other" is listed by two policies; the first refusal reported is the first policy's.
    let r = refused_rule(c.get_secret("other").await.unwrap_err());
    assert!(
        r.contains("rule mrenclave") || r.contains("allow_simulated"),
        "{r}"
    );
    drop(e);
    let extra = format!(
        "[[policies]]\nname = \"strict\"\nmrenclave = [\"{mr}\"]\nsecrets = [\"model-key\"]\n"
    );
    let e = env(SimOptions::default(), &extra).await;
    // tfserving admits first; a config with only the strict policy:
    std::fs::write(
        e.dir.join("kbs.toml"),
        std::fs::read_to_string(e.dir.join("kbs.toml"))
            .unwrap()
            .replace(
                "secrets = [\"model-key\"]\ngramine_secret",
                "secrets = []\ngramine_secret",
            ),
    )
    .unwrap();
    e.kbs.reload().unwrap();
    let mut c = e.client(&e.identity()).await;
    let r = refused_rule(c.get_secret("model-key").await.unwrap_err());
    assert!(
        r.contains("rule allow_simulated") && r.contains("simulated"),
        "{r}"
    );
}

#[tokio::test]
async fn stale_collateral_is_refused() {
    refused_for(
        SimOptions {
            stale: true,
            ..Default::default()
        },
        "",
        "model-key",
        "collateral_validity",
    )
    .await;
}

#[tokio::test]
async fn revoked_pck_is_refused() {
    refused_for(
        SimOptions {
            revoke: sim::Revoke::Pck,
            ..Default::default()
        },
        "",
        "model-key",
        "revocation",
    )
    .await;
}

/// Builds a certificate by hand (rcgen directly, not teeserve-ratls) carrying `quote` in
/// Gramine's legacy extension, for a fresh key.
fn hand_made_legacy_cert(
    quote: &[u8],
    alg: &'static rcgen::SignatureAlgorithm,
) -> (Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "RATLS");
    // Gramine passes 06 09 2A 86 48 86 F8 4D 8A 39 06 as OID content: arcs 0.6.9.42.840.113741.1337.6.
    p.custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(
            &[0, 6, 9, 42, 840, 113741, 1337, 6],
            quote.to_vec(),
        ));
    let cert = p.self_signed(&key).unwrap();
    (cert.der().to_vec(), key.serialize_der())
}

fn spki_hash_report_data(spki: &[u8]) -> [u8; 64] {
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(ring::digest::digest(&ring::digest::SHA256, spki).as_ref());
    rd
}

#[tokio::test]
async fn independently_built_gramine_certificates_are_accepted() {
    let e = env(SimOptions::default(), "").await;
    for alg in [
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ECDSA_P256_SHA256,
    ] {
        // Make the key first to know its SPKI, then the quote over SHA-256(SPKI) || zeros.
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let quote = e
            .platform
            .quote(&spki_hash_report_data(
                &rcgen::PublicKeyData::subject_public_key_info(&key),
            ))
            .unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                &[0, 6, 9, 42, 840, 113741, 1337, 6],
                quote,
            ));
        let der = p.self_signed(&key).unwrap().der().to_vec();
        let ev = teeserve_ratls::parse_cert(&der).unwrap();
        assert!(ev.binding_ok);
        let id = RaTlsIdentity {
            cert_der: der,
            key_pkcs8: zeroize::Zeroizing::new(key.serialize_der()),
            spki: vec![],
        };
        let mut c = e.client(&id).await;
        assert_eq!(&c.get_secret("model-key").await.unwrap()[..], &[7u8; 32]);
    }
}

#[tokio::test]
async fn replayed_evidence_and_unbound_report_data_are_refused() {
    let e = env(SimOptions::default(), "").await;
    // A genuine quote, lifted out of a valid certificate and put in a certificate for another key.
    let genuine = e.identity();
    let quote = teeserve_ratls::parse_cert(&genuine.cert_der).unwrap().quote;
    let (der, key) = hand_made_legacy_cert(&quote, &rcgen::PKCS_ECDSA_P256_SHA256);
    let id = RaTlsIdentity {
        cert_der: der,
        key_pkcs8: zeroize::Zeroizing::new(key),
        spki: vec![],
    };
    let mut c = e.client(&id).await;
    let r = refused_rule(c.get_secret("model-key").await.unwrap_err());
    assert!(r.contains("rule ratls_binding"), "{r}");
    // A quote whose report data binds nothing.
    let q = e.platform.quote(&[0u8; 64]).unwrap();
    let (der, key) = hand_made_legacy_cert(&q, &rcgen::PKCS_ECDSA_P256_SHA256);
    let id = RaTlsIdentity {
        cert_der: der,
        key_pkcs8: zeroize::Zeroizing::new(key),
        spki: vec![],
    };
    let mut c = e.client(&id).await;
    let r = refused_rule(c.get_secret("model-key").await.unwrap_err());
    assert!(r.contains("rule ratls_binding"), "{r}");
    assert_eq!(e.audit().last().unwrap()["rule"], "ratls_binding");
}

#[test]
fn teeserve_certificates_follow_gramines_wire_format() {
    // Check the extensions the way Gramine's verifier scans for them (memmem of the OID bytes,
    // then optional 01 01 00, then 04 82 hh ll with a 2-byte long-form length).
    let tmp = tempfile::tempdir().unwrap();
    sim::init(&tmp.path().join("s"), &SimOptions::default()).unwrap();
    let p = Sim(SimPlatform::open(&tmp.path().join("s"), MRENCLAVE).unwrap());
    let id = RaTlsIdentity::generate(&p, EvidenceFormat::Both, KeyType::P384).unwrap();
    for oid in [
        &[
            0x06u8, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x8a, 0x39, 0x06,
        ][..],
        &[0x06, 0x06, 0x67, 0x81, 0x05, 0x05, 0x04, 0x09][..],
    ] {
        let at = id
            .cert_der
            .windows(oid.len())
            .position(|w| w == oid)
            .expect("OID present");
        let mut rest = &id.cert_der[at + oid.len()..];
        if rest.starts_with(&[0x01, 0x01, 0x00]) {
            rest = &rest[3..];
        }
        assert_eq!(rest[0], 0x04, "OCTET STRING");
        assert_eq!(rest[1], 0x82, "2-byte long-form length");
        let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        assert!((128..=8192 * 2).contains(&len));
    }
    // The standard extension: D9 EA 60 82 59 <len16> quote 58 33 claims.
    let tcg = [0x06u8, 0x06, 0x67, 0x81, 0x05, 0x05, 0x04, 0x09];
    let at = id.cert_der.windows(8).position(|w| w == tcg).unwrap() + 8 + 4;
    assert_eq!(&id.cert_der[at..at + 5], &[0xd9, 0xea, 0x60, 0x82, 0x59]);
    let qlen = u16::from_be_bytes([id.cert_der[at + 5], id.cert_der[at + 6]]) as usize;
    let claims_at = at + 7 + qlen;
    assert_eq!(&id.cert_der[claims_at..claims_at + 2], &[0x58, 0x33]);
    let claims = &id.cert_der[claims_at + 2..claims_at + 2 + 0x33];
    let mut want = vec![0xa1, 0x6b];
    want.extend_from_slice(b"pubkey-hash");
    want.extend_from_slice(&[0x58, 0x24, 0x82, 0x01, 0x58, 0x20]);
    want.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, &id.spki).as_ref());
    assert_eq!(claims, &want[..]);
}

async fn tls_to(
    addr: std::net::SocketAddr,
    ca: &[u8],
    id: Option<&RaTlsIdentity>,
    tls12: bool,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &ca[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots);
    let cfg = match id {
        Some(id) => b
            .with_client_auth_cert(
                vec![CertificateDer::from(id.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_pkcs8.to_vec())),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn gramine_secret_provisioning_bytes_on_the_wire() {
    let e = env(SimOptions::default(), "").await;
    let addr = e.kbs.gramine_addr().unwrap();
    for tls12 in [true, false] {
        let id = e.identity();
        let mut s = tls_to(addr, &e.ca, Some(&id), tls12).await;
        // "SECRET_PROVISION_RA_TLS_REQUEST_V1" and its NUL, written out independently.
        let request =
            hex::decode("5345435245545f50524f564953494f4e5f52415f544c535f524551554553545f563100")
                .unwrap();
        assert_eq!(request.len(), 35);
        s.write_all(&request).await.unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.unwrap();
        let mut want = b"SECRET_PROVISION_RA_TLS_RESPONSE_V1:\0".to_vec();
        want.extend_from_slice(&16u32.to_be_bytes());
        want.extend_from_slice(&[9u8; 16]);
        assert_eq!(resp, want, "TLS 1.2 = {tls12}");
    }
    assert_eq!(e.audit().last().unwrap()["port"], "gramine");
    // A wrong request magic gets nothing.
    let id = e.identity();
    let mut s = tls_to(addr, &e.ca, Some(&id), false).await;
    s.write_all(&[b'X'; 35]).await.unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp).await;
    assert!(resp.is_empty());
}

#[tokio::test]
async fn hostile_clients_do_not_take_the_broker_down() {
    let e = env(SimOptions::default(), "").await;
    let addr = e.kbs.native_addr();
    // No client certificate: the handshake fails.
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &e.ca[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let r = async {
        let mut s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await?;
        s.write_all(b"GET /v1/secrets/model-key HTTP/1.1\r\nhost: x\r\n\r\n")
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    }
    .await;
    assert!(
        r.map(|b| b.is_empty()).unwrap_or(true),
        "served without a client certificate"
    );
    // Garbage instead of TLS.
    let mut g = tokio::net::TcpStream::connect(addr).await.unwrap();
    g.write_all(&[0x47; 4096]).await.unwrap();
    // A slow client holding a connection open without a handshake.
    let _slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A 10 MB request line.
    let id = e.identity();
    let mut s = tls_to(addr, &e.ca, Some(&id), false).await;
    let line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(10 << 20));
    let _ = s.write_all(line.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    // The broker still serves others.
    let mut c = e.client(&e.identity()).await;
    assert_eq!(&c.get_secret("model-key").await.unwrap()[..], &[7u8; 32]);
}

#[tokio::test]
async fn a_broken_reload_keeps_the_old_config() {
    let e = env(SimOptions::default(), "").await;
    let good = std::fs::read_to_string(e.dir.join("kbs.toml")).unwrap();
    std::fs::write(
        e.dir.join("kbs.toml"),
        good.replace("[secrets.other]", "[secrets.other\n"),
    )
    .unwrap();
    assert!(e.kbs.reload().is_err());
    let mut c = e.client(&e.identity()).await;
    assert_eq!(&c.get_secret("model-key").await.unwrap()[..], &[7u8; 32]);
}

/// A TLS client certificate with no evidence at all, as anyone can make.
fn self_signed() -> RaTlsIdentity {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["anyone".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    RaTlsIdentity {
        cert_der: cert.der().to_vec(),
        key_pkcs8: zeroize::Zeroizing::new(key.serialize_der()),
        spki: vec![],
    }
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// One keep-alive HTTP/1.1 connection to the native API, presenting `id`.
async fn keep_alive(e: &Env, id: &RaTlsIdentity) -> Sender {
    let tls = tls_to(e.kbs.native_addr(), &e.ca, Some(id), false).await;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// GET `path` on the connection: status and body.
async fn get(s: &mut Sender, path: &str) -> (u16, Vec<u8>) {
    use http_body_util::BodyExt;
    s.ready().await.unwrap();
    let resp = s
        .send_request(
            hyper::Request::get(path)
                .header(hyper::header::HOST, "localhost")
                .body(http_body_util::Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body)
}

/// Rewrites kbs.toml (`from` -> `to`, which must be present) and reloads.
fn reconfigure(e: &Env, from: &str, to: &str) {
    let path = e.dir.join("kbs.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from:?} not in kbs.toml");
    std::fs::write(&path, text.replace(from, to)).unwrap();
    e.kbs.reload().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_refusals_is_aggregated_and_does_not_stop_grants() {
    let e = env(SimOptions::default(), "").await;
    // Summaries only when the test asks, so the line count below does not depend on speed.
    reconfigure(
        &e,
        "request_timeout_secs = 2\n",
        "request_timeout_secs = 2\naudit_summary_secs = 3600\nrefusals_per_sec = 2\n",
    );
    const FLOODERS: usize = 4;
    const EACH: usize = 750;
    let (tx, mut rx) = tokio::sync::mpsc::channel(FLOODERS);
    let mut tasks = Vec::new();
    for _ in 0..FLOODERS {
        let mut s = keep_alive(&e, &self_signed()).await;
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let (mut refused, mut throttled) = (0usize, 0usize);
            for i in 0..EACH {
                match get(&mut s, "/v1/secrets/model-key").await.0 {
                    403 => refused += 1,
                    429 => throttled += 1,
                    other => panic!("status {other}"),
                }
                if i == 50 {
                    tx.send(()).await.unwrap();
                }
            }
            (refused, throttled)
        }));
    }
    // Every flooder is under way: a legitimate peer still gets its secret.
    for _ in 0..FLOODERS {
        rx.recv().await.unwrap();
    }
    let mut c = e.client(&e.identity()).await;
    assert_eq!(&c.get_secret("model-key").await.unwrap()[..], &[7u8; 32]);
    let (mut refused, mut throttled) = (0, 0);
    for t in tasks {
        let (r, t) = t.await.unwrap();
        refused += r;
        throttled += t;
    }
    assert_eq!(refused + throttled, FLOODERS * EACH);
    assert!(throttled > 0, "no refusal was rate-limited");
    // One line for the grant and one for the first refusal; the rest is only counted ...
    let audit = e.audit();
    assert_eq!(
        audit.len(),
        2,
        "audit lines: {:?}",
        &audit[..audit.len().min(4)]
    );
    assert!(audit.iter().any(|l| l["decision"] == "granted"));
    // ... and written as one summary line with the counts.
    e.kbs.broker().flush_refusals().unwrap();
    let audit = e.audit();
    assert_eq!(audit.len(), 3, "{audit:?}");
    let summary = audit.last().unwrap();
    assert_eq!(summary["rule"], "ratls_certificate");
    assert_eq!(summary["secret"], "model-key");
    assert_eq!(summary["repeated"], (FLOODERS * EACH - 1) as u64);
    assert_eq!(summary["throttled"], throttled as u64);
}

#[tokio::test]
async fn unknown_and_forbidden_names_answer_alike_to_an_unadmitted_peer() {
    let e = env(SimOptions::default(), "").await;
    let allowed = [hex::encode(MRENCLAVE), "00".repeat(32)];
    // No evidence at all, and genuine evidence of an enclave no policy admits.
    let stranger = Sim(SimPlatform::open(&e.dir.join("sim"), [0x22; 32]).unwrap());
    let unadmitted = [
        self_signed(),
        RaTlsIdentity::generate(&stranger, EvidenceFormat::Both, KeyType::P256).unwrap(),
    ];
    for (i, id) in unadmitted.iter().enumerate() {
        let mut s = keep_alive(&e, id).await;
        let forbidden = get(&mut s, "/v1/secrets/model-key").await;
        let other = get(&mut s, "/v1/secrets/other").await;
        let unknown = get(&mut s, "/v1/secrets/no-such-secret").await;
        assert_eq!(forbidden.0, 403, "peer {i}");
        assert_eq!(forbidden, other, "peer {i}");
        assert_eq!(forbidden, unknown, "peer {i}");
        let body = String::from_utf8(forbidden.1).unwrap();
        for hex in &allowed {
            assert!(!body.contains(hex.as_str()), "peer {i}: {body}");
        }
    }
    // The audit log keeps what the peer was not told.
    let audit = e.audit();
    let last = audit.last().unwrap();
    assert_eq!(last["rule"], "mrenclave");
    assert!(last["detail"].as_str().unwrap().contains(&allowed[0]));
    // A peer that a policy admits is still told which rule refused a name, without the values.
    let mut s = keep_alive(&e, &e.identity()).await;
    let (status, body) = get(&mut s, "/v1/secrets/other").await;
    assert_eq!(status, 403);
    let body = String::from_utf8(body).unwrap();
    assert!(body.contains("\"rule\":\"mrenclave\""), "{body}");
    assert!(!body.contains(&allowed[1]), "{body}");
    assert_eq!(get(&mut s, "/v1/secrets/no-such-secret").await.0, 404);
}

#[tokio::test]
async fn a_reload_applies_to_connections_already_open() {
    let e = env(SimOptions::default(), "").await;
    let mut c = e.client(&e.identity()).await;
    assert_eq!(&c.get_secret("model-key").await.unwrap()[..], &[7u8; 32]);
    // The owner takes the secret away from the policy; the same connection asks again.
    reconfigure(
        &e,
        "secrets = [\"model-key\"]\ngramine_secret",
        "secrets = []\ngramine_secret",
    );
    let r = refused_rule(c.get_secret("model-key").await.unwrap_err());
    assert!(r.contains("rule secrets"), "{r}");
    // A new root: the connection's evidence is verified again under it.
    sim::init(&e.dir.join("sim2"), &SimOptions::default()).unwrap();
    reconfigure(
        &e,
        "bundle = \"sim/collateral.json\"\nroot = \"sim/root.pem\"",
        "bundle = \"sim2/collateral.json\"\nroot = \"sim2/root.pem\"",
    );
    let v = c.verdict().await.unwrap_err().to_string();
    assert!(v.contains("\"rule\":\"root\""), "{v}");
}

/// A Gramine-style certificate for a fresh key, valid from `not_before` (Unix seconds).
fn cert_made_at(e: &Env, not_before: i64) -> RaTlsIdentity {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let quote = e
        .platform
        .quote(&spki_hash_report_data(
            &rcgen::PublicKeyData::subject_public_key_info(&key),
        ))
        .unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(
            &[0, 6, 9, 42, 840, 113741, 1337, 6],
            quote,
        ));
    p.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(not_before + 86_400 * 30).unwrap();
    RaTlsIdentity {
        cert_der: p.self_signed(&key).unwrap().der().to_vec(),
        key_pkcs8: zeroize::Zeroizing::new(key.serialize_der()),
        spki: vec![],
    }
}

#[tokio::test]
async fn max_evidence_age_bounds_the_certificates_not_before() {
    let e = env(SimOptions::default(), "").await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // Off by default: Gramine's certificates are valid from 2001.
    let mut c = e.client(&cert_made_at(&e, 978_307_200)).await;
    assert_eq!(&c.get_secret("model-key").await.unwrap()[..], &[7u8; 32]);
    reconfigure(
        &e,
        "tcb_status = [\"UpToDate\"]\nsecrets",
        "tcb_status = [\"UpToDate\"]\nmax_evidence_age_secs = 600\nsecrets",
    );
    let mut c = e.client(&cert_made_at(&e, now - 60)).await;
    assert_eq!(&c.get_secret("model-key").await.unwrap()[..], &[7u8; 32]);
    for made in [978_307_200, now - 3600, now + 86_400] {
        let mut c = e.client(&cert_made_at(&e, made)).await;
        let r = refused_rule(c.get_secret("model-key").await.unwrap_err());
        assert!(r.contains("rule max_evidence_age_secs"), "{made}: {r}");
    }
}
