//! What a quote's report data binds. Every teeserve and Gramine binding has one shape:
//! SHA-256 of the bound bytes followed by 32 zero bytes ([`report_data_over`]). The bound bytes
//! are the certificate's DER SubjectPublicKeyInfo in Gramine's legacy extension
//! ([`key_report_data`]), the CBOR claims naming the key's hash in the TCG extension
//! ([`claims_for`]), and the canonical encoding of an attestation document
//! ([`crate::document::bind`]).

use crate::cbor;

pub(crate) fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
    out
}

/// The report-data shape shared by every teeserve and Gramine binding: SHA-256 of `bound`
/// followed by 32 zero bytes. Gramine's legacy RA-TLS extension binds the DER
/// SubjectPublicKeyInfo this way, its TCG extension the CBOR claims, and the attestation
/// document the canonical encoding of [`crate::document::bind`].
pub fn report_data_over(bound: &[u8]) -> [u8; 64] {
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(&sha256(bound));
    rd
}

/// The report data that binds a certificate's key in Gramine's legacy extension:
/// SHA-256(DER SubjectPublicKeyInfo) followed by 32 zero bytes (Gramine `ra_tls_attest.c`).
pub fn key_report_data(spki: &[u8]) -> [u8; 64] {
    report_data_over(spki)
}

/// The claims of the TCG extension, `{"pubkey-hash": bstr([1, bstr(sha256(spki))])}` (1 is
/// SHA-256 in the IANA Named Information hash algorithm registry); the quote binds
/// [`report_data_over`] of these bytes.
pub(crate) fn claims_for(spki: &[u8]) -> Vec<u8> {
    let mut entry = Vec::new();
    cbor::array(2, &mut entry);
    cbor::uint(1, &mut entry);
    cbor::bstr(&sha256(spki), &mut entry);
    let mut claims = Vec::new();
    cbor::map(1, &mut claims);
    cbor::tstr("pubkey-hash", &mut claims);
    cbor::bstr(&entry, &mut claims);
    claims
}
