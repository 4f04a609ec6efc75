//! The whole check a requester makes before sending data, in one call: fetch the server's
//! attestation over a fresh nonce, verify and appraise it, and build the TLS configuration that
//! admits only the attested key from then on.

use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use teeserve_attest::{Collateral, CollateralSource, Policy, TrustAnchor, Verdict, Verifier};
use teeserve_ratls::{Appraiser, AttestationDoc};

use crate::attestation::{
    appraise_attestation, attested_client_config, fetch_attestation_as, fresh_nonce,
};
use crate::error::Refusal;
use crate::transport::ClientIdentity;

/// How long fetching the attestation document may take (a fresh quote included).
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What a requester trusts and requires of a server.
pub struct AttestOptions {
    /// The server, `host:port`.
    pub addr: String,
    /// The name its certificate must carry.
    pub server_name: String,
    /// The CA its certificate must chain to (None: the attestation alone decides).
    pub ca: Option<Arc<dyn ServerCertVerifier>>,
    /// A client certificate and key, for a server that requires mutual TLS.
    pub identity: Option<ClientIdentity>,
    /// The policy the evidence must satisfy.
    pub policy: Policy,
    /// The root the evidence must chain to.
    pub anchor: TrustAnchor,
    /// Collateral to verify with (None: the collateral the server publishes).
    pub collateral: Option<Collateral>,
    /// The verification time, Unix seconds.
    pub at: i64,
    /// Ask for a quote over a fresh nonce (false: the server's standing document, which a
    /// host could replay; the binding to this connection's key still holds).
    pub fresh_nonce: bool,
}

impl std::fmt::Debug for AttestOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestOptions")
            .field("addr", &self.addr)
            .field("server_name", &self.server_name)
            .field("ca", &self.ca.is_some())
            .field("identity", &self.identity.is_some())
            .field("policy", &self.policy.name)
            .field("fresh_nonce", &self.fresh_nonce)
            .finish_non_exhaustive()
    }
}

/// A server whose attestation was admitted.
#[derive(Debug)]
pub struct Attested {
    /// The verdict on the document's quote.
    pub verdict: Verdict,
    /// The document.
    pub doc: AttestationDoc,
    /// The certificate (DER) whose key the document binds.
    pub cert: Vec<u8>,
    appraiser: Arc<Appraiser>,
    policy: Policy,
}

impl Attested {
    /// The TLS configuration for the data connections: every handshake must present the
    /// attested key, chain to `ca` when given, and have any RA-TLS evidence of its certificate
    /// admitted by the same policy.
    pub fn client_config(
        &self,
        ca: Option<Arc<dyn ServerCertVerifier>>,
        identity: Option<ClientIdentity>,
        alpn: &[&[u8]],
    ) -> Result<rustls::ClientConfig, Refusal> {
        attested_client_config(
            &self.cert,
            ca,
            Some((self.appraiser.clone(), self.policy.clone())),
            identity,
            alpn,
        )
        .map_err(|e| Refusal::new("certificate", e.to_string()))
    }
}

/// Fetches the server's attestation document (over a fresh nonce unless the options say
/// otherwise) and admits it, or says which rule refused. Only the nonce is sent to the server.
pub async fn attest_server(o: AttestOptions) -> Result<Attested, Refusal> {
    let nonce = if o.fresh_nonce {
        Some(fresh_nonce().map_err(|e| Refusal::new("nonce", e.to_string()))?)
    } else {
        None
    };
    let nonce = nonce.as_ref().map(|n| &n[..]);
    // With a CA the fetch already requires it; without one the document's binding to this
    // connection's key is what decides.
    let fetch_verifier = o
        .ca
        .clone()
        .unwrap_or_else(|| Arc::new(teeserve_attest::collateral::pccs::AnyServerCert::default()));
    let fetch = fetch_attestation_as(&o.addr, fetch_verifier, o.identity, &o.server_name, nonce);
    let fetched = tokio::time::timeout(FETCH_TIMEOUT, fetch)
        .await
        .map_err(|_| {
            Refusal::new(
                "fetch",
                format!(
                    "cannot get the server's attestation: no answer from {} within {} s",
                    o.addr,
                    FETCH_TIMEOUT.as_secs()
                ),
            )
        })?
        .map_err(|e| Refusal::new("fetch", format!("cannot get the server's attestation: {e}")))?;
    let verifier = Verifier::new(o.anchor);
    let collateral = match (o.collateral, &fetched.doc.collateral) {
        (Some(c), _) => c,
        (None, Some(published)) => Collateral::from_json(published.to_string().as_bytes())
            .map_err(|e| Refusal::new("collateral", format!("the server's collateral: {e}")))?,
        (None, None) => {
            return Err(Refusal::new(
                "collateral",
                "no collateral: the server publishes none and none was given",
            ))
        }
    };
    let source = CollateralSource::bundle(&verifier, &collateral).map_err(Refusal::from)?;
    let appraiser = Arc::new(Appraiser::new(verifier, source));
    let verdict = appraise_attestation(&appraiser, &o.policy, &fetched, nonce, o.at)?;
    Ok(Attested {
        verdict,
        doc: fetched.doc,
        cert: fetched.cert,
        appraiser,
        policy: o.policy,
    })
}
