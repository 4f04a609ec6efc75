//! The native half of teeserve's Python package (`teeserve._native`): quote verification with
//! the Rust verifier, the attestation check plus the pinning forwarder behind
//! `teeserve.attested_channel` and `teeserve.attested_session`, and receipt verification
//! (`teeserve.verify_receipt`). The Python half (`teeserve/`) turns its results into dicts,
//! exceptions, a `grpc.Channel` and a `requests.Session`.
//!
//! Refusals are raised as `_native.Refusal(rule, detail, message)`; malformed arguments (a
//! policy, a root certificate, a client key) as `ValueError`.
// `deny`, not `forbid`: PyO3's macros expand to unsafe code that they allow themselves.
#![deny(unsafe_code)]
#![forbid(unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use zeroize::Zeroizing;

use teeserve_attest::{Collateral, Policy, PreparedCollateral, Quote, TrustAnchor, Verifier};
use teeserve_client::forward::{Forwarder, Protocol, Upstream};
use teeserve_client::{attest_server, AttestOptions, NonceChoice, Refusal};

mod receipt;

pyo3::create_exception!(
    _native,
    RefusalError,
    pyo3::exceptions::PyException,
    "A refusal: args are (rule, detail, message)."
);

fn refusal(r: Refusal) -> PyErr {
    RefusalError::new_err((r.rule, r.detail, r.message))
}

fn value_error(what: &str, e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("{what}: {e}"))
}

/// One runtime for every forwarder and attestation check of the process.
fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("teeserve-io")
        .enable_all()
        .build()
        .map_err(|e| PyOSError::new_err(format!("cannot start teeserve's I/O threads: {e}")))?;
    Ok(RT.get_or_init(|| rt))
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A policy from TOML text or from JSON text (a dict with the TOML's keys).
fn policy_from(kind: &str, text: &str) -> PyResult<Policy> {
    match kind {
        "toml" => Policy::from_toml(text).map_err(|e| value_error("policy", e)),
        "json" => {
            let mut p: Policy = serde_json::from_str(text).map_err(|e| value_error("policy", e))?;
            p.normalise().map_err(|e| value_error("policy", e))?;
            Ok(p)
        }
        other => Err(PyValueError::new_err(format!(
            "policy kind {other:?} is neither toml nor json"
        ))),
    }
}

fn anchor_from(root_pem: Option<&[u8]>) -> PyResult<TrustAnchor> {
    match root_pem {
        Some(pem) => TrustAnchor::from_pem(pem).map_err(|e| value_error("root", e)),
        None => Ok(TrustAnchor::intel()),
    }
}

/// Unix seconds or RFC 3339 text.
#[pyfunction]
fn parse_time(text: &str) -> PyResult<i64> {
    if let Ok(n) = text.trim().parse::<i64>() {
        return Ok(n);
    }
    time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| {
            PyValueError::new_err(format!(
                "at {text:?} is neither Unix seconds nor an RFC 3339 time"
            ))
        })
}

/// Collateral checked once per (root, bundle), as the key broker keeps it: signatures, chains
/// and CRLs do not change with time; the validity windows are checked on every call.
struct VerifyCache {
    verifiers: HashMap<[u8; 32], Verifier>,
    prepared: Vec<([u8; 64], Arc<PreparedCollateral>)>,
}

/// Bundles remembered at once.
const CACHED_BUNDLES: usize = 8;

fn cache() -> &'static Mutex<VerifyCache> {
    static CACHE: OnceLock<Mutex<VerifyCache>> = OnceLock::new();
    CACHE.get_or_init(|| {
        Mutex::new(VerifyCache {
            verifiers: HashMap::new(),
            prepared: Vec::new(),
        })
    })
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
    out
}

/// The verifier for `anchor`, and `bundle` checked against it (from the cache when it was
/// checked before).
fn prepared_for(
    anchor: TrustAnchor,
    bundle: &[u8],
) -> Result<(Verifier, Arc<PreparedCollateral>), Refusal> {
    let root = anchor.cert().fingerprint();
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(&root);
    key[32..].copy_from_slice(&sha256(bundle));
    let verifier = {
        let mut c = cache().lock().map_err(|_| poisoned())?;
        if let Some(hit) = c
            .prepared
            .iter()
            .find(|(k, _)| *k == key)
            .map(|e| e.1.clone())
        {
            let v = c.verifiers.get(&root).cloned();
            if let Some(v) = v {
                return Ok((v, hit));
            }
        }
        c.verifiers
            .entry(root)
            .or_insert_with(|| Verifier::new(anchor))
            .clone()
    };
    let collateral = Collateral::from_json(bundle)
        .map_err(|e| Refusal::new("collateral", format!("collateral: {e}")))?;
    let prepared = Arc::new(verifier.prepare_untimed(&collateral)?);
    let mut c = cache().lock().map_err(|_| poisoned())?;
    if c.prepared.len() >= CACHED_BUNDLES {
        c.prepared.remove(0);
    }
    c.prepared.push((key, prepared.clone()));
    Ok((verifier, prepared))
}

fn poisoned() -> Refusal {
    Refusal::new("internal", "the verifier's cache is unusable after a panic")
}

/// Forgets the collateral checked so far (the next call checks its bundle again).
#[pyfunction]
fn clear_cache() {
    if let Ok(mut c) = cache().lock() {
        c.prepared.clear();
        c.verifiers.clear();
    }
}

/// Verifies a quote against a collateral bundle (JSON bytes) or the collateral a PCCS serves,
/// at `at` (default now), and appraises it with a policy when one is given. Returns the
/// verdict as JSON text, the same as `teeserve attest verify` prints.
#[pyfunction]
#[pyo3(signature = (quote, collateral=None, pccs_url=None, at=None, policy_kind=None, policy_text=None, root_pem=None))]
#[allow(clippy::too_many_arguments)]
fn verify_quote(
    py: Python<'_>,
    quote: Vec<u8>,
    collateral: Option<Vec<u8>>,
    pccs_url: Option<String>,
    at: Option<i64>,
    policy_kind: Option<String>,
    policy_text: Option<String>,
    root_pem: Option<Vec<u8>>,
) -> PyResult<String> {
    let policy = match (policy_kind.as_deref(), policy_text.as_deref()) {
        (Some(k), Some(t)) => Some(policy_from(k, t)?),
        _ => None,
    };
    let anchor = anchor_from(root_pem.as_deref())?;
    let quote = teeserve_attest::quote::decode_quote_file(&quote);
    let at = at.unwrap_or_else(now);
    let verdict = py
        .detach(move || -> Result<_, Refusal> {
            let parsed = Quote::parse(&quote).map_err(teeserve_attest::VerifyError::from)?;
            let verdict = match (collateral, pccs_url) {
                (Some(bundle), _) => {
                    let (verifier, prepared) = prepared_for(anchor, &bundle)?;
                    verifier.verify_parsed(&parsed, &prepared, at)?
                }
                (None, Some(url)) => {
                    let client = teeserve_attest::PccsClient::new(&url, None)
                        .map_err(|e| Refusal::new("collateral", format!("pccs_url: {e}")))?;
                    // Only a PCK chain that ends in the root may choose what is fetched.
                    let verifier = Verifier::new(anchor);
                    verifier.check_pck_chain(&parsed)?;
                    let c = client
                        .fetch_for_quote(&parsed)
                        .map_err(|e| Refusal::new("collateral", e.to_string()))?;
                    let prepared = verifier.prepare(&c, at)?;
                    verifier.verify_parsed(&parsed, &prepared, at)?
                }
                (None, None) => {
                    return Err(Refusal::new(
                        "collateral",
                        "no collateral: give collateral (a bundle) or pccs_url",
                    ))
                }
            };
            if let Some(p) = &policy {
                p.appraise(&verdict)?;
            }
            Ok(verdict)
        })
        .map_err(refusal)?;
    serde_json::to_string(&verdict).map_err(|e| value_error("verdict", e))
}

/// An attested server and the forwarder that carries connections to it, pinned to the
/// attested key.
#[pyclass(module = "teeserve._native", name = "AttestedForwarder")]
struct AttestedForwarder {
    forwarder: Mutex<Forwarder>,
    socket_path: String,
    tcp_address: Option<String>,
    verdict_json: String,
    document_json: String,
    /// The standing document the server's receipts name (as served) when the forwarder was
    /// made, and its SHA-256.
    attestation_document: (Vec<u8>, [u8; 32]),
    /// Later standing documents that receipts named, each admitted, newest last, at most
    /// [`LATER_DOCUMENTS`].
    later_documents: Mutex<std::collections::VecDeque<KeptDocument>>,
    certificate: Vec<u8>,
    accept_header: Option<String>,
    /// With receipts: how to fetch and admit a later standing document.
    later: Option<Trust>,
}

/// A standing document a forwarder admitted: its SHA-256 and its bytes as served.
type KeptDocument = ([u8; 32], Arc<Vec<u8>>);

/// How many later standing documents a forwarder keeps (the server keeps 16).
const LATER_DOCUMENTS: usize = 16;

/// What a requester trusts and how it reaches the server, as given to `attest`: the options of
/// each attestation it makes, then and (with receipts) for a later standing document.
struct Trust {
    addr: String,
    server_name: String,
    ca: Option<Arc<dyn rustls::client::danger::ServerCertVerifier>>,
    /// The client certificate chain and key (PEM), for mutual TLS.
    identity: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
    policy: Policy,
    anchor: TrustAnchor,
    collateral: Option<Collateral>,
}

impl Trust {
    /// The client certificate and key, parsed.
    fn identity(&self) -> PyResult<Option<teeserve_client::ClientIdentity>> {
        self.identity
            .as_ref()
            .map(|(chain, key)| {
                Ok((
                    teeserve_tls::certs_from_pem(chain)
                        .map_err(|e| value_error("certificate_chain", e))?,
                    teeserve_tls::key_from_pem(key).map_err(|e| value_error("private_key", e))?,
                ))
            })
            .transpose()
    }

    /// The options of one attestation, appraised now.
    fn options(&self, nonce: NonceChoice) -> PyResult<AttestOptions> {
        Ok(AttestOptions {
            addr: self.addr.clone(),
            server_name: self.server_name.clone(),
            ca: self.ca.clone(),
            identity: self.identity()?,
            policy: self.policy.clone(),
            anchor: self.anchor.clone(),
            collateral: self.collateral.clone(),
            at: now(),
            nonce,
        })
    }
}

#[pymethods]
impl AttestedForwarder {
    /// The value of `x-teeserve-accept-sha256` that every request carries when the policy pins
    /// model files (`models = {...}`): the attested server answers from no other file.
    #[getter]
    fn accept_header(&self) -> Option<String> {
        self.accept_header.clone()
    }

    /// The Unix socket to connect to.
    #[getter]
    fn socket_path(&self) -> &str {
        &self.socket_path
    }

    /// The loopback `host:port` to connect to, for a forwarder started with `tcp`.
    #[getter]
    fn tcp_address(&self) -> Option<String> {
        self.tcp_address.clone()
    }

    /// The verdict on the server's evidence (JSON).
    #[getter]
    fn verdict_json(&self) -> &str {
        &self.verdict_json
    }

    /// The server's attestation document (JSON).
    #[getter]
    fn document_json(&self) -> &str {
        &self.document_json
    }

    /// The attestation document as the server sent it (JSON bytes), to keep with receipts:
    /// with `receipts`, the standing document that the server's receipts name, which is not
    /// the admitted one when that was quoted over the requester's nonce.
    #[getter]
    fn attestation_document<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyBytes> {
        pyo3::types::PyBytes::new(py, &self.attestation_document.0)
    }

    /// The standing attestation document (JSON bytes, as served) that `receipt` names: the one
    /// held since the forwarder was made, or, when the served models changed since, the later
    /// one the receipt names, fetched by its SHA-256 and admitted as the first was (then kept,
    /// with the last few). Raises `Refusal` when that document is not admitted or no longer
    /// kept by the server.
    fn document_of_receipt<'py>(
        &self,
        py: Python<'py>,
        receipt: Vec<u8>,
    ) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
        let named = teeserve_ratls::receipt::named_document(&receipt)
            .map_err(|e| refusal(Refusal::new("receipt", e.to_string())))?;
        if self.attestation_document.1 == named {
            return Ok(pyo3::types::PyBytes::new(py, &self.attestation_document.0));
        }
        let known = self
            .later_documents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(sha, _)| *sha == named)
            .map(|(_, doc)| doc.clone());
        if let Some(doc) = known {
            return Ok(pyo3::types::PyBytes::new(py, &doc));
        }
        let later = self
            .later
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("this channel was made without receipts"))?;
        let options = later.options(NonceChoice::Never)?;
        let rt = runtime()?;
        let doc = py
            .detach(|| {
                rt.block_on(teeserve_client::document_of_receipt(
                    &receipt,
                    &self.attestation_document.0,
                    &self.certificate,
                    options,
                ))
            })
            .map_err(refusal)?;
        let mut kept = self
            .later_documents
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Two threads may have fetched the same document; it is kept once.
        if !kept.iter().any(|(sha, _)| *sha == named) {
            if kept.len() == LATER_DOCUMENTS {
                kept.pop_front();
            }
            kept.push_back((named, Arc::new(doc.clone())));
        }
        Ok(pyo3::types::PyBytes::new(py, &doc))
    }

    /// The certificate (DER) whose key the attestation document binds.
    #[getter]
    fn certificate<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyBytes> {
        pyo3::types::PyBytes::new(py, &self.certificate)
    }

    /// Why the last connection to the server was refused or failed, if one was.
    fn last_error(&self) -> Option<String> {
        self.forwarder.lock().ok().and_then(|f| f.last_error())
    }

    /// True once closed.
    #[getter]
    fn closed(&self) -> bool {
        self.forwarder.lock().map(|f| f.is_closed()).unwrap_or(true)
    }

    /// Stops the forwarder: no new connection, the open ones end, the socket is removed.
    fn close(&self) {
        if let Ok(mut f) = self.forwarder.lock() {
            f.close();
        }
    }
}

/// Checks a server's attestation and starts a forwarder pinned to its attested key; raises
/// `Refusal` before anything but a nonce reached the server when the check fails. With
/// `receipts`, the server must sign receipts, and the document they name is kept.
#[pyfunction]
#[pyo3(signature = (addr, server_name, protocol, policy_kind, policy_text, ca_pem=None, root_pem=None, collateral=None, certificate_chain=None, private_key=None, receipts=false, tcp=false))]
#[allow(clippy::too_many_arguments)]
fn attest(
    py: Python<'_>,
    addr: String,
    server_name: String,
    protocol: &str,
    policy_kind: &str,
    policy_text: &str,
    ca_pem: Option<Vec<u8>>,
    root_pem: Option<Vec<u8>>,
    collateral: Option<Vec<u8>>,
    certificate_chain: Option<Vec<u8>>,
    private_key: Option<Vec<u8>>,
    receipts: bool,
    tcp: bool,
) -> PyResult<AttestedForwarder> {
    let private_key = private_key.map(Zeroizing::new);
    let (protocol, alpn): (Protocol, &[&[u8]]) = match protocol {
        "grpc" => (Protocol::Grpc, &[b"h2"]),
        "http1" => (Protocol::Http1, &[b"http/1.1"]),
        other => {
            return Err(PyValueError::new_err(format!(
                "protocol {other:?} is neither grpc nor http1"
            )))
        }
    };
    let policy = policy_from(policy_kind, policy_text)?;
    let accept_header = teeserve_client::accept_header(&policy);
    let anchor = anchor_from(root_pem.as_deref())?;
    let ca = ca_pem
        .as_deref()
        .map(teeserve_client::ca_verifier)
        .transpose()
        .map_err(|e| value_error("root_certificates", e))?;
    let identity = match (certificate_chain, private_key) {
        (Some(chain), Some(key)) => Some((chain, key)),
        (None, None) => None,
        _ => {
            return Err(PyValueError::new_err(
                "give both private_key and certificate_chain, or neither",
            ))
        }
    };
    let collateral = collateral
        .as_deref()
        .map(Collateral::from_json)
        .transpose()
        .map_err(|e| value_error("collateral", e))?;
    let trust = Trust {
        addr,
        server_name,
        ca,
        identity,
        policy,
        anchor,
        collateral,
    };
    let standing = receipts
        .then(|| trust.options(NonceChoice::Never))
        .transpose()?;
    let options = trust.options(NonceChoice::ByKeyOrigin)?;
    let data_identity = trust.identity()?;
    // A key that does not go with its certificate is the caller's mistake, said now, not a
    // failed handshake later blamed on the server.
    if let Some((chain, key)) = &data_identity {
        rustls::sign::CertifiedKey::from_der(
            chain.clone(),
            key.clone_key(),
            &teeserve_tls::provider(),
        )
        .map_err(|e| {
            value_error(
                "private_key",
                format!("does not match certificate_chain: {e}"),
            )
        })?;
    }
    let rt = runtime()?;
    let (attested, receipt_doc, tls) = py
        .detach(|| {
            rt.block_on(async {
                let attested = attest_server(options).await?;
                let receipt_doc = match standing {
                    Some(o) => Some(teeserve_client::receipt_document(&attested, o).await?),
                    None => None,
                };
                let tls = attested.client_config(trust.ca.clone(), data_identity, alpn)?;
                Ok::<_, Refusal>((attested, receipt_doc, tls))
            })
        })
        .map_err(refusal)?;
    let upstream = Upstream {
        addr: trust.addr.clone(),
        server_name: trust.server_name.clone(),
        tls: Arc::new(tls),
    };
    // A loopback port for clients that cannot dial a Unix socket (Triton's HTTP client).
    let forwarder = if tcp {
        Forwarder::start_tcp(rt.handle(), upstream, protocol)
    } else {
        Forwarder::start(rt.handle(), upstream, protocol)
    }
    .map_err(|e| PyOSError::new_err(format!("cannot start the local forwarder: {e}")))?;
    Ok(AttestedForwarder {
        socket_path: forwarder.path().to_string_lossy().into_owned(),
        tcp_address: forwarder.tcp_addr().map(|a| a.to_string()),
        forwarder: Mutex::new(forwarder),
        verdict_json: serde_json::to_string(&attested.verdict)
            .map_err(|e| value_error("verdict", e))?,
        document_json: serde_json::to_string(&attested.doc)
            .map_err(|e| value_error("document", e))?,
        attestation_document: {
            let doc = receipt_doc.unwrap_or(attested.doc_json);
            let sha = sha256(&doc);
            (doc, sha)
        },
        later_documents: Mutex::new(std::collections::VecDeque::new()),
        certificate: attested.cert,
        accept_header,
        later: receipts.then_some(trust),
    })
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("Refusal", m.py().get_type::<RefusalError>())?;
    m.add_function(wrap_pyfunction!(verify_quote, m)?)?;
    m.add_function(wrap_pyfunction!(clear_cache, m)?)?;
    m.add_function(wrap_pyfunction!(parse_time, m)?)?;
    m.add_function(wrap_pyfunction!(attest, m)?)?;
    m.add_function(wrap_pyfunction!(receipt::verify_receipt, m)?)?;
    m.add_class::<AttestedForwarder>()?;
    Ok(())
}
