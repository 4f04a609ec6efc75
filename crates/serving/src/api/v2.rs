//! The Open Inference Protocol ("KServe v2") over the serving core, whatever its transport:
//! model readiness and metadata, and the checks of an inference request's inputs against the
//! model's signature before any of them is decoded. REST (`network/rest/v2.rs`) and gRPC
//! (`network/grpc_v2.rs`) read and write the wire forms around it.
//!
//! Facts: the protocol's `required_api.md` (github.com/kserve/open-inference-protocol): model
//! versions are strings, a model's metadata lists its versions, platform, inputs and outputs
//! (name, datatype, shape with -1 for a dimension of any size).

use tonic::Code;

use crate::api::error::ApiError;
use crate::api::inputs::{check_input, set_str};
use crate::api::service::{lookup_signature, Entry, ServingCore};
use crate::engine::Signature;
use crate::models::{ResolvedModel, State};
use teeserve_tensor::{v2, DType};

/// The server's name in the protocol's server metadata.
pub const SERVER_NAME: &str = "teeserve";
/// The longest model name a request may give.
const MAX_NAME: usize = 256;
/// The protocol extensions served: the binary tensor data extension (REST).
pub const EXTENSIONS: &[&str] = &["binary_tensor_data"];

/// A tensor's name, datatype and shape, as the protocol's metadata gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMetadata {
    /// Name.
    pub name: String,
    /// The protocol's datatype name (`FP32`).
    pub datatype: &'static str,
    /// Dimensions, -1 where any size goes.
    pub shape: Vec<i64>,
}

/// A model's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelMetadata {
    /// Name.
    pub name: String,
    /// Its available versions.
    pub versions: Vec<String>,
    /// The engine and format (`onnxruntime_onnx`).
    pub platform: &'static str,
    /// The default signature's inputs.
    pub inputs: Vec<TensorMetadata>,
    /// The default signature's outputs.
    pub outputs: Vec<TensorMetadata>,
}

/// What an input declares before its data is read: name, datatype name and shape.
#[derive(Debug, Clone, Copy)]
pub struct Declared<'a> {
    /// Name.
    pub name: &'a str,
    /// Datatype name.
    pub datatype: &'a str,
    /// Shape as sent.
    pub shape: &'a [i64],
}

/// A request's input as either transport carries it: what it declares before its data is read.
pub trait DeclaresInput {
    /// Its name, datatype name and shape.
    fn declared(&self) -> Declared<'_>;
}

impl DeclaresInput for Declared<'_> {
    fn declared(&self) -> Declared<'_> {
        *self
    }
}

/// An input the signature accepts: its place in the request, dtype and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Datatype.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
}

impl ServingCore {
    /// The model version a protocol request names (`version` empty: the latest).
    pub fn v2_resolve(&self, name: &str, version: &str) -> Result<ResolvedModel, ApiError> {
        // Errors name the model: a name no model could have is not echoed back whole.
        if name.len() > MAX_NAME {
            return Err(ApiError::new(
                Code::NotFound,
                format!(
                    "no model is named by {} bytes (the longest name is {MAX_NAME})",
                    name.len()
                ),
            ));
        }
        self.resolve(name, v2_version(version)?, None)
    }

    /// Whether model `name` (version `version`, empty: the latest) is ready to infer for this
    /// request: the version would answer it, so a requester's pin (`x-teeserve-accept-sha256`)
    /// counts as it does for inference. A malformed request (version, pin) is an error.
    pub fn v2_model_ready(&self, name: &str, version: &str) -> Result<bool, ApiError> {
        match self.v2_resolve(name, version) {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.code, Code::NotFound | Code::FailedPrecondition) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A model's metadata: its available versions, platform and default signature.
    pub fn v2_metadata(&self, name: &str, version: &str) -> Result<ModelMetadata, ApiError> {
        let target = self.v2_resolve(name, version)?;
        let versions = self
            .repo
            .model(name)
            .map(|m| {
                m.versions
                    .iter()
                    .filter(|(_, s)| s.state == State::Available)
                    .map(|(v, _)| v.to_string())
                    .collect()
            })
            .unwrap_or_default();
        let sig = lookup_signature(target.model.signatures(), "", Entry::V2Rest)?;
        let tensors = |specs: &[crate::engine::TensorSpec]| {
            specs
                .iter()
                .map(|s| {
                    Ok(TensorMetadata {
                        name: s.name.clone(),
                        datatype: v2::datatype(s.dtype).ok_or_else(|| {
                            ApiError::new(
                                Code::Unimplemented,
                                format!(
                                    "tensor {} is {}, which the protocol has no datatype for",
                                    s.name,
                                    s.dtype.tf_name()
                                ),
                            )
                        })?,
                        shape: s.shape.clone(),
                    })
                })
                .collect::<Result<Vec<_>, ApiError>>()
        };
        Ok(ModelMetadata {
            name: target.name.clone(),
            versions,
            platform: platform(target.model.engine()),
            inputs: tensors(&sig.inputs)?,
            outputs: tensors(&sig.outputs)?,
        })
    }
}

/// A version as the protocol sends it: empty for the latest, else a number.
fn v2_version(version: &str) -> Result<Option<i64>, ApiError> {
    if version.is_empty() {
        return Ok(None);
    }
    version.parse().map(Some).map_err(|_| {
        ApiError::new(
            Code::InvalidArgument,
            format!(
                "model version {:?} is not a number",
                version.chars().take(32).collect::<String>()
            ),
        )
    })
}

/// The protocol's platform name of an engine (`<engine>_<format>`, as Triton names them).
fn platform(engine: &str) -> &'static str {
    match engine {
        "onnxruntime" => "onnxruntime_onnx",
        "tensorflow" => "tensorflow_savedmodel",
        _ => "tract_onnx",
    }
}

/// The protocol's datatype of output `name`, or UNIMPLEMENTED naming it when the protocol has
/// none for its type.
pub fn output_datatype(name: &str, t: &teeserve_tensor::Tensor) -> Result<&'static str, ApiError> {
    v2::datatype(t.dtype()).ok_or_else(|| {
        ApiError::new(
            Code::Unimplemented,
            format!(
                "output {name} is {}, which the protocol has no datatype for",
                t.dtype().tf_name()
            ),
        )
    })
}

/// Checks what each input declares (name, datatype, shape) against signature `sig` before any
/// of its data is read: every input the signature's, no input twice, dtypes and fixed
/// dimensions the signature's, and all of them together within `max_bytes` once decoded.
/// Gives each input's dtype and shape, in the request's order, and the bytes they will take
/// (BYTES elements count their `Vec` and its allocation; their content is bounded by the body).
pub fn check_inputs<I: DeclaresInput>(
    sig: &Signature,
    inputs: &[I],
    max_bytes: usize,
) -> Result<(Vec<Accepted>, usize), ApiError> {
    let bad = |m: String| ApiError::new(Code::InvalidArgument, m);
    let mut total = 0usize;
    let mut out = Vec::with_capacity(inputs.len());
    for (k, input) in inputs.iter().enumerate() {
        let d = input.declared();
        let Some((i, spec)) = sig
            .inputs
            .iter()
            .enumerate()
            .find(|(_, s)| s.name == d.name)
        else {
            let names: Vec<&str> = sig.inputs.iter().map(|s| s.name.as_str()).collect();
            return Err(bad(format!(
                "unknown input {:?}: the model's inputs are {}",
                d.name.chars().take(64).collect::<String>(),
                set_str(&names)
            )));
        };
        if inputs[..k].iter().any(|p| p.declared().name == d.name) {
            return Err(bad(format!("input {} is given twice", d.name)));
        }
        let dtype =
            v2::from_datatype(d.datatype).map_err(|e| bad(format!("input {}: {e}", d.name)))?;
        let shape = v2::shape(d.shape).map_err(|e| bad(format!("input {}: {e}", d.name)))?;
        check_input(i, spec, dtype, &shape)?;
        let n: usize = shape.iter().product();
        let bytes = n.saturating_mul(decoded_element_bytes(dtype));
        total = total.saturating_add(bytes);
        if total > max_bytes {
            return Err(bad(format!(
                "input {}: shape {:?} of {} takes {bytes} bytes decoded, and the inputs up to it {total}; a request's inputs may take at most {max_bytes} bytes (--max_request_tensor_bytes)",
                d.name,
                shape,
                d.datatype,
            )));
        }
        out.push(Accepted { dtype, shape });
    }
    Ok((out, total))
}

/// What one element of `dtype` takes once decoded: a BYTES element is a `Vec` (24 bytes) and
/// its own allocation, at least a 32-byte heap chunk however short its content (longer content
/// is bounded by the body it came in).
fn decoded_element_bytes(dtype: DType) -> usize {
    match dtype {
        DType::Str => std::mem::size_of::<Vec<u8>>() + 32,
        d => d.element_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::TensorSpec;

    fn sig() -> Signature {
        Signature {
            inputs: vec![TensorSpec {
                name: "x".into(),
                dtype: DType::F32,
                shape: vec![-1, 4],
            }],
            outputs: vec![],
        }
    }

    #[test]
    fn inputs_are_checked_before_decoding() {
        let ok = check_inputs(
            &sig(),
            &[Declared {
                name: "x",
                datatype: "FP32",
                shape: &[2, 4],
            }],
            1 << 20,
        )
        .unwrap();
        assert_eq!(ok.1, 32);
        let cases: [(&str, &str, &[i64], &str); 5] = [
            ("y", "FP32", &[2, 4], "unknown input"),
            ("x", "FP64", &[2, 4], "Expects arg[0]"),
            ("x", "FP32", &[2, 5], "does not match"),
            ("x", "FLOAT", &[2, 4], "not one of"),
            ("x", "FP32", &[1 << 20, 4], "at most"),
        ];
        for (name, datatype, shape, want) in cases {
            let e = check_inputs(
                &sig(),
                &[Declared {
                    name,
                    datatype,
                    shape,
                }],
                1 << 20,
            )
            .unwrap_err();
            assert!(e.message.contains(want), "{name} {datatype}: {}", e.message);
        }
    }

    #[test]
    fn versions() {
        assert_eq!(v2_version("").unwrap(), None);
        assert_eq!(v2_version("3").unwrap(), Some(3));
        assert!(v2_version("x").is_err());
    }
}
