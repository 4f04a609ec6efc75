//! The rustls verifiers in real TLS handshakes over loopback, with RA-TLS certificates from the
//! simulated platform: an attested server admitted and its verdict reported, an attested client
//! admitted, and peers without evidence or refused by the policy cut off during the handshake.
//! (The pinned-key verifier without evidence is covered in `src/verifier.rs`.)
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{policy, policy_for, tee, MRENCLAVE};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::danger::ClientCertVerifier;
use teeserve_attest::Verdict;
use teeserve_ratls::{
    AttestedClientVerifier, AttestedServerVerifier, EvidenceFormat, KeyType, PinnedKeyVerifier,
    RaTlsIdentity,
};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its key.
type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn ra_tls(id: &RaTlsIdentity) -> Identity {
    (
        vec![CertificateDer::from(id.cert_der.clone())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_pkcs8.to_vec())),
    )
}

/// An ordinary self-signed certificate for `localhost`, with no evidence.
fn plain() -> Identity {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

/// A verifier that accepts any server certificate (the handshake signature still checked),
/// for tests about the client side.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn server_config(
    id: Identity,
    clients: Option<Arc<dyn ClientCertVerifier>>,
) -> rustls::ServerConfig {
    let b = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let b = match clients {
        Some(v) => b.with_client_cert_verifier(v),
        None => b.with_no_client_auth(),
    };
    b.with_single_cert(id.0, id.1).unwrap()
}

fn client_config(
    servers: Arc<dyn ServerCertVerifier>,
    id: Option<Identity>,
) -> rustls::ClientConfig {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(servers);
    match id {
        Some((chain, key)) => b.with_client_auth_cert(chain, key).unwrap(),
        None => b.with_no_client_auth(),
    }
}

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(20));

/// A server on loopback that completes one handshake, reads 4 bytes and echoes them. Its
/// thread returns what it received, or the error that ended the connection.
fn serve_once(config: rustls::ServerConfig) -> (SocketAddr, JoinHandle<Result<Vec<u8>, String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Arc::new(config);
    let thread = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().map_err(|e| e.to_string())?;
        tcp.set_read_timeout(TIMEOUT).unwrap();
        let conn = rustls::ServerConnection::new(config).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).map_err(|e| e.to_string())?;
        tls.write_all(&buf).map_err(|e| e.to_string())?;
        tls.conn.send_close_notify();
        let _ = tls.flush();
        Ok(buf.to_vec())
    });
    (addr, thread)
}

/// Connects, sends `ping` and reads the echo: what the client received, or its error.
fn ping(addr: SocketAddr, config: rustls::ClientConfig) -> Result<Vec<u8>, String> {
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(TIMEOUT).unwrap();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"ping").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).map_err(|e| e.to_string())?;
    Ok(buf.to_vec())
}

/// One exchange: (what the client received, what the server received).
fn exchange(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
) -> (Result<Vec<u8>, String>, Result<Vec<u8>, String>) {
    let (addr, thread) = serve_once(server);
    let c = ping(addr, client);
    (c, thread.join().unwrap())
}

#[test]
fn an_attested_server_is_admitted_and_its_verdict_reported() {
    let t = tee();
    let id = RaTlsIdentity::generate(&t.platform, EvidenceFormat::Both, KeyType::P384).unwrap();
    let seen: Arc<Mutex<Option<Verdict>>> = Arc::default();
    let sink = seen.clone();
    let verifier = AttestedServerVerifier::new(t.appraiser.clone(), policy(), move |v| {
        *sink.lock().unwrap() = Some(v.clone())
    });
    let (c, s) = exchange(
        server_config(ra_tls(&id), None),
        client_config(Arc::new(verifier), None),
    );
    assert_eq!(c.unwrap(), b"ping");
    assert_eq!(s.unwrap(), b"ping");
    let v = seen
        .lock()
        .unwrap()
        .take()
        .expect("the verdict is reported");
    assert_eq!(v.sgx.unwrap().mrenclave, hex::encode(MRENCLAVE));
}

#[test]
fn a_server_without_evidence_or_refused_by_the_policy_gets_no_data() {
    let t = tee();
    let id = RaTlsIdentity::generate(&t.platform, EvidenceFormat::Both, KeyType::P256).unwrap();
    for (what, server, policy, reason) in [
        ("no evidence", plain(), policy(), "no evidence extension"),
        (
            "another enclave",
            ra_tls(&id),
            policy_for([0; 32]),
            "rule mrenclave",
        ),
    ] {
        let verifier = AttestedServerVerifier::new(t.appraiser.clone(), policy, |_| {
            panic!("no verdict is reported for a refused server")
        });
        let (c, s) = exchange(
            server_config(server, None),
            client_config(Arc::new(verifier), None),
        );
        let e = c.unwrap_err();
        assert!(e.contains(reason), "{what}: {e}");
        assert!(s.is_err(), "{what}: the server received {s:?}");
    }
}

#[test]
fn an_attested_client_is_admitted_and_others_are_cut_off() {
    let t = tee();
    let admitting = Arc::new(AttestedClientVerifier::new(t.appraiser.clone(), policy()));
    let id = RaTlsIdentity::generate(&t.platform, EvidenceFormat::Legacy, KeyType::P256).unwrap();
    let (c, s) = exchange(
        server_config(plain(), Some(admitting.clone())),
        client_config(Arc::new(AnyServer(provider())), Some(ra_tls(&id))),
    );
    assert_eq!(c.unwrap(), b"ping");
    assert_eq!(s.unwrap(), b"ping");

    let refusing = Arc::new(AttestedClientVerifier::new(
        t.appraiser.clone(),
        policy_for([0; 32]),
    ));
    for (what, verifier, client, reason) in [
        (
            "no evidence",
            admitting.clone(),
            Some(plain()),
            "no evidence extension",
        ),
        (
            "another enclave",
            refusing,
            Some(ra_tls(&id)),
            "rule mrenclave",
        ),
        ("no certificate", admitting, None, ""),
    ] {
        let (c, s) = exchange(
            server_config(plain(), Some(verifier)),
            client_config(Arc::new(AnyServer(provider())), client),
        );
        let e = s.unwrap_err();
        assert!(e.contains(reason), "{what}: {e}");
        assert!(c.is_err(), "{what}: the client received {c:?}");
    }
}

#[test]
fn the_deferred_client_verifier_requires_a_certificate_and_leaves_the_rest_to_the_application() {
    let deferred = Arc::new(AttestedClientVerifier::deferred());
    let (c, s) = exchange(
        server_config(plain(), Some(deferred.clone())),
        client_config(Arc::new(AnyServer(provider())), Some(plain())),
    );
    assert_eq!(c.unwrap(), b"ping");
    assert_eq!(s.unwrap(), b"ping");
    let (c, s) = exchange(
        server_config(plain(), Some(deferred)),
        client_config(Arc::new(AnyServer(provider())), None),
    );
    assert!(s.is_err() && c.is_err(), "server {s:?}, client {c:?}");
}

#[test]
fn a_pinned_key_with_evidence_has_that_evidence_appraised() {
    let t = tee();
    let id = RaTlsIdentity::generate(&t.platform, EvidenceFormat::Both, KeyType::P256).unwrap();
    let pinned = |policy| {
        Arc::new(
            PinnedKeyVerifier::for_cert(&id.cert_der)
                .unwrap()
                .with_evidence(t.appraiser.clone(), policy),
        )
    };
    let (c, _) = exchange(
        server_config(ra_tls(&id), None),
        client_config(pinned(policy()), None),
    );
    assert_eq!(c.unwrap(), b"ping");
    // The same key, but evidence the policy refuses.
    let (c, s) = exchange(
        server_config(ra_tls(&id), None),
        client_config(pinned(policy_for([0; 32])), None),
    );
    let e = c.unwrap_err();
    assert!(e.contains("rule mrenclave"), "{e}");
    assert!(s.is_err());
}
