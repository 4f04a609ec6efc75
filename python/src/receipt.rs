//! Receipts from Python: the attestation document a server's receipts name, kept when the
//! channel or session is made, and `verify_receipt`, which checks a receipt as
//! `teeserve receipt verify` does ([`teeserve_client::check_receipt`]) and returns the same
//! verdict.

use pyo3::prelude::*;

use teeserve_attest::{CollateralSource, Policy};
use teeserve_client::{check_receipt, FetchedAttestation, Refusal};
use teeserve_ratls::{Appraiser, AttestationDoc};

use crate::{anchor_from, policy_from, prepared_for, refusal, value_error};

/// Verifies a receipt against the attestation document that carries its key (`document`, its
/// JSON; `certificate`, the DER certificate whose key the document binds), a policy and the
/// request and response bytes: the document's quote and the policy at the receipt's time, the
/// receipt's signature, the hashes, and that the document lists the model. Returns the verdict
/// as JSON text, the same as `teeserve receipt verify` prints; raises `Refusal` naming the rule.
#[pyfunction]
#[pyo3(signature = (receipt, request, response, document, certificate, policy_kind, policy_text, root_pem=None, collateral=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn verify_receipt(
    py: Python<'_>,
    receipt: Vec<u8>,
    request: Vec<u8>,
    response: Vec<u8>,
    document: Vec<u8>,
    certificate: Vec<u8>,
    policy_kind: &str,
    policy_text: &str,
    root_pem: Option<Vec<u8>>,
    collateral: Option<Vec<u8>>,
) -> PyResult<String> {
    let policy = policy_from(policy_kind, policy_text)?;
    let anchor = anchor_from(root_pem.as_deref())?;
    let checked = py
        .detach(move || -> Result<_, Refusal> {
            let doc: AttestationDoc = serde_json::from_slice(&document)
                .map_err(|e| Refusal::new("document", format!("the attestation document: {e}")))?;
            let bundle = match (collateral, &doc.collateral) {
                (Some(c), _) => c,
                (None, Some(c)) => c.to_string().into_bytes(),
                (None, None) => {
                    return Err(Refusal::new(
                        "collateral",
                        "no collateral: the attestation document carries none; give collateral",
                    ))
                }
            };
            let (verifier, prepared) = prepared_for(anchor, &bundle)?;
            let appraiser = Appraiser::new(verifier, CollateralSource::Bundle(prepared));
            let attested = FetchedAttestation {
                doc,
                cert: certificate,
            };
            check(
                &appraiser, &policy, &attested, &document, &receipt, &request, &response,
            )
        })
        .map_err(refusal)?;
    serde_json::to_string(&checked).map_err(|e| value_error("verdict", e))
}

/// [`check_receipt`], and its verdict in the fields `teeserve receipt verify` prints.
fn check(
    appraiser: &Appraiser,
    policy: &Policy,
    attested: &FetchedAttestation,
    doc_json: &[u8],
    receipt: &[u8],
    request: &[u8],
    response: &[u8],
) -> Result<serde_json::Value, Refusal> {
    Ok(check_receipt(
        appraiser, policy, attested, doc_json, receipt, request, response,
    )?
    .to_json())
}
