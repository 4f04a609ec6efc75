#![allow(dead_code)]
use std::path::PathBuf;

/// The shared real test vectors (`shared/vectors` beside the repository).
pub fn vectors() -> PathBuf {
    if let Ok(p) = std::env::var("TEESERVE_VECTORS") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors");
    assert!(
        p.is_dir(),
        "test vectors not found at {} (set TEESERVE_VECTORS)",
        p.display()
    );
    p
}

pub fn quote(name: &str) -> Vec<u8> {
    std::fs::read(vectors().join("dcap").join(format!("{name}.quote"))).unwrap()
}

pub fn collateral(name: &str) -> teeserve_attest::Collateral {
    let b = std::fs::read(
        vectors()
            .join("dcap")
            .join(format!("{name}.collateral.json")),
    )
    .unwrap();
    teeserve_attest::Collateral::from_json(&b).unwrap()
}
