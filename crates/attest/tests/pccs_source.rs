//! The PCCS collateral source against a loopback PCCS that counts its requests: a quote whose
//! PCK certificate does not chain to the pinned root costs no request, and a failure is
//! remembered for a while instead of being fetched again for every quote.
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use teeserve_attest::collateral::pccs::{percent_encode, PccsClient};
use teeserve_attest::sim::{self, SimOptions, SimPlatform};
use teeserve_attest::source::DEFAULT_FAILURE_TTL_SECS;
use teeserve_attest::{
    Collateral, CollateralSource, SourceError, TrustAnchor, Verifier, VerifyError,
};

/// Serves `c` through the v4 API (or answers every request with 503 when `c` is None); returns
/// the base URL and the number of requests received.
fn pccs(c: Option<Collateral>) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
            }
            seen.fetch_add(1, Ordering::SeqCst);
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let (status, header, body): (u16, Option<(&str, String)>, Vec<u8>) = match &c {
                None => (503, None, b"down".to_vec()),
                Some(c) if path.contains("/pckcrl?") => (
                    200,
                    Some((
                        "SGX-PCK-CRL-Issuer-Chain",
                        percent_encode(&c.pck_crl_issuer_chain),
                    )),
                    c.pck_crl.clone(),
                ),
                Some(c) if path.ends_with("/rootcacrl") => {
                    (200, None, hex::encode(&c.root_ca_crl).into_bytes())
                }
                Some(c) if path.contains("/tcb?fmspc=") => (
                    200,
                    Some((
                        "TCB-Info-Issuer-Chain",
                        percent_encode(&c.tcb_info_issuer_chain),
                    )),
                    format!(
                        "{{\"tcbInfo\":{},\"signature\":\"{}\"}}",
                        c.tcb_info,
                        hex::encode(&c.tcb_info_signature)
                    )
                    .into_bytes(),
                ),
                Some(c) if path.ends_with("/qe/identity") => (
                    200,
                    Some((
                        "SGX-Enclave-Identity-Issuer-Chain",
                        percent_encode(&c.qe_identity_issuer_chain),
                    )),
                    format!(
                        "{{\"enclaveIdentity\":{},\"signature\":\"{}\"}}",
                        c.qe_identity,
                        hex::encode(&c.qe_identity_signature)
                    )
                    .into_bytes(),
                ),
                Some(_) => (404, None, b"not found".to_vec()),
            };
            let mut head = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            if let Some((k, v)) = header {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    (
        format!("http://127.0.0.1:{port}/sgx/certification/v4/"),
        count,
    )
}

fn platform(dir: &Path) -> (SimPlatform, Verifier, Collateral) {
    sim::init(dir, &SimOptions::default()).unwrap();
    let p = SimPlatform::open(dir, [3; 32]).unwrap();
    let anchor = TrustAnchor::from_pem(&std::fs::read(dir.join("root.pem")).unwrap()).unwrap();
    let c = Collateral::from_json(&std::fs::read(dir.join("collateral.json")).unwrap()).unwrap();
    (p, Verifier::new(anchor), c)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[test]
fn a_pck_chain_to_another_root_costs_no_pccs_request() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, verifier, collateral) = platform(&tmp.path().join("trusted"));
    // Another platform, with its own root: its PCK certificate names whatever FMSPC it likes.
    let (stranger, _, _) = platform(&tmp.path().join("stranger"));
    let (url, requests) = pccs(Some(collateral));
    let source = CollateralSource::pccs(PccsClient::new(&url, None).unwrap());
    let quote = stranger.quote(&[1; 64]).unwrap();
    let err = source.verify(&verifier, &quote, now()).unwrap_err();
    assert!(
        matches!(err, SourceError::Verify(VerifyError::UntrustedRoot { .. })),
        "{err}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 0, "the PCCS was asked");
}

#[test]
fn a_failed_fetch_is_remembered_for_a_while() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, verifier, _) = platform(&tmp.path().join("sim"));
    let (url, requests) = pccs(None);
    let source = CollateralSource::pccs(PccsClient::new(&url, None).unwrap());
    let quote = p.quote(&[1; 64]).unwrap();
    let at = now();
    let first = source.verify(&verifier, &quote, at).unwrap_err();
    assert!(first.to_string().contains("HTTP 503"), "{first}");
    let asked = requests.load(Ordering::SeqCst);
    assert!(asked >= 1);
    for _ in 0..5 {
        let again = source.verify(&verifier, &quote, at + 1).unwrap_err();
        assert_eq!(again.to_string(), first.to_string());
    }
    assert_eq!(requests.load(Ordering::SeqCst), asked, "fetched again");
    // Once the failure's time is up, the PCCS is asked again.
    let _ = source.verify(&verifier, &quote, at + DEFAULT_FAILURE_TTL_SECS + 1);
    assert!(requests.load(Ordering::SeqCst) > asked);
}

#[test]
fn good_collateral_is_fetched_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, verifier, collateral) = platform(&tmp.path().join("sim"));
    let (url, requests) = pccs(Some(collateral));
    let source = CollateralSource::pccs(PccsClient::new(&url, None).unwrap());
    let at = now();
    for i in 0..3u8 {
        let v = source
            .verify(&verifier, &p.quote(&[i; 64]).unwrap(), at)
            .unwrap();
        assert_eq!(v.report_data, hex::encode([i; 64]));
    }
    assert_eq!(requests.load(Ordering::SeqCst), 4);
}
