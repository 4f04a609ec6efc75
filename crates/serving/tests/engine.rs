//! The ONNX engines in process: tract's plans specialised to request shapes give the same
//! outputs as the general plan, for more distinct shapes than it keeps plans for; 16-bit float
//! tensors go in and out of tract and ONNX Runtime.
mod onnx_graph;

use teeserve_serving::engine::{Engine, TractEngine};
use teeserve_tensor::{self as tensor, Data};

fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn npy(path: &str) -> tensor::Tensor {
    tensor::from_npy(&std::fs::read(repo().join(path)).unwrap()).unwrap()
}

/// The digits model on tract, the held-out rows, and onnxruntime's probabilities for them.
struct Digits {
    model: std::sync::Arc<dyn teeserve_serving::engine::LoadedModel>,
    pixels: tensor::Tensor,
    want: Vec<f32>,
}

fn digits() -> Digits {
    let model = TractEngine
        .load(&std::fs::read(repo().join("models/digits/1/model.onnx")).unwrap())
        .unwrap();
    let Data::F32(want) = npy("testdata/digits/heldout-probabilities-onnxruntime.npy").data else {
        panic!("reference is not float32");
    };
    Digits {
        model,
        pixels: npy("testdata/digits/heldout-pixels.npy"),
        want,
    }
}

impl Digits {
    /// The largest difference from the reference of the probabilities the model gives for rows
    /// `start..start + n`.
    fn worst_error(&self, start: usize, n: usize) -> f32 {
        let out = self
            .model
            .run("", vec![self.pixels.slice_rows(start, start + n)])
            .unwrap();
        let probs = out
            .iter()
            .find_map(|t| match &t.data {
                Data::F32(v) if t.shape == [n, 10] => Some(v),
                _ => None,
            })
            .expect("a [rows, 10] float output");
        probs
            .iter()
            .zip(&self.want[start * 10..(start + n) * 10])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
    }
}

#[test]
fn every_batch_size_matches_onnxruntime() {
    let _alone = alone();
    let digits = digits();
    // Sizes 1..=9 twice: the first four get specialised plans, the rest the general one.
    for round in 0..2 {
        for rows in 1..=9 {
            let worst = digits.worst_error(0, rows);
            assert!(worst < 1e-4, "round {round}, {rows} rows: off by {worst}");
        }
    }
}

/// tract keeps run states between inferences: every inference, on any thread, in any order, at
/// any batch size and after runs that failed, still gets the answer for its own rows and nothing
/// of another's.
#[test]
fn kept_run_states_answer_every_inference_with_its_own_rows() {
    let _alone = alone();
    let digits = digits();
    let rows = digits.pixels.shape[0];
    std::thread::scope(|s| {
        for thread in 0..4 {
            let digits = &digits;
            s.spawn(move || {
                for i in 0..300 {
                    if i % 25 == 24 {
                        // A run that fails (rows one pixel short) leaves nothing behind either.
                        let short = tensor::Tensor {
                            shape: vec![1, 63],
                            data: Data::F32(vec![1.0; 63]),
                        };
                        assert!(digits.model.run("", vec![short]).is_err());
                        continue;
                    }
                    // Each thread walks the rows in its own order, one to three rows at a time.
                    let start = (i * 7 + thread * 13) % (rows - 3);
                    let n = 1 + (i + thread) % 3;
                    let worst = digits.worst_error(start, n);
                    assert!(
                        worst < 1e-4,
                        "thread {thread}, rows {start}..+{n}: off by {worst}"
                    );
                }
            });
        }
    });
}

/// ONNX Runtime from `TEESERVE_ONNXRUNTIME_LIB` for two workers, with `intra_op_threads`
/// threads per inference (0: the default); None (or a failure where it is required) without it.
fn onnx_runtime(intra_op_threads: usize) -> Option<std::sync::Arc<dyn Engine>> {
    let Some(lib) = std::env::var_os("TEESERVE_ONNXRUNTIME_LIB") else {
        return teeserve_testkit::absent(
            "no libonnxruntime (set TEESERVE_ONNXRUNTIME_LIB)",
            "TEESERVE_REQUIRE_ONNXRUNTIME",
        );
    };
    let choice = teeserve_serving::engine::EngineChoice::OnnxRuntime {
        lib: lib.into(),
        intra_op_threads,
    };
    Some(choice.start(2).unwrap())
}

/// x: `elem` [N, 2] -> y = x + x (`op` Add) or y = x (`op` Identity), a graph of one node in
/// `elem` (ONNX's TensorProto.DataType).
fn one_node_model(elem: tract_onnx::pb::tensor_proto::DataType, op: &str) -> Vec<u8> {
    let inputs: &[&str] = if op == "Add" { &["x", "x"] } else { &["x"] };
    onnx_graph::model(tract_onnx::pb::GraphProto {
        name: "double".into(),
        node: vec![onnx_graph::node(op, inputs, "y", Vec::new())],
        input: vec![onnx_graph::value("x", elem, &[None, Some(2)])],
        output: vec![onnx_graph::value("y", elem, &[None, Some(2)])],
        ..Default::default()
    })
}

#[test]
fn half_precision_tensors_go_in_and_out_of_tract_and_onnx_runtime() {
    let _alone = alone();
    use tract_onnx::pb::tensor_proto::DataType as Onnx;
    let h = |v: &[f32]| Data::F16(v.iter().map(|&x| half::f16::from_f32(x)).collect());
    let x = tensor::Tensor::new(vec![2, 2], h(&[1.5, -0.25, 100.0, 0.0])).unwrap();
    let want = h(&[3.0, -0.5, 200.0, 0.0]);
    let model = TractEngine
        .load(&one_node_model(Onnx::Float16, "Add"))
        .unwrap();
    assert_eq!(
        model.signatures().get("").unwrap().inputs[0].dtype,
        tensor::DType::F16
    );
    let out = model.run("", vec![x.clone()]).unwrap();
    assert_eq!(
        (out[0].shape.as_slice(), &out[0].data),
        (&[2usize, 2][..], &want)
    );

    // ONNX Runtime: half, and bfloat16 (which its CPU kernels only move, not add).
    let Some(ort) = onnx_runtime(0) else {
        return;
    };
    let out = ort
        .load(&one_node_model(Onnx::Float16, "Add"))
        .unwrap()
        .run("", vec![x])
        .unwrap();
    assert_eq!(out[0].data, want);
    let b = |v: &[f32]| Data::BF16(v.iter().map(|&x| half::bf16::from_f32(x)).collect());
    let x = tensor::Tensor::new(vec![1, 2], b(&[1.5, -3.0])).unwrap();
    let model = ort
        .load(&one_node_model(Onnx::Bfloat16, "Identity"))
        .unwrap();
    assert_eq!(
        model.signatures().get("").unwrap().inputs[0].dtype,
        tensor::DType::BF16
    );
    let out = model.run("", vec![x]).unwrap();
    assert_eq!(out[0].data, b(&[1.5, -3.0]));
}

/// x: float [1024, 1024] -> y = x·x·x·x·x·x·x·x (seven MatMuls, each 1024³ multiply-adds): an
/// inference long enough (a second or so on one core) to see whether two overlap.
fn slow_model() -> Vec<u8> {
    use tract_onnx::pb::tensor_proto::DataType as Onnx;
    let mut nodes = Vec::new();
    let mut prev = "x".to_owned();
    for i in 1..=7 {
        let out = if i == 7 {
            "y".to_owned()
        } else {
            format!("m{i}")
        };
        nodes.push(onnx_graph::node("MatMul", &[&prev, "x"], &out, Vec::new()));
        prev = out;
    }
    onnx_graph::model(tract_onnx::pb::GraphProto {
        name: "slow".into(),
        node: nodes,
        input: vec![onnx_graph::value(
            "x",
            Onnx::Float,
            &[Some(1024), Some(1024)],
        )],
        output: vec![onnx_graph::value(
            "y",
            Onnx::Float,
            &[Some(1024), Some(1024)],
        )],
        ..Default::default()
    })
}

/// Two inferences of one model started together, against one inference alone (the faster of
/// two, just before): when they take turns, the second ends a whole inference after the first;
/// when they run at once, they end together (whether each has a core or they share one).
/// Passes when any of ten tries ends the two less than half an inference alone apart; taking
/// turns would need the second turn twice as fast as the faster lone run. The tests of this
/// file run one at a time ([`ALONE`]), so that another test's work does not take a core.
fn two_inferences_overlap(model: std::sync::Arc<dyn teeserve_serving::engine::LoadedModel>) {
    // x = 1/1024 everywhere: x·x = x, so the values stay put.
    let n = 1024;
    let x = tensor::Tensor::new(vec![n, n], Data::F32(vec![1.0 / n as f32; n * n])).unwrap();
    let out = model.run("", vec![x.clone()]).unwrap();
    let Data::F32(y) = &out[0].data else {
        panic!("float output")
    };
    assert!((y[0] - 1.0 / n as f32).abs() < 1e-6, "{}", y[0]);
    let mut tries = Vec::new();
    // Ten tries: on a machine whose other tenants take a core for a while, several tries in a
    // row can find one core for the two.
    for _ in 0..10 {
        let alone = (0..2)
            .map(|_| {
                let t = std::time::Instant::now();
                model.run("", vec![x.clone()]).unwrap();
                t.elapsed()
            })
            .min()
            .unwrap_or_default();
        let barrier = std::sync::Barrier::new(2);
        let start = std::time::Instant::now();
        let ends: Vec<std::time::Duration> = std::thread::scope(|s| {
            let runs: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        model.run("", vec![x.clone()]).unwrap();
                        start.elapsed()
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let (first, last) = (ends[0].min(ends[1]), ends[0].max(ends[1]));
        if (last - first).as_secs_f64() < 0.5 * alone.as_secs_f64() {
            return;
        }
        tries.push((alone, first, last));
    }
    panic!(
        "the two inferences took turns (one alone, then the two ends at once, each try): {tries:?}"
    );
}

/// A model whose inferences take turns (as ONNX Runtime's did behind a lock): the check above
/// must fail on it.
#[derive(Debug)]
struct TakingTurns(
    std::sync::Arc<dyn teeserve_serving::engine::LoadedModel>,
    std::sync::Mutex<()>,
);

impl teeserve_serving::engine::LoadedModel for TakingTurns {
    fn signatures(&self) -> &tensor::Signatures {
        self.0.signatures()
    }
    fn engine(&self) -> &'static str {
        self.0.engine()
    }
    fn run_within(
        &self,
        signature: &str,
        inputs: Vec<tensor::Tensor>,
        max_output_bytes: usize,
    ) -> Result<Vec<tensor::Tensor>, teeserve_serving::engine::EngineError> {
        let _turn = self.1.lock().unwrap();
        self.0.run_within(signature, inputs, max_output_bytes)
    }
    fn cost(&self) -> &teeserve_serving::engine::RunCost {
        self.0.cost()
    }
}

/// Held by each test of this file while it runs: they run one at a time.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn concurrent_inferences_of_one_model_run_at_once_on_every_engine() {
    let _alone = alone();
    let tract = TractEngine.load(&slow_model()).unwrap();
    let turns = std::sync::Arc::new(TakingTurns(tract.clone(), Default::default()));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        two_inferences_overlap(turns)
    }));
    assert!(
        caught.is_err(),
        "the check passed inferences that took turns"
    );
    two_inferences_overlap(tract);
    // One thread per inference, the two on one session.
    let Some(ort) = onnx_runtime(1) else {
        return;
    };
    two_inferences_overlap(ort.load(&slow_model()).unwrap());
}

/// [`slow_model`] with its weights in the model: x: float [1024, 1024] -> y = x·W·W·W·W·W·W·W
/// · s + b, W (4 MiB, every element 1/1024), b (4 KiB of zeros) and s (one 1) initializers. For
/// x = 1/1024 everywhere, y = x.
fn slow_model_with_weights() -> Vec<u8> {
    use tract_onnx::pb::tensor_proto::DataType as Onnx;
    let floats = |name: &str, dims: &[i64], v: f32| {
        let n: i64 = dims.iter().product();
        tract_onnx::pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: Onnx::Float as i32,
            raw_data: (0..n).flat_map(|_| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    };
    let mut nodes = Vec::new();
    let mut prev = "x".to_owned();
    for i in 1..=7 {
        let out = format!("m{i}");
        nodes.push(onnx_graph::node("MatMul", &[&prev, "w"], &out, Vec::new()));
        prev = out;
    }
    nodes.push(onnx_graph::node("Mul", &[&prev, "s"], "scaled", Vec::new()));
    nodes.push(onnx_graph::node("Add", &["scaled", "b"], "y", Vec::new()));
    let square = [Some(1024), Some(1024)];
    onnx_graph::model(tract_onnx::pb::GraphProto {
        name: "slow-weights".into(),
        node: nodes,
        initializer: vec![
            floats("w", &[1024, 1024], 1.0 / 1024.0),
            floats("b", &[1024], 0.0),
            floats("s", &[1], 1.0),
        ],
        input: vec![onnx_graph::value("x", Onnx::Float, &square)],
        output: vec![onnx_graph::value("y", Onnx::Float, &square)],
        ..Default::default()
    })
}

/// The inferences a two-session ONNX Runtime model says it ran (alone, beside others), from
/// its description; `None` for a model of one session.
fn alone_and_beside(model: &dyn teeserve_serving::engine::LoadedModel) -> Option<(u64, u64)> {
    let d = format!("{model:?}");
    let count = |after: &str| -> Option<u64> {
        let rest = d.split(after).nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    };
    let alone = count("weights: ")?;
    let beside = count(" inferences alone, ")?;
    Some((alone, beside))
}

#[test]
fn onnx_runtime_gives_an_inference_its_threads_by_the_load_over_one_copy_of_the_weights() {
    let _alone = alone();
    // The default (0): every worker's thread for an inference alone, one beside others.
    let Some(ort) = onnx_runtime(0) else {
        return;
    };
    // The model as ONNX Runtime optimised it goes to anonymous memory files: no file appears
    // where ONNX Runtime resolves a relative path (the working directory; a model loaded from
    // memory has no directory of its own). The temporary directory is not watched: other
    // processes write there.
    let listing = || -> Vec<std::path::PathBuf> {
        let mut l: Vec<_> = std::fs::read_dir(std::env::current_dir().unwrap())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        l.sort();
        l
    };
    let before = listing();
    let model = ort.load(&slow_model_with_weights()).unwrap();
    assert_eq!(listing(), before, "a file appeared while the model loaded");
    let d = format!("{model:?}");
    assert!(d.contains("two sessions over one copy of"), "{d}");
    assert!(
        !d.contains("copy of 0 weights"),
        "the weights stayed in the sessions: {d}"
    );
    assert_eq!(model.signatures().get("").unwrap().inputs.len(), 1, "{d}");
    let n = 1024;
    let x = tensor::Tensor::new(vec![n, n], Data::F32(vec![1.0 / n as f32; n * n])).unwrap();
    let out = model.run("", vec![x]).unwrap();
    let Data::F32(y) = &out[0].data else {
        panic!("float output")
    };
    assert!(
        y.iter().all(|v| (v - 1.0 / n as f32).abs() < 1e-6),
        "{:?}",
        &y[..4]
    );
    assert_eq!(alone_and_beside(&*model), Some((1, 0)), "{model:?}");
    // Two at once run at once, and the one that starts beside the other takes one thread.
    two_inferences_overlap(model.clone());
    let (_, beside) = alone_and_beside(&*model).unwrap();
    assert!(beside >= 1, "no inference ran beside another: {model:?}");

    // A fixed thread count keeps one session.
    let Some(fixed) = onnx_runtime(2) else {
        return;
    };
    let model = fixed.load(&slow_model_with_weights()).unwrap();
    assert!(alone_and_beside(&*model).is_none(), "{model:?}");
    assert!(format!("{model:?}").contains("one session"), "{model:?}");
}
