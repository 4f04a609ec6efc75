//! Checking RA-TLS peers: an [`Appraiser`] verifies the evidence of a certificate, and rustls
//! verifiers built on it admit peers during the handshake.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use teeserve_attest::collateral::source::{CollateralSource, SourceError};
use teeserve_attest::x509::HandshakeSignatures;
use teeserve_attest::{Policy, Verdict, Verifier};

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
