//! Reading an ONNX model's signature from its graph (ONNX IR, onnx/onnx.proto `GraphProto`).

use super::model::EngineError;
use teeserve_tensor::DType;
use teeserve_tensor::{Signature, TensorSpec};

/// ONNX TensorProto.DataType numbers (onnx/onnx.proto).
pub(super) fn onnx_dtype(t: i32) -> Option<DType> {
    Some(match t {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        4 => DType::U16,
        5 => DType::I16,
        6 => DType::I32,
        7 => DType::I64,
        8 => DType::Str,
        9 => DType::Bool,
        10 => DType::F16,
        11 => DType::F64,
        12 => DType::U32,
        13 => DType::U64,
        14 => DType::C64,
        15 => DType::C128,
        16 => DType::BF16,
        _ => return None,
    })
}

fn spec(v: &tract_onnx::pb::ValueInfoProto) -> Result<TensorSpec, EngineError> {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value as D;
    use tract_onnx::pb::type_proto::Value as T;
    let Some(T::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(EngineError::Format(format!(
            "graph value {:?} is not a tensor",
            v.name
        )));
    };
    let dtype = onnx_dtype(t.elem_type).ok_or_else(|| {
        EngineError::Format(format!(
            "graph value {:?} has unsupported ONNX type {}",
            v.name, t.elem_type
        ))
    })?;
    let shape = t
        .shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(D::DimValue(n)) if n >= 0 => n,
                    _ => -1,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(TensorSpec {
        name: v.name.clone(),
        dtype,
        shape,
    })
}

/// Parses an ONNX model and reads its signature from the graph: the inputs that are not
/// initializers, and the outputs (ONNX IR, onnx/onnx.proto `GraphProto`).
pub(crate) fn read_onnx(
    onnx_bytes: &[u8],
) -> Result<(tract_onnx::pb::ModelProto, Signature), EngineError> {
    use tract_onnx::prelude::Framework as _;
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut std::io::Cursor::new(onnx_bytes))
        .map_err(|e| EngineError::Format(format!("not an ONNX model: {e}")))?;
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| EngineError::Format("the ONNX model has no graph".into()))?;
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|i| i.name.as_str()).collect();
    let signature = Signature {
        inputs: graph
            .input
            .iter()
            .filter(|i| !initializers.contains(i.name.as_str()))
            .map(spec)
            .collect::<Result<_, _>>()?,
        outputs: graph.output.iter().map(spec).collect::<Result<_, _>>()?,
    };
    Ok((proto, signature))
}
