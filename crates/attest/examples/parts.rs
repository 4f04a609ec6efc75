//! Where the time of a cold verification goes (release build):
//!     cargo run --release -p teeserve-attest --example parts
use std::time::Instant;
use teeserve_attest::collateral::{EnclaveIdentity, TcbInfo};
use teeserve_attest::x509::{Cert, Crl};
use teeserve_attest::{Collateral, Quote, Verifier};

fn time<T>(what: &str, n: u32, mut f: impl FnMut() -> T) {
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(f());
    }
    println!(
        "{what:40} {:8.1} us",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}

fn main() {
    // `vectors()` says on stderr where it looked.
    let Some(vectors) = teeserve_testkit::vectors() else {
        eprintln!("error: this example times the real vector dcap/sgx-v3-dcapqvl; set TEESERVE_VECTORS to the vectors folder");
        std::process::exit(1);
    };
    let d = vectors.join("dcap");
    let q = std::fs::read(d.join("sgx-v3-dcapqvl.quote")).unwrap();
    let c =
        Collateral::from_json(&std::fs::read(d.join("sgx-v3-dcapqvl.collateral.json")).unwrap())
            .unwrap();
    let n = 2000;
    time("Quote::parse", n, || Quote::parse(&q).unwrap());
    time("TcbInfo::parse", n, || TcbInfo::parse(&c.tcb_info).unwrap());
    time("EnclaveIdentity::parse", n, || {
        EnclaveIdentity::parse(&c.qe_identity).unwrap()
    });
    time("Crl::parse root", n, || Crl::parse(&c.root_ca_crl).unwrap());
    time("Crl::parse pck", n, || Crl::parse(&c.pck_crl).unwrap());
    time("chain_from_pem tcb (2)", n, || {
        Cert::chain_from_pem(c.tcb_info_issuer_chain.as_bytes()).unwrap()
    });
    let p = Quote::parse(&q).unwrap();
    time("chain_from_pem quote (3)", n, || {
        Cert::chain_from_pem(&p.pck_chain_pem).unwrap()
    });
    let chain = Cert::chain_from_pem(&p.pck_chain_pem).unwrap();
    time("cert verify_by", n, || chain[0].verify_by(&chain[1]));
    let v = Verifier::default();
    time("prepare_untimed", n, || v.prepare_untimed(&c).unwrap());
    let pr = v.prepare(&c, 1751000000).unwrap();
    time("verify_prepared (warm)", n, || {
        v.verify_prepared(&q, &pr, 1751000000).unwrap()
    });
    time("verify (cold)", n, || v.verify(&q, &c, 1751000000).unwrap());
}
