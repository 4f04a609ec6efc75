//! The PCCS client against a loopback server that serves the vectors' collateral through the
//! v4 API exactly as a PCCS does: URL-encoded issuer chains in headers, DER PCK CRLs, the root CRL
//! as hex text, TDX TCB Info and QE identity under /tdx/.
mod harness;
use harness::*;
use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Serves one vector's collateral; returns the base URL and the log of request paths.
fn pccs(vectors: &std::path::Path, name: &str) -> (String, Arc<Mutex<Vec<String>>>) {
    let c: serde_json::Value = serde_json::from_slice(
        &std::fs::read(vectors.join("dcap").join(format!("{name}.collateral.json"))).unwrap(),
    )
    .unwrap();
    let tdx = name.starts_with("tdx");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    let name = name.to_owned();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut line = String::new();
            let mut r = BufReader::new(s.try_clone().unwrap());
            r.read_line(&mut line).unwrap();
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            log2.lock().unwrap().push(path.clone());
            let s_ = |k: &str| c[k].as_str().unwrap().to_owned();
            let tee = if tdx { "tdx" } else { "sgx" };
            let (status, headers, body): (u16, Vec<(String, String)>, Vec<u8>) = if path
                .starts_with("/sgx/certification/v4/pckcrl?ca=")
                && path.contains("encoding=der")
            {
                let ca_ok = path.contains(
                    if s_("pck_crl_issuer_chain").contains("Processor") || name == "sgx-v3-dcapqvl"
                    {
                        "ca=processor"
                    } else {
                        "ca=platform"
                    },
                );
                if ca_ok || name.contains("automata") {
                    (
                        200,
                        vec![(
                            "SGX-PCK-CRL-Issuer-Chain".into(),
                            encode(&s_("pck_crl_issuer_chain")),
                        )],
                        hex::decode(s_("pck_crl")).unwrap(),
                    )
                } else {
                    (404, vec![], b"wrong ca".to_vec())
                }
            } else if path == "/sgx/certification/v4/rootcacrl" {
                (200, vec![], s_("root_ca_crl").into_bytes())
            } else if path.starts_with(&format!("/{tee}/certification/v4/tcb?fmspc=")) {
                let body = format!(
                    "{{\"tcbInfo\":{},\"signature\":\"{}\"}}",
                    s_("tcb_info"),
                    s_("tcb_info_signature")
                );
                (
                    200,
                    vec![(
                        "TCB-Info-Issuer-Chain".into(),
                        encode(&s_("tcb_info_issuer_chain")),
                    )],
                    body.into_bytes(),
                )
            } else if path == format!("/{tee}/certification/v4/qe/identity") {
                let body = format!(
                    "{{\"enclaveIdentity\":{},\"signature\":\"{}\"}}",
                    s_("qe_identity"),
                    s_("qe_identity_signature")
                );
                (
                    200,
                    vec![(
                        "SGX-Enclave-Identity-Issuer-Chain".into(),
                        encode(&s_("qe_identity_issuer_chain")),
                    )],
                    body.into_bytes(),
                )
            } else {
                (404, vec![], b"not found".to_vec())
            };
            let mut resp = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                resp.push_str(&format!("{k}: {v}\r\n"));
            }
            resp.push_str("\r\n");
            let _ = s.write_all(resp.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    (
        format!("http://127.0.0.1:{port}/sgx/certification/v4/"),
        log,
    )
}

#[test]
fn verify_through_a_pccs() {
    let vectors = teeserve_testkit::require_vectors!();
    for (name, at) in [
        ("sgx-v3-dcapqvl", "1751000000"),
        ("tdx-v4-dcapqvl", "1751000000"),
    ] {
        let (url, log) = pccs(&vectors, name);
        let q = vectors.join("dcap").join(format!("{name}.quote"));
        let v = run(&[
            "attest",
            "verify",
            "--quote",
            s(&q),
            "--pccs",
            &url,
            "--at",
            at,
        ])
        .ok()
        .json();
        assert!(v["tcb_status"].is_string());
        let log = log.lock().unwrap().clone();
        let fmspc = v["fmspc"].as_str().unwrap();
        assert!(
            log.iter()
                .any(|p| p.contains(&format!("tcb?fmspc={fmspc}"))),
            "{log:?}"
        );
        if name.starts_with("tdx") {
            assert!(
                log.iter()
                    .any(|p| p.starts_with("/tdx/certification/v4/qe/identity")),
                "{log:?}"
            );
        }
    }
}

#[test]
fn fetch_writes_a_bundle_equal_to_the_source() {
    let vectors = teeserve_testkit::require_vectors!();
    let name = "sgx-v3-dcapqvl";
    let (url, _) = pccs(&vectors, name);
    let dir = tempfile::tempdir().unwrap();
    let q = vectors.join("dcap").join(format!("{name}.quote"));
    run_in(
        dir.path(),
        &[
            "collateral",
            "fetch",
            "--quote",
            s(&q),
            "--pccs",
            &url,
            "--out",
            "bundle.json",
        ],
    )
    .ok();
    let got: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("bundle.json")).unwrap()).unwrap();
    let want: serde_json::Value = serde_json::from_slice(
        &std::fs::read(vectors.join("dcap").join(format!("{name}.collateral.json"))).unwrap(),
    )
    .unwrap();
    for k in [
        "pck_crl_issuer_chain",
        "root_ca_crl",
        "pck_crl",
        "tcb_info_issuer_chain",
        "tcb_info",
        "tcb_info_signature",
        "qe_identity",
        "qe_identity_signature",
    ] {
        assert_eq!(got[k], want[k], "{k}");
    }
    run_in(
        dir.path(),
        &[
            "attest",
            "verify",
            "--quote",
            s(&q),
            "--collateral",
            "bundle.json",
            "--at",
            "1751000000",
        ],
    )
    .ok();
}

#[test]
fn an_unreachable_pccs_is_a_clear_error() {
    let vectors = teeserve_testkit::require_vectors!();
    let q = vectors.join("dcap").join("sgx-v3-dcapqvl.quote");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = run(&[
        "attest",
        "verify",
        "--quote",
        s(&q),
        "--pccs",
        &format!("http://127.0.0.1:{port}/sgx/certification/v4/"),
    ]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("PCCS") && r.stderr.contains("connect"),
        "{}",
        r.stderr
    );
}
