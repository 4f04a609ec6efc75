//! The shared real vectors (`dcap/` of the vectors folder). A test gets the folder from
//! `teeserve_testkit::require_vectors!()`, which skips the test when it is absent.
#![allow(dead_code)]
use std::path::Path;

/// The quote of vector `name`.
pub fn quote(vectors: &Path, name: &str) -> Vec<u8> {
    std::fs::read(vectors.join("dcap").join(format!("{name}.quote"))).unwrap()
}

/// The collateral bundle of vector `name`, as its JSON bytes.
pub fn collateral_json(vectors: &Path, name: &str) -> Vec<u8> {
    std::fs::read(vectors.join("dcap").join(format!("{name}.collateral.json"))).unwrap()
}

/// The collateral bundle of vector `name`.
pub fn collateral(vectors: &Path, name: &str) -> teeserve_attest::Collateral {
    teeserve_attest::Collateral::from_json(&collateral_json(vectors, name)).unwrap()
}
