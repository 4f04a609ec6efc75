//! tract on a graph that cannot be typed with a symbolic batch: the pattern tf2onnx emits for a
//! Keras `Flatten` (the Reshape's target shape is computed from the input's own shape, through
//! casts), as found by the exporters' corpus (bench/corpus.sh). The model has to load, and
//! answer every batch size, on plans made for the concrete shapes requests send.
mod onnx_graph;

use onnx_graph::{int_attr, ints, model, node, value};
use prost::Message;
use std::sync::Arc;
use teeserve_serving::engine::{Engine, LoadedModel, TractEngine};
use teeserve_tensor::{Data, Tensor};
use tract_onnx::pb::{tensor_proto::DataType, GraphProto, ModelProto};

/// x: float [N, 2, 4] -> y: float [N, 8], flattened the way tf2onnx writes a Keras Flatten.
fn flatten_model() -> Vec<u8> {
    let graph = GraphProto {
        name: "flatten".into(),
        node: vec![
            node("Shape", &["x"], "shape", vec![]),
            node(
                "Gather",
                &["shape", "zero"],
                "batch",
                vec![int_attr("axis", 0)],
            ),
            node(
                "Cast",
                &["batch"],
                "batch32",
                vec![int_attr("to", DataType::Int32 as i64)],
            ),
            node(
                "Slice",
                &["batch32", "start", "end", "axis0"],
                "sliced",
                vec![],
            ),
            node(
                "Concat",
                &["sliced", "rest"],
                "target32",
                vec![int_attr("axis", 0)],
            ),
            node(
                "Cast",
                &["target32"],
                "target",
                vec![int_attr("to", DataType::Int64 as i64)],
            ),
            node("Reshape", &["x", "target"], "y", vec![]),
        ],
        initializer: vec![
            ints("zero", DataType::Int64, &[0]),
            ints("start", DataType::Int64, &[0]),
            ints("end", DataType::Int64, &[1]),
            ints("axis0", DataType::Int64, &[0]),
            ints("rest", DataType::Int32, &[8]),
        ],
        input: vec![value("x", DataType::Float, &[None, Some(2), Some(4)])],
        output: vec![value("y", DataType::Float, &[None, Some(8)])],
        ..Default::default()
    };
    model(graph)
}

#[test]
fn a_graph_typed_only_with_concrete_shapes_loads_and_answers_every_batch_size() {
    let model: Arc<dyn LoadedModel> = TractEngine.load(&flatten_model()).unwrap();
    // More batch sizes than the plans kept per model (4), so that the uncached path runs too.
    for n in 1..=6usize {
        let values: Vec<f32> = (0..n * 8).map(|i| i as f32 * 0.5).collect();
        let x = Tensor::new(vec![n, 2, 4], Data::F32(values.clone())).unwrap();
        let out = model.run("", vec![x]).unwrap();
        assert_eq!(out[0].shape, vec![n, 8], "batch {n}");
        assert_eq!(out[0].data, Data::F32(values), "batch {n}");
    }
}

#[test]
fn an_operator_tract_lacks_is_a_load_error_that_names_it_and_another_engine() {
    let mut m = ModelProto::decode(&flatten_model()[..]).unwrap();
    let g = m.graph.as_mut().unwrap();
    g.node[6].op_type = "NoSuchOperator".into();
    let e = TractEngine
        .load(&m.encode_to_vec())
        .unwrap_err()
        .to_string();
    assert!(e.contains("NoSuchOperator"), "{e}");
    assert!(e.contains("ONNX Runtime engine may run it"), "{e}");
}
