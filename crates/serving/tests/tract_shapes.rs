//! tract on a graph that cannot be typed with a symbolic batch: the pattern tf2onnx emits for a
//! Keras `Flatten` (the Reshape's target shape is computed from the input's own shape, through
//! casts), as found by the exporters' corpus (bench/corpus.sh). The model has to load, and
//! answer every batch size, on plans made for the concrete shapes requests send.
use prost::Message;
use std::sync::Arc;
use teeserve_serving::engine::{Engine, LoadedModel, TractEngine};
use teeserve_serving::tensor::{Data, Tensor};
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

fn value(name: &str, elem: DataType, dims: &[Option<i64>]) -> ValueInfoProto {
    use tensor_shape_proto::dimension::Value as D;
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| tensor_shape_proto::Dimension {
                            value: Some(match d {
                                Some(n) => D::DimValue(*n),
                                None => D::DimParam("N".into()),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ints(name: &str, elem: DataType, v: &[i64]) -> TensorProto {
    let mut t = TensorProto {
        name: name.into(),
        dims: vec![v.len() as i64],
        data_type: elem as i32,
        ..Default::default()
    };
    match elem {
        DataType::Int32 => t.int32_data = v.iter().map(|&x| x as i32).collect(),
        _ => t.int64_data = v.to_vec(),
    }
    t
}

fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        attribute: attrs,
        ..Default::default()
    }
}

fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

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
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
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
