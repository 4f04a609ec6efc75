//! ONNX graphs written by hand for the engine tests (onnx.proto's ModelProto, GraphProto,
//! NodeProto, ValueInfoProto and TensorProto, as tract's protobuf types spell them).
#![allow(dead_code)]

use prost::Message;
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// A graph input or output of element type `elem` (None: the symbolic batch `N`).
pub fn value(name: &str, elem: DataType, dims: &[Option<i64>]) -> ValueInfoProto {
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

/// A 1-D integer initializer (`Int32` or `Int64`).
pub fn ints(name: &str, elem: DataType, v: &[i64]) -> TensorProto {
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

/// A node named after its one output.
pub fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        attribute: attrs,
        ..Default::default()
    }
}

/// An integer attribute.
pub fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

/// A model of `graph` at opset 17, encoded.
pub fn model(graph: GraphProto) -> Vec<u8> {
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
