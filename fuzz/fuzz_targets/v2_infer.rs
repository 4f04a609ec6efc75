//! An Open Inference Protocol (KServe v2) inference request as the server reads it into
//! tensors for a model's signature: over REST, a JSON object with binary tensor data after it
//! (the first two bytes of the input say where the JSON ends, as Inference-Header-Content-Length
//! would), and over gRPC, a ModelInferRequest (typed contents and raw_input_contents). With a
//! per-request bound; run with a memory limit, so that any allocation beyond it is a finding:
//!
//! ```text
//! cargo fuzz run v2_infer -- -rss_limit_mb=512 -malloc_limit_mb=256
//! ```
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use teeserve_serving::engine::{Signature, TensorSpec};
use teeserve_serving::fuzzing::{model_infer_inputs, v2_infer_inputs};
use teeserve_tensor::DType;
use teeserve_wire::inference::ModelInferRequest;

const MAX_TENSOR_BYTES: usize = 16 << 20;

fn signature() -> Signature {
    Signature {
        inputs: vec![
            TensorSpec::new("pixels", DType::F32, &[-1, 64]),
            TensorSpec::new("ids", DType::I64, &[-1, -1]),
            TensorSpec::new("small", DType::U8, &[-1]),
            TensorSpec::new("half", DType::F16, &[-1]),
            TensorSpec::new("flags", DType::Bool, &[-1]),
            TensorSpec::new("text", DType::Str, &[-1]),
        ],
        outputs: vec![TensorSpec::new("out", DType::F32, &[-1])],
    }
}

/// The decoded tensors stay within the bound.
fn within(inputs: &[(String, teeserve_tensor::Tensor)]) {
    let bytes: usize = inputs
        .iter()
        .map(|(_, t)| t.len() * t.dtype().element_bytes())
        .sum();
    assert!(bytes <= MAX_TENSOR_BYTES, "{bytes} bytes decoded");
}

fuzz_target!(|data: &[u8]| {
    let sig = signature();
    if let [a, b, body @ ..] = data {
        let split = usize::from(u16::from_le_bytes([*a, *b]));
        let header = (split != 0xffff).then_some(split);
        if let Ok(inputs) = v2_infer_inputs(body, header, &sig, MAX_TENSOR_BYTES) {
            within(&inputs);
        }
    }
    if let Ok(mut req) = ModelInferRequest::decode(data) {
        if let Ok(inputs) = model_infer_inputs(&mut req, &sig, MAX_TENSOR_BYTES, &mut |_| Ok(())) {
            within(&inputs);
        }
    }
    let _ = teeserve_serving::fuzzing::decoded_bytes(
        data,
        teeserve_serving::fuzzing::GrpcMessage::ModelInfer,
    );
});
