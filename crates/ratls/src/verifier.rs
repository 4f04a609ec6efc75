//! Checking RA-TLS peers: an [`Appraiser`] verifies the evidence of a certificate, and rustls
//! verifiers built on it admit peers during the handshake.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use teeserve_attest::x509::HandshakeSignatures;
use teeserve_attest::{CollateralSource, Policy, SourceError, Verdict, Verifier};

use crate::{parse_cert, RaTlsError};

/// Verifies RA-TLS certificates: evidence, key binding, and (optionally) a policy.
#[derive(Debug)]
pub struct Appraiser {
    /// The quote verifier (its trust anchor).
    pub verifier: Verifier,
    /// Where collateral comes from.
    pub collateral: CollateralSource,
}

impl Appraiser {
    /// An appraiser.
    pub fn new(verifier: Verifier, collateral: CollateralSource) -> Self {
        Self {
            verifier,
            collateral,
        }
    }

    /// Verifies a certificate's evidence and binding at `at`; returns the verdict.
    pub fn verify_cert(&self, der: &[u8], at: i64) -> Result<Verdict, RaTlsError> {
        let ev = parse_cert(der)?;
        if let Some(e) = ev.binding_error {
            return Err(RaTlsError::Binding(e));
        }
        let mut v = self.verify_quote(&ev.quote, at)?;
        // The quote carries no time; the certificate's notBefore is when the evidence was made,
        // for policies that bound its age (`max_evidence_age_secs`).
        v.evidence_not_before_unix = x509_parser::parse_x509_certificate(der)
            .ok()
            .map(|(_, c)| c.validity().not_before.timestamp());
        Ok(v)
    }

    /// Verifies a quote at `at`.
    pub fn verify_quote(&self, quote: &[u8], at: i64) -> Result<Verdict, RaTlsError> {
        self.collateral
            .verify(&self.verifier, quote, at)
            .map_err(|e| match e {
                SourceError::Verify(v) => RaTlsError::Verify(v),
                SourceError::Fetch(f) => RaTlsError::Collateral(f.to_string()),
            })
    }

    /// Verifies and appraises.
    pub fn admit(&self, der: &[u8], policy: &Policy, at: i64) -> Result<Verdict, RaTlsError> {
        let v = self.verify_cert(der, at)?;
        policy.appraise(&v)?;
        Ok(v)
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn tls_err(e: impl std::fmt::Display) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(Msg(e.to_string())),
    )))
}

#[derive(Debug)]
struct Msg(String);

impl std::fmt::Display for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Msg {}

/// A rustls client-certificate verifier for RA-TLS peers.
///
/// With a policy, it admits only peers whose evidence verifies and is admitted. Without one
/// ([`AttestedClientVerifier::deferred`]), it requires a well-formed client certificate and
/// leaves the decision to the application, which can then answer with the reason (the key
/// broker does this to report which rule refused a peer).
#[derive(Debug)]
pub struct AttestedClientVerifier {
    handshake: HandshakeSignatures,
    appraiser: Option<Arc<Appraiser>>,
    policy: Option<Policy>,
}

impl AttestedClientVerifier {
    /// Admits only peers whose evidence verifies and that `policy` admits.
    pub fn new(appraiser: Arc<Appraiser>, policy: Policy) -> Self {
        Self {
            handshake: HandshakeSignatures::default(),
            appraiser: Some(appraiser),
            policy: Some(policy),
        }
    }

    /// Requires a client certificate and defers the decision to the application.
    pub fn deferred() -> Self {
        Self {
            handshake: HandshakeSignatures::default(),
            appraiser: None,
            policy: None,
        }
    }
}

impl ClientCertVerifier for AttestedClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        x509_parser::parse_x509_certificate(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if let (Some(a), Some(p)) = (&self.appraiser, &self.policy) {
            a.admit(end_entity, p, now()).map_err(tls_err)?;
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.handshake.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.handshake.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.handshake.schemes()
    }
}

/// A rustls server-certificate verifier that admits a server only when its RA-TLS certificate's
/// evidence verifies and `policy` admits it. The verdict is handed to `on_verdict`.
pub struct AttestedServerVerifier {
    handshake: HandshakeSignatures,
    appraiser: Arc<Appraiser>,
    policy: Policy,
    on_verdict: Box<dyn Fn(&Verdict) + Send + Sync>,
}

impl std::fmt::Debug for AttestedServerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AttestedServerVerifier(policy {:?})", self.policy.name)
    }
}

impl AttestedServerVerifier {
    /// A verifier; `on_verdict` receives the verdict of an admitted server.
    pub fn new(
        appraiser: Arc<Appraiser>,
        policy: Policy,
        on_verdict: impl Fn(&Verdict) + Send + Sync + 'static,
    ) -> Self {
        Self {
            handshake: HandshakeSignatures::default(),
            appraiser,
            policy,
            on_verdict: Box::new(on_verdict),
        }
    }
}

impl ServerCertVerifier for AttestedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let v = self
            .appraiser
            .admit(end_entity, &self.policy, now())
            .map_err(tls_err)?;
        (self.on_verdict)(&v);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.handshake.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.handshake.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.handshake.schemes()
    }
}

/// A rustls server-certificate verifier for a requester that has attested a server's TLS key:
/// every handshake, on every connection (a reconnect included), must present that same key.
///
/// Checking the key once after a connection is open protects only that connection; a client
/// that reconnects by itself (a gRPC channel does) would hand its next request to whoever
/// answers. Inside the verifier, a handshake with any other key fails before a byte of
/// application data is sent.
///
/// With a CA verifier ([`PinnedKeyVerifier::with_ca`]) the certificate must also chain to the
/// CA and name the server; with an appraiser ([`PinnedKeyVerifier::with_evidence`]) a
/// certificate that carries RA-TLS evidence must also have that evidence verified and
/// admitted.
pub struct PinnedKeyVerifier {
    spki: Vec<u8>,
    ca: Option<Arc<dyn ServerCertVerifier>>,
    evidence: Option<(Arc<Appraiser>, Policy)>,
    handshake: HandshakeSignatures,
}

impl std::fmt::Debug for PinnedKeyVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PinnedKeyVerifier(spki sha256 {}, ca {}, evidence {})",
            spki_sha256_hex(&self.spki),
            self.ca.is_some(),
            self.evidence.is_some()
        )
    }
}

fn spki_sha256_hex(spki: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, spki))
}

/// The DER SubjectPublicKeyInfo of a certificate.
pub fn spki_of(cert_der: &[u8]) -> Result<Vec<u8>, RaTlsError> {
    x509_parser::parse_x509_certificate(cert_der)
        .map(|(_, c)| c.public_key().raw.to_vec())
        .map_err(|e| RaTlsError::Certificate(format!("not an X.509 certificate: {e}")))
}

impl PinnedKeyVerifier {
    /// Admits only certificates whose SubjectPublicKeyInfo is `spki` (DER).
    pub fn new(spki: Vec<u8>) -> Self {
        Self {
            spki,
            ca: None,
            evidence: None,
            handshake: HandshakeSignatures::default(),
        }
    }

    /// Admits only certificates with the same key as `cert_der`.
    pub fn for_cert(cert_der: &[u8]) -> Result<Self, RaTlsError> {
        Ok(Self::new(spki_of(cert_der)?))
    }

    /// Also requires `ca` to accept the certificate (chain and server name).
    pub fn with_ca(mut self, ca: Arc<dyn ServerCertVerifier>) -> Self {
        self.ca = Some(ca);
        self
    }

    /// Also verifies and appraises the RA-TLS evidence of certificates that carry some.
    pub fn with_evidence(mut self, appraiser: Arc<Appraiser>, policy: Policy) -> Self {
        self.evidence = Some((appraiser, policy));
        self
    }
}

impl ServerCertVerifier for PinnedKeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        at: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(ca) = &self.ca {
            ca.verify_server_cert(end_entity, intermediates, server_name, ocsp, at)?;
        }
        let spki = spki_of(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if spki != self.spki {
            return Err(tls_err(format!(
                "the server presented TLS key sha256 {}, not the attested key sha256 {}",
                spki_sha256_hex(&spki),
                spki_sha256_hex(&self.spki)
            )));
        }
        if let Some((appraiser, policy)) = &self.evidence {
            if parse_cert(end_entity).is_ok() {
                appraiser
                    .admit(end_entity, policy, now())
                    .map_err(tls_err)?;
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match &self.ca {
            Some(ca) => ca.verify_tls12_signature(message, cert, dss),
            None => self.handshake.tls12(message, cert, dss),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match &self.ca {
            Some(ca) => ca.verify_tls13_signature(message, cert, dss),
            None => self.handshake.tls13(message, cert, dss),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        match &self.ca {
            Some(ca) => ca.supported_verify_schemes(),
            None => self.handshake.schemes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    struct Identity {
        cert: CertificateDer<'static>,
        key: Vec<u8>,
    }

    fn self_signed(name: &str) -> Identity {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        Identity {
            cert: cert.der().clone(),
            key: key.serialize_der(),
        }
    }

    /// A CA and two server certificates it issued for `name`, with different keys.
    fn ca_issued(name: &str) -> (CertificateDer<'static>, Identity, Identity) {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = p.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_der(ca.der(), &ca_key).unwrap();
        let issue = || {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            Identity {
                cert: cert.der().clone(),
                key: key.serialize_der(),
            }
        };
        (ca.der().clone(), issue(), issue())
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A full TLS handshake in memory between a client using `verifier` and a server with
    /// `server`; then the client sends `data`. Returns what the server received, or the
    /// handshake's error.
    fn handshake(
        verifier: Arc<dyn ServerCertVerifier>,
        server: &Identity,
        data: &[u8],
    ) -> Result<Vec<u8>, rustls::Error> {
        use std::io::{Read, Write};
        let client_cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let server_cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![server.cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key.clone())),
            )
            .unwrap();
        let mut c = rustls::ClientConnection::new(
            Arc::new(client_cfg),
            ServerName::try_from("server.test").unwrap(),
        )
        .unwrap();
        let mut s = rustls::ServerConnection::new(Arc::new(server_cfg)).unwrap();
        // The client queues its data now: rustls sends it only once the handshake (and so
        // the verifier) has let it through.
        c.writer().write_all(data).unwrap();
        let mut received = Vec::new();
        for _ in 0..20 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets()?;
            let mut chunk = [0u8; 256];
            while let Ok(n) = s.reader().read(&mut chunk) {
                if n == 0 {
                    break;
                }
                received.extend_from_slice(&chunk[..n]);
            }
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut &buf[..]).unwrap();
            c.process_new_packets()?;
            if received.len() >= data.len() {
                break;
            }
        }
        Ok(received)
    }

    #[test]
    fn only_the_pinned_key_completes_a_handshake() {
        let attested = self_signed("server.test");
        let impostor = self_signed("server.test");
        let pinned = Arc::new(PinnedKeyVerifier::for_cert(&attested.cert).unwrap());
        assert_eq!(
            handshake(pinned.clone(), &attested, b"tensor").unwrap(),
            b"tensor"
        );
        let e = handshake(pinned, &impostor, b"tensor").unwrap_err();
        assert!(e.to_string().contains("not the attested key"), "{e}");
    }

    #[test]
    fn on_top_of_a_ca_both_the_chain_and_the_key_must_hold() {
        let (ca, attested, same_ca_other_key) = ca_issued("server.test");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let ca_verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let pinned = Arc::new(
            PinnedKeyVerifier::for_cert(&attested.cert)
                .unwrap()
                .with_ca(ca_verifier.clone()),
        );
        assert_eq!(handshake(pinned.clone(), &attested, b"x").unwrap(), b"x");
        // Valid for the CA, but not the attested key.
        let e = handshake(pinned.clone(), &same_ca_other_key, b"x").unwrap_err();
        assert!(e.to_string().contains("not the attested key"), "{e}");
        // A self-signed certificate with the attested key is refused by the CA check.
        let key = rcgen::KeyPair::try_from(attested.key.as_slice()).unwrap();
        let self_signed_same_key = Identity {
            cert: rcgen::CertificateParams::new(vec!["server.test".to_owned()])
                .unwrap()
                .self_signed(&key)
                .unwrap()
                .der()
                .clone(),
            key: attested.key.clone(),
        };
        assert!(handshake(pinned, &self_signed_same_key, b"x").is_err());
    }
}
