//! The whole check a requester makes before sending data, in one call: fetch the server's
//! attestation (over a fresh nonce when the key's origin calls for one), verify and appraise
//! it, and build the TLS configuration that admits only the attested key from then on.

use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use teeserve_attest::{Collateral, CollateralSource, Policy, TrustAnchor, Verdict, Verifier};
use teeserve_ratls::{Appraiser, AttestationDoc, KeyOrigin};

use crate::attestation::{
    appraise_attestation, attested_client_config, fetch_document, fresh_nonce, DocumentQuery,
    FetchedAttestation,
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
    /// When to ask for a quote over a fresh nonce.
    pub nonce: NonceChoice,
}

/// When a requester asks the server for a quote over its own fresh nonce.
///
/// The nonce shows that the TEE answered now, which matters only when something outside the TEE
/// may hold the TLS key: whoever holds it can answer handshakes and replay the server's saved
/// document. A key made in the TEE (key origin `tee`) or released by the key broker to attested
/// TEEs only (`broker`) is held by no one else, so the TLS handshake that presented it, and
/// over which the document came, already shows an attested TEE is answering; the standing
/// document (its quote verified and bound to that key like any other) is enough. A key the
/// host gave (`host`) may exist outside: only a quote over a fresh nonce shows the TEE is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonceChoice {
    /// Fetch the standing document; when it says the key came from the host, ask again with
    /// a fresh nonce (the default).
    #[default]
    ByKeyOrigin,
    /// Always ask with a fresh nonce.
    Always,
    /// Never: the standing document only, which a host holding the key could replay (the
    /// binding to this connection's key still holds).
    Never,
}

impl std::fmt::Debug for AttestOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestOptions")
            .field("addr", &self.addr)
            .field("server_name", &self.server_name)
            .field("ca", &self.ca.is_some())
            .field("identity", &self.identity.is_some())
            .field("policy", &self.policy.name)
            .field("nonce", &self.nonce)
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
    /// The document's JSON as the server sent it (what its receipts name by SHA-256).
    pub doc_json: Vec<u8>,
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

/// Fetches the server's attestation document (over a fresh nonce when [`NonceChoice`] asks
/// for one) and admits it, or says which rule refused. Only the nonce is sent to the server.
pub async fn attest_server(o: AttestOptions) -> Result<Attested, Refusal> {
    let first = match o.nonce {
        NonceChoice::Always => Some(nonce()?),
        NonceChoice::ByKeyOrigin | NonceChoice::Never => None,
    };
    let (fetched, doc_json) = fetch_query(&o, first.as_ref().map(|n| &n[..]).into()).await?;
    let (mut appraiser, mut verdict) = admit(&o, &fetched, first.as_ref().map(|n| &n[..]))?;
    let (mut fetched, mut doc_json) = (fetched, doc_json);
    if o.nonce == NonceChoice::ByKeyOrigin && fetched.doc.key_origin == KeyOrigin::Host {
        // The policy admits a host key (else `admit` refused); whoever holds one could have
        // replayed that document, so the TEE must quote this requester's own nonce.
        let n = nonce()?;
        (fetched, doc_json) = fetch_query(&o, DocumentQuery::Nonce(&n)).await?;
        (appraiser, verdict) = admit(&o, &fetched, Some(&n))?;
    }
    Ok(Attested {
        verdict,
        doc: fetched.doc,
        cert: fetched.cert,
        doc_json,
        appraiser,
        policy: o.policy,
    })
}

fn nonce() -> Result<[u8; 32], Refusal> {
    fresh_nonce().map_err(|e| Refusal::new("nonce", e.to_string()))
}

/// One fetch of the document (parsed, and as served): the standing one, one over a nonce, or
/// one named by its SHA-256, within [`FETCH_TIMEOUT`].
pub(crate) async fn fetch_query(
    o: &AttestOptions,
    query: DocumentQuery<'_>,
) -> Result<(FetchedAttestation, Vec<u8>), Refusal> {
    // With a CA the fetch already requires it; without one the document's binding to this
    // connection's key is what decides.
    let fetch_verifier = o
        .ca
        .clone()
        .unwrap_or_else(|| Arc::new(teeserve_attest::collateral::pccs::AnyServerCert::default()));
    let identity = o.identity.as_ref().map(|(c, k)| (c.clone(), k.clone_key()));
    let fetch = fetch_document(&o.addr, fetch_verifier, identity, &o.server_name, query);
    tokio::time::timeout(FETCH_TIMEOUT, fetch)
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
        .map_err(|e| Refusal::new("fetch", format!("cannot get the server's attestation: {e}")))
}

/// Verifies and appraises a fetched document (against `nonce` when one was sent).
pub(crate) fn admit(
    o: &AttestOptions,
    fetched: &FetchedAttestation,
    nonce: Option<&[u8]>,
) -> Result<(Arc<Appraiser>, Verdict), Refusal> {
    let verifier = Verifier::new(o.anchor.clone());
    let collateral = match (&o.collateral, &fetched.doc.collateral) {
        (Some(c), _) => c.clone(),
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
    let verdict = appraise_attestation(&appraiser, &o.policy, fetched, nonce, o.at)?;
    Ok((appraiser, verdict))
}
