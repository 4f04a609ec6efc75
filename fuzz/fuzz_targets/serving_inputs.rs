//! What requesters send the server: TensorProto messages, JSON bodies, .npy files, and the
//! text-format configuration files.
#![no_main]
use libfuzzer_sys::fuzz_target;
use teeserve_tensor::{self as tensor, DType, Tensor};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = <teeserve_wire::tensorflow::TensorProto as prost::Message>::decode(data) {
        let _ = Tensor::from_proto(&p);
    }
    if let Ok(req) =
        <teeserve_wire::tensorflow::serving::PredictRequest as prost::Message>::decode(data)
    {
        for t in req.inputs.values() {
            let _ = Tensor::from_proto(t);
        }
    }
    let _ = tensor::from_npy(data);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = tensor::from_json(&v, DType::F32);
        let _ = tensor::from_json(&v, DType::Str);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        // The direct reading of numeric lists agrees with the general one wherever it succeeds.
        for dtype in [DType::F32, DType::F64] {
            if let Some(fast) = tensor::from_json_numbers(s, dtype) {
                let v: serde_json::Value = serde_json::from_str(s)
                    .unwrap_or_else(|e| panic!("read directly, but not JSON: {e}"));
                let slow = tensor::from_json(&v, dtype).expect("the general path refused it");
                assert_eq!(fast.shape, slow.shape);
                let floats = |t: &Tensor| -> Vec<f64> {
                    match &t.data {
                        tensor::Data::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
                        tensor::Data::F64(v) => v.clone(),
                        _ => panic!("not a float tensor"),
                    }
                };
                let (a, b) = (floats(&fast), floats(&slow));
                for (x, y) in a.iter().zip(&b) {
                    assert!(
                        x == y || (x - y).abs() <= y.abs() * 1e-6 + 1e-37,
                        "{x} != {y}"
                    );
                }
            }
        }
        let _ = teeserve_serving::fuzzing::model_server_config(s);
        let _ = teeserve_serving::fuzzing::batching_parameters(s);
        let _ = teeserve_serving::fuzzing::ssl_config(s);
    }
});
