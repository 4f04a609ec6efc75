//! The tract engine in process: plans specialised to request shapes give the same outputs as
//! the general plan, for more distinct shapes than it keeps plans for.
use teeserve_serving::engine::{Engine, TractEngine};
use teeserve_serving::tensor::{self, Data};

fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn npy(path: &str) -> tensor::Tensor {
    tensor::from_npy(&std::fs::read(repo().join(path)).unwrap()).unwrap()
}

#[test]
fn every_batch_size_matches_onnxruntime() {
    let model = TractEngine
        .load(&std::fs::read(repo().join("models/digits/1/model.onnx")).unwrap())
        .unwrap();
    let pixels = npy("testdata/digits/heldout-pixels.npy");
    let Data::F32(want) = npy("testdata/digits/heldout-probabilities-onnxruntime.npy").data else {
        panic!("reference is not float32");
    };
    // Sizes 1..=9 twice: the first four get specialised plans, the rest the general one.
    for round in 0..2 {
        for rows in 1..=9 {
            let out = model.run("", vec![pixels.slice_rows(0, rows)]).unwrap();
            let probs = out
                .iter()
                .find_map(|t| match &t.data {
                    Data::F32(v) if t.shape == [rows, 10] => Some(v.clone()),
                    _ => None,
                })
                .expect("a [rows, 10] float output");
            let worst = probs
                .iter()
                .zip(&want[..rows * 10])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-4, "round {round}, {rows} rows: off by {worst}");
        }
    }
}
