//! `inference.GRPCInferenceService/ModelInfer` (the Open Inference Protocol over gRPC): what
//! each input declares checked against the signature, and its contents' length against its
//! shape, before anything is decoded; the outputs answered as `raw_output_contents`, as Triton
//! answers them.
//!
//! Facts: the protocol's `inference_grpc.md` (github.com/kserve/open-inference-protocol):
//! `raw_input_contents`, when present, holds one entry per input in the inputs' order and the
//! typed `contents` are then empty; which `InferTensorContents` field carries which datatype.

use tonic::Code;

use crate::api::error::ApiError;
use crate::api::service::{lookup_signature, Entry, ServingCore};
use crate::api::v2::{check_inputs, Accepted, Declared, DeclaresInput};
use teeserve_tensor::{v2, DType, Data, Tensor};
use teeserve_wire::heavy;
use teeserve_wire::inference::{
    infer_parameter::ParameterChoice, model_infer_request::InferInputTensor,
    model_infer_response::InferOutputTensor, ModelInferRequest, ModelInferResponse,
};

fn bad(m: String) -> ApiError {
    ApiError::new(Code::InvalidArgument, m)
}

impl ServingCore {
    /// ModelInfer.
    pub async fn model_infer(
        &self,
        mut req: ModelInferRequest,
    ) -> Result<ModelInferResponse, ApiError> {
        let target = self.v2_resolve(&req.model_name, &req.model_version)?;
        let sig_name = match req
            .parameters
            .get("signature_name")
            .map(|p| &p.parameter_choice)
        {
            None => String::new(),
            Some(Some(ParameterChoice::StringParam(s))) => s.clone(),
            Some(_) => return Err(bad("parameter signature_name must be a string".into())),
        };
        let sig = lookup_signature(target.model.signatures(), &sig_name, Entry::V2Grpc)?;
        let mut held = Vec::new();
        // Decoded, and the answer encoded, aside from the I/O threads when large (heavy).
        let inputs = heavy::run(prost::Message::encoded_len(&req), || {
            model_infer_inputs(&mut req, sig, self.options.max_tensor_bytes, &mut |n| {
                held.push(self.reserve(n, "the request's input tensors")?);
                Ok(())
            })
        })?;
        let filter: Vec<String> = req.outputs.iter().map(|o| o.name.clone()).collect();
        let outputs = self
            .infer(&target, &sig_name, inputs, &filter, Entry::V2Grpc)
            .await?;
        let resp = ModelInferResponse {
            model_name: target.name.clone(),
            model_version: target.version.to_string(),
            id: req.id,
            ..Default::default()
        };
        let bytes = outputs.iter().map(|(_, t)| t.data_bytes()).sum();
        heavy::run(bytes, || encode_outputs(resp, outputs))
    }
}

/// `resp` with `outputs` in its raw contents.
fn encode_outputs(
    mut resp: ModelInferResponse,
    outputs: Vec<(String, Tensor)>,
) -> Result<ModelInferResponse, ApiError> {
    for (name, t) in outputs {
        let datatype = crate::api::v2::output_datatype(&name, &t)?;
        let mut raw = Vec::with_capacity(v2::raw_byte_len(&t));
        v2::write_raw(&t, &mut raw).ok_or_else(|| {
            ApiError::new(
                Code::Internal,
                format!("output {name} has an element longer than 4 GiB"),
            )
        })?;
        resp.outputs.push(InferOutputTensor {
            name,
            datatype: datatype.into(),
            shape: t.shape.iter().map(|&d| d as i64).collect(),
            ..Default::default()
        });
        resp.raw_output_contents.push(raw.into());
    }
    Ok(resp)
}

impl DeclaresInput for InferInputTensor {
    fn declared(&self) -> Declared<'_> {
        Declared {
            name: &self.name,
            datatype: &self.datatype,
            shape: &self.shape,
        }
    }
}

/// The input tensors of a ModelInferRequest for a model of signature `sig`: what each declares
/// checked against the signature, and its raw contents' length against its shape, then
/// `reserve` asked for the bytes the tensors take, then each decoded, the typed contents moved
/// out of the request rather than copied.
pub fn model_infer_inputs(
    req: &mut ModelInferRequest,
    sig: &crate::engine::Signature,
    max: usize,
    reserve: &mut dyn FnMut(usize) -> Result<(), ApiError>,
) -> Result<Vec<(String, Tensor)>, ApiError> {
    let (accepted, total) = check_inputs(sig, &req.inputs, max)?;
    let raw = &req.raw_input_contents;
    if !raw.is_empty() && raw.len() != req.inputs.len() {
        return Err(bad(format!(
            "raw_input_contents has {} entries for {} inputs; it needs one per input, or none",
            raw.len(),
            req.inputs.len()
        )));
    }
    for (i, (input, a)) in req.inputs.iter().zip(&accepted).enumerate() {
        let n: usize = a.shape.iter().product();
        match (raw.get(i), v2::raw_len(a.dtype, n)) {
            (Some(r), Some(want)) if r.len() != want => {
                return Err(bad(format!(
                    "input {}: raw_input_contents has {} bytes, but shape {:?} of {} takes {want}",
                    input.name,
                    r.len(),
                    a.shape,
                    input.datatype
                )))
            }
            (Some(_), _) if input.contents.is_some() => {
                return Err(bad(format!(
                    "input {} has both contents and raw_input_contents",
                    input.name
                )))
            }
            _ => {}
        }
    }
    reserve(total)?;
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for (i, (input, a)) in req.inputs.iter_mut().zip(accepted).enumerate() {
        let t = match raw.get(i) {
            Some(r) => v2::from_raw(a.dtype, a.shape, r)
                .map_err(|e| bad(format!("input {}: {e}", input.name)))?,
            None => from_contents(input, a)?,
        };
        inputs.push((input.name.clone(), t));
    }
    Ok(inputs)
}

/// An input from its typed `contents`: the field of its datatype, holding exactly as many
/// elements as its shape (narrower integers range-checked).
fn from_contents(input: &mut InferInputTensor, a: Accepted) -> Result<Tensor, ApiError> {
    let mut c = input.contents.take().unwrap_or_default();
    let n: usize = a.shape.iter().product();
    let name = &input.name;
    let count = |len: usize, field: &str| {
        if len == n {
            Ok(())
        } else {
            Err(bad(format!(
                "input {name}: contents.{field} holds {len} values, but shape {:?} has {n}",
                a.shape
            )))
        }
    };
    fn narrow<S: Copy, T: TryFrom<S>>(v: &[S], name: &str, dt: &str) -> Result<Vec<T>, ApiError> {
        v.iter()
            .map(|&x| T::try_from(x).ok())
            .collect::<Option<Vec<T>>>()
            .ok_or_else(|| bad(format!("input {name}: a value is out of the range of {dt}")))
    }
    let dt = input.datatype.as_str();
    // Values in a field of another datatype are a mistake said, not ignored.
    let filled = [
        ("bool_contents", c.bool_contents.len()),
        ("int_contents", c.int_contents.len()),
        ("int64_contents", c.int64_contents.len()),
        ("uint_contents", c.uint_contents.len()),
        ("uint64_contents", c.uint64_contents.len()),
        ("fp32_contents", c.fp32_contents.len()),
        ("fp64_contents", c.fp64_contents.len()),
        ("bytes_contents", c.bytes_contents.len()),
    ];
    let own = contents_field(a.dtype);
    if let Some((field, _)) = filled.iter().find(|(f, len)| *len > 0 && Some(*f) != own) {
        return Err(bad(format!(
            "input {name}: contents.{field} does not carry {dt}{}",
            own.map(|f| format!(" (contents.{f} does)"))
                .unwrap_or_default()
        )));
    }
    let data = match a.dtype {
        DType::Bool => {
            count(c.bool_contents.len(), "bool_contents")?;
            Data::Bool(std::mem::take(&mut c.bool_contents))
        }
        DType::I8 | DType::I16 | DType::I32 => {
            count(c.int_contents.len(), "int_contents")?;
            match a.dtype {
                DType::I8 => Data::I8(narrow(&c.int_contents, name, dt)?),
                DType::I16 => Data::I16(narrow(&c.int_contents, name, dt)?),
                _ => Data::I32(std::mem::take(&mut c.int_contents)),
            }
        }
        DType::U8 | DType::U16 | DType::U32 => {
            count(c.uint_contents.len(), "uint_contents")?;
            match a.dtype {
                DType::U8 => Data::U8(narrow(&c.uint_contents, name, dt)?),
                DType::U16 => Data::U16(narrow(&c.uint_contents, name, dt)?),
                _ => Data::U32(std::mem::take(&mut c.uint_contents)),
            }
        }
        DType::I64 => {
            count(c.int64_contents.len(), "int64_contents")?;
            Data::I64(std::mem::take(&mut c.int64_contents))
        }
        DType::U64 => {
            count(c.uint64_contents.len(), "uint64_contents")?;
            Data::U64(std::mem::take(&mut c.uint64_contents))
        }
        DType::F32 => {
            count(c.fp32_contents.len(), "fp32_contents")?;
            Data::F32(std::mem::take(&mut c.fp32_contents))
        }
        DType::F64 => {
            count(c.fp64_contents.len(), "fp64_contents")?;
            Data::F64(std::mem::take(&mut c.fp64_contents))
        }
        DType::Str => {
            count(c.bytes_contents.len(), "bytes_contents")?;
            Data::Str(std::mem::take(&mut c.bytes_contents))
        }
        DType::F16 | DType::BF16 | DType::C64 | DType::C128 => {
            return Err(bad(format!(
                "input {name}: {dt} has no contents field; send it in raw_input_contents"
            )))
        }
    };
    Tensor::new(a.shape, data).map_err(|e| bad(format!("input {name}: {e}")))
}

/// The `InferTensorContents` field that carries `dtype` (the protocol's table); `None` for those
/// only `raw_input_contents` carries.
fn contents_field(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::Bool => "bool_contents",
        DType::I8 | DType::I16 | DType::I32 => "int_contents",
        DType::I64 => "int64_contents",
        DType::U8 | DType::U16 | DType::U32 => "uint_contents",
        DType::U64 => "uint64_contents",
        DType::F32 => "fp32_contents",
        DType::F64 => "fp64_contents",
        DType::Str => "bytes_contents",
        DType::F16 | DType::BF16 | DType::C64 | DType::C128 => return None,
    })
}
