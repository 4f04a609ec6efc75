//! A simulated TEE and what a verifier of its evidence needs, for the integration tests.
#![allow(dead_code)] // each test binary uses part of it

use std::path::Path;
use std::sync::Arc;

use teeserve_attest::platform::SimulatedPlatform;
use teeserve_attest::sim::{self, SimOptions, SimPlatform};
use teeserve_attest::CollateralSource;
use teeserve_attest::{Collateral, Policy, TrustAnchor, Verifier};
use teeserve_ratls::Appraiser;

/// The MRENCLAVE the simulated enclave reports.
pub const MRENCLAVE: [u8; 32] = [0x5a; 32];

/// A simulated platform in a temporary directory, and an appraiser that trusts its root and
/// holds its collateral.
pub struct Tee {
    _dir: tempfile::TempDir,
    pub platform: SimulatedPlatform,
    pub appraiser: Arc<Appraiser>,
}

/// A fresh simulated TEE.
pub fn tee() -> Tee {
    let dir = tempfile::tempdir().unwrap();
    let sim_dir = dir.path().join("sim");
    sim::init(&sim_dir, &SimOptions::default()).unwrap();
    Tee {
        platform: SimulatedPlatform(SimPlatform::open(&sim_dir, MRENCLAVE).unwrap()),
        appraiser: Arc::new(appraiser(&sim_dir)),
        _dir: dir,
    }
}

/// An appraiser trusting the root of the simulated platform in `dir`, with its collateral.
pub fn appraiser(dir: &Path) -> Appraiser {
    let root = std::fs::read(dir.join("root.pem")).unwrap();
    let verifier = Verifier::new(TrustAnchor::from_pem(&root).unwrap());
    let collateral =
        Collateral::from_json(&std::fs::read(dir.join("collateral.json")).unwrap()).unwrap();
    let source = CollateralSource::bundle(&verifier, &collateral).unwrap();
    Appraiser::new(verifier, source)
}

/// A policy that admits the simulated enclave (and only an enclave with `mrenclave`).
pub fn policy_for(mrenclave: [u8; 32]) -> Policy {
    let mut p = Policy {
        name: "test".into(),
        mrenclave: vec![hex::encode(mrenclave)],
        allow_simulated: true,
        ..Policy::default()
    };
    p.normalise().unwrap();
    p
}

/// The policy that admits [`MRENCLAVE`].
pub fn policy() -> Policy {
    policy_for(MRENCLAVE)
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
