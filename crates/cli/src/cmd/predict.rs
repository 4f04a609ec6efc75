//! `teeserve predict`: the requester. Sends an input to a TF Serving-compatible endpoint over
//! gRPC or REST with TLS, optionally after checking the server's attestation.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{json, Value};
use teeserve_attest::Collateral;
use teeserve_attest::Verdict;
use teeserve_client::requester::{
    input_tensors, read_input_file, top_classes, Connection, Prediction, RequestTarget,
};
use teeserve_client::{answered_by, attest_server, AttestOptions, NonceChoice};
use teeserve_ratls::AttestationDoc;

use super::attest::{anchor, load_policy};
use crate::util::{self, refuse};

/// Flags of `predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The server, HOST:PORT (gRPC port, or REST port with --rest).
    #[arg(long, value_name = "HOST:PORT")]
    pub server: String,
    /// Model name.
    #[arg(long)]
    pub model: String,
    /// Model version.
    #[arg(long, conflicts_with = "label")]
    pub version: Option<i64>,
    /// Version label.
    #[arg(long)]
    pub label: Option<String>,
    /// Signature name (default serving_default).
    #[arg(long)]
    pub signature: Option<String>,
    /// Input: a .npy array, or JSON (a nested list, or a TF Serving body with "instances" or
    /// "inputs"). A single array goes to the model's only input.
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Use the REST API instead of gRPC.
    #[arg(long)]
    pub rest: bool,
    /// CA certificate (PEM) that signs the server's TLS certificate.
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, value_name = "PEM", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(long, value_name = "PEM", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The name expected in the server's certificate (default: the host of --server).
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Before sending any data, check that the server's TLS key lives in a TEE this policy
    /// (TOML) admits: /v1/attestation (quoted over a fresh nonce when the key is one the host
    /// gave; a key made in the TEE or released by the broker needs none) must bind the TLS key, its
    /// origin (policy key `tls_key_origin`, default tee or broker) and the served model files
    /// (policy key `models = { NAME = ["<sha256>", ...] }`); an RA-TLS certificate's own
    /// evidence is appraised too. Every connection must then present that same key.
    #[arg(long, value_name = "POLICY.toml")]
    pub attest: Option<PathBuf>,
    /// Root certificate to trust for attestation instead of the Intel SGX Root CA.
    #[arg(long, value_name = "PEM", requires = "attest")]
    pub root: Option<PathBuf>,
    /// Collateral bundle for attestation (default: the one the server publishes).
    #[arg(long, value_name = "FILE", requires = "attest")]
    pub collateral: Option<PathBuf>,
    /// Ask for the server's standing attestation document only, never a quote over a fresh
    /// random nonce, even for a key the host gave (for servers that cannot quote on request; a
    /// saved document can then be replayed by whoever holds the TLS key).
    #[arg(long = "no-nonce", requires = "attest", conflicts_with = "fresh_nonce")]
    pub no_nonce: bool,
    /// Always ask for a quote over a fresh random nonce, whatever the TLS key's origin.
    #[arg(long = "fresh-nonce", requires = "attest")]
    pub fresh_nonce: bool,
    /// Talk plaintext (no TLS).
    #[arg(long, conflicts_with_all = ["ca", "attest"])]
    pub insecure: bool,
    /// Ask for a receipt of the answer (signed inside the attested TEE by the key the attestation
    /// document carries) and write it to DIR with what `teeserve receipt verify` checks:
    /// receipt.cbor, request.bin, response.bin, attestation.json, certificate.der.
    #[arg(long, value_name = "DIR", requires = "attest")]
    pub receipt: Option<PathBuf>,
    /// Classes to show per row for classifier outputs.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
}

pub fn run(a: PredictArgs) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(a))
}

async fn run_async(a: PredictArgs) -> Result<i32> {
    let server_name = a
        .server_name
        .clone()
        .unwrap_or_else(|| teeserve_client::host_of(&a.server));
    let input = read_input_file(&a.input).map_err(anyhow::Error::msg)?;
    // The attestation is checked before anything is sent; the data connections then admit no
    // other TLS key than the attested one, on every handshake.
    let (tls, mut attested) = data_tls(&a, &server_name).await?;
    // The policy's pin for this model goes with every request, so that the attested server
    // answers from no other model file, whatever it serves by the time the request arrives.
    let accepted = match &a.attest {
        Some(p) => load_policy(p, "--attest")?
            .models
            .get(&a.model)
            .map(|d| d.iter().map(|x| x.as_str().to_owned()).collect())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let target = RequestTarget {
        model: a.model.clone(),
        version: a.version,
        label: a.label.clone(),
        signature: a.signature.clone(),
        accepted,
        receipt: a.receipt.is_some(),
    };
    let mut conn = Connection::open(&a.server, tls, &server_name, a.rest)
        .await
        .map_err(|e| refuse(format!("refusing to send data: {e}")))?;
    let sig = conn
        .signature(&target)
        .await
        .map_err(|e| anyhow::anyhow!("metadata of {}: {e}", a.model))?;
    let inputs = input_tensors(&sig, &input).map_err(anyhow::Error::msg)?;
    let p = conn.predict(&target, &inputs).await.map_err(refuse)?;
    let out = report(&a, &p, attested.as_ref())?;
    let mut unsaved = None;
    if let (Some(dir), Some((_, _, served))) = (&a.receipt, attested.as_mut()) {
        let r = p
            .receipt
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the server answered without a receipt"))?;
        // The receipt names the document standing when the answer was made: if the served
        // models changed after `served` was fetched, that is a later one, fetched by its
        // SHA-256 and admitted like the first (as of now).
        let doc = match served.later.take() {
            Some(o) => teeserve_client::document_of_receipt(
                &r.receipt,
                &served.doc_json,
                &served.cert,
                AttestOptions {
                    at: util::now(),
                    ..o
                },
            )
            .await
            .map_err(|e| e.message),
            None => Ok(served.doc_json.clone()),
        };
        // The receipt and what it is about are kept either way: its document can be fetched
        // later by its SHA-256 while the server keeps it.
        save_receipt(dir, r, doc.as_deref().ok(), &served.cert)?;
        unsaved = doc.err();
    }
    crate::util::say(serde_json::to_string_pretty(&out)?)?;
    if let Some(why) = unsaved {
        return Err(refuse(format!(
            "the receipt was saved without the attestation document it names: {why}"
        )));
    }
    Ok(0)
}

/// Writes what `teeserve receipt verify` checks: the receipt, the request and response it is
/// about, the attestation document that carries its key and the certificate that document binds.
fn save_receipt(
    dir: &std::path::Path,
    r: &teeserve_client::requester::Receipt,
    doc_json: Option<&[u8]>,
    cert: &[u8],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("--receipt {}", dir.display()))?;
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes)
            .with_context(|| format!("--receipt: {}", dir.join(name).display()))
    };
    write("receipt.cbor", &r.receipt)?;
    write("request.bin", &r.request)?;
    write("response.bin", &r.response)?;
    write("certificate.der", cert)?;
    match doc_json {
        Some(doc) => write("attestation.json", doc)?,
        // No document of an earlier receipt left beside this one.
        None => match std::fs::remove_file(dir.join("attestation.json")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("--receipt: {}", dir.display()))
            }
            _ => {}
        },
    }
    eprintln!("receipt written to {}", dir.display());
    Ok(())
}

/// The client certificate and key for mutual TLS, when given.
fn client_identity(a: &PredictArgs) -> Result<Option<ClientIdentity>> {
    Ok(match (&a.cert, &a.key) {
        (Some(c), Some(k)) => Some((
            teeserve_tls::certs_from_pem(&util::read(c)?)
                .map_err(|e| anyhow::anyhow!("--cert: {e}"))?,
            teeserve_tls::key_from_pem(&util::read(k)?)
                .map_err(|e| anyhow::anyhow!("--key: {e}"))?,
        )),
        _ => None,
    })
}

/// What a receipt is verified against: the attested certificate (DER) and the server's
/// standing attestation document as it served it, and (with `--receipt`) how to fetch and
/// admit another of its standing documents, when the receipt names a later one.
struct Served {
    cert: Vec<u8>,
    doc_json: Vec<u8>,
    later: Option<AttestOptions>,
}

type ClientIdentity = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

/// The TLS configuration of the data connections (None: plaintext), and what the attestation
/// check found when `--attest` was given.
async fn data_tls(
    a: &PredictArgs,
    server_name: &str,
) -> Result<(
    Option<Arc<rustls::ClientConfig>>,
    Option<(Verdict, AttestationDoc, Served)>,
)> {
    if a.insecure {
        return Ok((None, None));
    }
    let identity = client_identity(a)?;
    let alpn: &[&[u8]] = if a.rest { &[b"http/1.1"] } else { &[b"h2"] };
    let ca = match &a.ca {
        Some(ca) => Some(
            teeserve_client::ca_verifier(&util::read(ca)?)
                .map_err(|e| anyhow::anyhow!("--ca: {e}"))?,
        ),
        None => None,
    };
    let Some(policy_path) = &a.attest else {
        let ca = ca.ok_or_else(|| anyhow::anyhow!(
            "give --ca to verify the server's certificate, --attest to rely on its attestation, or --insecure"
        ))?;
        let cfg = teeserve_client::client_config(ca, identity, alpn).map_err(anyhow::Error::msg)?;
        return Ok((Some(Arc::new(cfg)), None));
    };
    let collateral = match &a.collateral {
        Some(p) => Some(Collateral::from_json(&util::read(p)?).context("collateral")?),
        None => None,
    };
    // Read once: the document quoted over a nonce and the standing one (for a receipt) are
    // appraised under the same policy and root.
    let (policy, root) = (
        load_policy(policy_path, "--attest")?,
        anchor(a.root.as_ref())?,
    );
    let options = |nonce| AttestOptions {
        addr: a.server.clone(),
        server_name: server_name.to_owned(),
        ca: ca.clone(),
        identity: identity.as_ref().map(|(c, k)| (c.clone(), k.clone_key())),
        policy: policy.clone(),
        anchor: root.clone(),
        collateral: collateral.clone(),
        at: util::now(),
        nonce,
    };
    // A receipt names the server's standing document, not one quoted over this requester's
    // nonce: with a receipt asked for, that one is fetched and admitted too.
    let standing = a.receipt.is_some().then(|| options(NonceChoice::Never));
    let later = a.receipt.is_some().then(|| options(NonceChoice::Never));
    let options = options(match (a.no_nonce, a.fresh_nonce) {
        (true, _) => NonceChoice::Never,
        (_, true) => NonceChoice::Always,
        _ => NonceChoice::ByKeyOrigin,
    });
    let policy_name = options.policy.name.clone();
    // Refused before any data is sent; the message says which rule.
    let attested = attest_server(options).await.map_err(|r| {
        let why = match r.rule {
            "fetch" | "nonce" | "collateral" => r.message,
            _ => format!("the server's attestation is not admitted: {}", r.message),
        };
        refuse(format!("refusing to send data: {why}"))
    })?;
    let v = &attested.verdict;
    eprintln!(
        "attested: {} {} (tcb {}), TLS key from {}, admitted by policy {policy_name:?}",
        v.tee,
        v.sgx
            .as_ref()
            .map(|s| format!("MRENCLAVE {}", s.mrenclave))
            .or_else(|| v.tdx.as_ref().map(|t| format!("MRTD {}", t.mrtd)))
            .unwrap_or_default(),
        v.tcb_status,
        attested.doc.key_origin,
    );
    let cfg = attested
        .client_config(ca, identity, alpn)
        .map_err(|r| anyhow::anyhow!(r.message))?;
    // The document as served: a receipt names the SHA-256 of those bytes (the standing one,
    // with the same certificate and receipt key as the one admitted).
    let doc_json = match standing {
        Some(o) => teeserve_client::receipt_document(&attested, o)
            .await
            .map_err(|r| refuse(format!("refusing to send data: {}", r.message)))?,
        None => attested.doc_json.clone(),
    };
    let served = Served {
        cert: attested.cert.clone(),
        doc_json,
        later,
    };
    Ok((
        Some(Arc::new(cfg)),
        Some((attested.verdict, attested.doc, served)),
    ))
}

/// The printed answer: outputs, top classes, and what the attestation said and which attested
/// model file answered. Refuses an answer from a version the attestation does not list.
fn report(
    a: &PredictArgs,
    p: &Prediction,
    attested: Option<&(Verdict, AttestationDoc, Served)>,
) -> Result<Value> {
    let mut out = json!({ "model": a.model, "outputs": p.outputs });
    if let Some(v) = p.version {
        out["version"] = json!(v);
    }
    let mut tops = serde_json::Map::new();
    for (name, v) in &p.outputs {
        if let Some(t) = top_classes(v, a.top) {
            tops.insert(
                name.clone(),
                json!(t
                    .iter()
                    .map(|row| row
                        .iter()
                        .map(|(c, s)| json!({"class": c, "score": s}))
                        .collect::<Vec<_>>())
                    .collect::<Vec<_>>()),
            );
        }
    }
    if !tops.is_empty() {
        out["top_classes"] = Value::Object(tops);
    }
    let Some((v, doc, _)) = attested else {
        return Ok(out);
    };
    out["attestation"] = json!({
        "tee": v.tee,
        "tcb_status": v.tcb_status,
        "sgx": v.sgx,
        "tdx": v.tdx,
        "tls_key_origin": doc.key_origin,
    });
    // Which attested model file answered, when the answer (or the request) says which
    // version it was.
    out["answered_by"] = match answered_by(doc, &a.model, p.version, a.version) {
        Some(m) => json!({"model": m.name, "version": m.version, "sha256": m.sha256}),
        None => json!({"model": a.model, "version": p.version, "sha256": null}),
    };
    if let Some(ver) = p.version {
        if !doc
            .models
            .iter()
            .any(|m| m.name == a.model && m.version == ver)
        {
            return Err(refuse(format!(
                "the answer came from {} version {ver}, which the attestation document does not list (loaded after it was made?); not trusting it",
                a.model
            )));
        }
    }
    Ok(out)
}
