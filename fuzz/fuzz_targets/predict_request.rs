//! A gRPC Predict body as the server takes it: the admission estimate of what decoding it
//! takes, then the PredictRequest's inputs checked against a signature and a per-request bound
//! before they are decoded. Run with a memory limit, so that any allocation beyond the bound
//! is a finding:
//!
//! ```text
//! cargo fuzz run predict_request -- -rss_limit_mb=512 -malloc_limit_mb=256
//! ```
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use teeserve_serving::engine::{Signature, TensorSpec};
use teeserve_serving::fuzzing::{check_declared, decode_inputs, order_inputs};
use teeserve_tensor::{DType, Data};
use teeserve_wire::tensorflow::serving::PredictRequest;

/// Small against the memory limit: a decoded request near it still fits several times.
const MAX_TENSOR_BYTES: usize = 16 << 20;

fn signature() -> Signature {
    let spec = |name: &str, dtype, shape: &[i64]| TensorSpec {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
    };
    Signature {
        inputs: vec![
            spec("pixels", DType::F32, &[-1, 64]),
            spec("ids", DType::I64, &[-1, -1]),
            spec("small", DType::U8, &[-1]),
            spec("text", DType::Str, &[-1]),
        ],
        outputs: vec![spec("out", DType::F32, &[-1])],
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = teeserve_serving::fuzzing::decoded_bytes(
        data,
        teeserve_serving::fuzzing::GrpcMessage::Predict,
    );
    let Ok(req) = PredictRequest::decode(data) else {
        return;
    };
    let sig = signature();
    let Ok(total) = check_declared(&sig, &req.inputs, MAX_TENSOR_BYTES) else {
        return;
    };
    assert!(total <= MAX_TENSOR_BYTES);
    let Ok(inputs) = decode_inputs(&sig, &req.inputs, MAX_TENSOR_BYTES) else {
        return;
    };
    // What was decoded is what was declared.
    let decoded: usize = inputs
        .iter()
        .filter(|(n, _)| sig.inputs.iter().any(|s| &s.name == n))
        .map(|(_, t)| {
            t.len() * t.dtype().element_bytes()
                + match &t.data {
                    Data::Str(v) => v.iter().map(Vec::len).sum(),
                    _ => 0,
                }
        })
        .sum();
    assert_eq!(decoded, total);
    let _ = order_inputs(&sig, inputs);
});
