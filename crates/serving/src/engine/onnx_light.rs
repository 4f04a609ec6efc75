//! An ONNX model's large initializers turned into graph inputs, by editing the model's
//! protocol buffer in place: the model that ONNX Runtime's two sessions of one model load
//! (`ort_weights.rs`), so that neither holds the weights. Its input is a model ONNX Runtime
//! wrote from a requester-supplied model, so it is read as untrusted bytes: every length and
//! offset is checked, nothing recurses, and it has a fuzz target (`fuzz/fuzz_targets/onnx_light.rs`).

use prost::Message as _;
use teeserve_tensor::DType;
use tract_onnx::pb;
use zeroize::Zeroizing;

/// One initializer moved out of the model into the weights file.
#[derive(Debug)]
pub struct Weight {
    /// The initializer's name, now an input's.
    pub name: String,
    /// Its ONNX element type (onnx.proto, `TensorProto.DataType`).
    pub data_type: i32,
    /// Its shape.
    pub dims: Vec<i64>,
    /// Where its bytes start in the weights file.
    pub offset: usize,
    /// How many bytes it has there.
    pub len: usize,
}

/// Bytes per element of an ONNX data type a weight may have (every numeric type of
/// `TensorProto.DataType`); `None` for the others (strings are never written outside the model).
fn element_size(data_type: i32) -> Option<usize> {
    super::onnx::onnx_dtype(data_type)
        .filter(|d| *d != DType::Str)
        .map(DType::element_bytes)
}

/// One top-level field of a message: its number, and its whole bytes (key included), and for a
/// length-delimited field its contents.
struct Field<'a> {
    number: u64,
    raw: &'a [u8],
    contents: Option<&'a [u8]>,
}

/// The top-level fields of a message, in order (protobuf.dev, "Encoding": a key of field
/// number and wire type, then a varint, 8 bytes, a length and that many bytes, or 4 bytes).
fn fields(b: &[u8]) -> Option<Vec<Field<'_>>> {
    use prost::encoding::decode_varint;
    let mut out = Vec::new();
    let mut rest = b;
    while !rest.is_empty() {
        let start = b.len() - rest.len();
        let key = decode_varint(&mut rest).ok()?;
        let contents = match key & 7 {
            0 => {
                decode_varint(&mut rest).ok()?;
                None
            }
            1 => {
                rest = rest.get(8..)?;
                None
            }
            5 => {
                rest = rest.get(4..)?;
                None
            }
            2 => {
                let len = usize::try_from(decode_varint(&mut rest).ok()?).ok()?;
                let c = rest.get(..len)?;
                rest = &rest[len..];
                Some(c)
            }
            _ => return None,
        };
        out.push(Field {
            number: key >> 3,
            raw: &b[start..b.len() - rest.len()],
            contents,
        });
    }
    Some(out)
}

fn put_message(out: &mut Vec<u8>, number: u64, contents: &[u8]) {
    prost::encoding::encode_varint(number << 3 | 2, out);
    prost::encoding::encode_varint(contents.len() as u64, out);
    out.extend_from_slice(contents);
}

// onnx.proto field numbers: ModelProto.graph 7; GraphProto.initializer 5, GraphProto.input 11;
// TensorProto.data_location EXTERNAL = 1.
const MODEL_GRAPH: u64 = 7;
const GRAPH_INITIALIZER: u64 = 5;
const GRAPH_INPUT: u64 = 11;
const EXTERNAL: i32 = 1;

/// The optimised model with every initializer that ONNX Runtime wrote to the weights file
/// (`weights_len` bytes) turned into a graph input, and those initializers. Every other byte
/// of the model is kept as written. Edits the wire format rather than decoding the whole model,
/// so that no field this crate's copy of onnx.proto lacks is lost.
pub fn light_model(
    model: &[u8],
    weights_len: usize,
) -> Result<(Zeroizing<Vec<u8>>, Vec<Weight>), String> {
    let bad = |what: &str| format!("the optimised model: {what}");
    let top = fields(model).ok_or_else(|| bad("not a protocol buffer"))?;
    let mut out = Zeroizing::new(Vec::with_capacity(model.len()));
    let mut weights = Vec::new();
    for f in &top {
        match (f.number, f.contents) {
            (MODEL_GRAPH, Some(graph)) => {
                let (g, w) = light_graph(graph, weights_len)?;
                put_message(&mut out, MODEL_GRAPH, &g);
                weights.extend(w);
            }
            _ => out.extend_from_slice(f.raw),
        }
    }
    Ok((out, weights))
}

fn light_graph(
    graph: &[u8],
    weights_len: usize,
) -> Result<(Zeroizing<Vec<u8>>, Vec<Weight>), String> {
    let bad = |what: String| format!("the optimised model's graph: {what}");
    let fs = fields(graph).ok_or_else(|| bad("not a protocol buffer".into()))?;
    let mut out = Zeroizing::new(Vec::with_capacity(graph.len()));
    let mut weights = Vec::new();
    let mut inputs = std::collections::HashSet::new();
    for f in &fs {
        match (f.number, f.contents) {
            (GRAPH_INITIALIZER, Some(t)) => {
                let t = pb::TensorProto::decode(t).map_err(|e| bad(format!("initializer: {e}")))?;
                if t.data_location == Some(EXTERNAL) {
                    weights.push(weight(&t, weights_len).map_err(bad)?);
                } else {
                    out.extend_from_slice(f.raw);
                }
            }
            (GRAPH_INPUT, Some(v)) => {
                let v = pb::ValueInfoProto::decode(v).map_err(|e| bad(format!("input: {e}")))?;
                inputs.insert(v.name);
                out.extend_from_slice(f.raw);
            }
            _ => out.extend_from_slice(f.raw),
        }
    }
    for w in &weights {
        // An initializer that is also an input (a default the caller may override) is an
        // input already.
        if inputs.contains(&w.name) {
            continue;
        }
        let shape = pb::TensorShapeProto {
            dim: w
                .dims
                .iter()
                .map(|&d| pb::tensor_shape_proto::Dimension {
                    denotation: String::new(),
                    value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(d)),
                })
                .collect(),
        };
        let input = pb::ValueInfoProto {
            name: w.name.clone(),
            r#type: Some(pb::TypeProto {
                denotation: String::new(),
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: w.data_type,
                    shape: Some(shape),
                })),
            }),
            doc_string: String::new(),
        };
        put_message(&mut out, GRAPH_INPUT, &input.encode_to_vec());
    }
    Ok((out, weights))
}

/// Where one initializer lies in the weights file (its `external_data` entries `offset` and
/// `length`, onnx.proto), checked against its type, its shape and the file's length.
fn weight(t: &pb::TensorProto, weights_len: usize) -> Result<Weight, String> {
    let entry = |key: &str| -> Result<Option<usize>, String> {
        t.external_data
            .iter()
            .find(|e| e.key == key)
            .map(|e| {
                e.value
                    .parse()
                    .map_err(|_| format!("initializer {:?}: {key} {:?}", t.name, e.value))
            })
            .transpose()
    };
    let offset = entry("offset")?.unwrap_or(0);
    let size = element_size(t.data_type)
        .ok_or_else(|| format!("initializer {:?}: data type {}", t.name, t.data_type))?;
    let count = t.dims.iter().try_fold(1usize, |n, &d| {
        usize::try_from(d).ok().and_then(|d| n.checked_mul(d))
    });
    let len = count
        .and_then(|n| n.checked_mul(size))
        .ok_or_else(|| format!("initializer {:?}: shape {:?}", t.name, t.dims))?;
    if entry("length")?.is_some_and(|l| l != len)
        || offset.checked_add(len).is_none_or(|end| end > weights_len)
    {
        return Err(format!(
            "initializer {:?}: {len} bytes at {offset} in a weights file of {weights_len}",
            t.name
        ));
    }
    Ok(Weight {
        name: t.name.clone(),
        data_type: t.data_type,
        dims: t.dims.clone(),
        offset,
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor_proto(name: &str, dims: &[i64], offset: usize, external: bool) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: 1,
            data_location: external.then_some(EXTERNAL),
            external_data: if external {
                vec![
                    pb::StringStringEntryProto {
                        key: "location".into(),
                        value: "7".into(),
                    },
                    pb::StringStringEntryProto {
                        key: "offset".into(),
                        value: offset.to_string(),
                    },
                ]
            } else {
                Vec::new()
            },
            raw_data: if external { Vec::new() } else { vec![0; 16] },
            ..Default::default()
        }
    }

    fn model(inits: Vec<pb::TensorProto>) -> Vec<u8> {
        pb::ModelProto {
            ir_version: 8,
            producer_name: "test".into(),
            graph: Some(pb::GraphProto {
                name: "g".into(),
                initializer: inits,
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn external_initializers_become_inputs_and_the_rest_is_kept() {
        let m = model(vec![
            tensor_proto("w", &[4, 4], 0, true),
            tensor_proto("small", &[4], 0, false),
            tensor_proto("v", &[2], 4096, true),
        ]);
        let (light, weights) = light_model(&m, 4104).unwrap();
        let light = pb::ModelProto::decode(&light[..]).unwrap();
        assert_eq!(light.producer_name, "test");
        let g = light.graph.unwrap();
        assert_eq!(
            g.initializer.iter().map(|t| &t.name).collect::<Vec<_>>(),
            ["small"]
        );
        assert_eq!(
            g.input.iter().map(|v| &v.name).collect::<Vec<_>>(),
            ["w", "v"]
        );
        assert_eq!(weights.len(), 2);
        assert_eq!((weights[1].offset, weights[1].len), (4096, 8));
    }

    #[test]
    fn weights_outside_the_file_or_of_another_length_are_refused() {
        let m = model(vec![tensor_proto("w", &[4, 4], 4096, true)]);
        let e = light_model(&m, 4100).unwrap_err();
        assert!(e.contains("\"w\": 64 bytes at 4096"), "{e}");
        let m = model(vec![tensor_proto("w", &[-1, 4], 0, true)]);
        assert!(light_model(&m, 4100).unwrap_err().contains("shape"));
        assert!(light_model(b"\x3a\xff", 10).is_err());
    }
}
