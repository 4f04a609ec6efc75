//! What requesters send the server: TensorProto messages, JSON bodies, .npy files, and the
//! text-format configuration files.
#![no_main]
use libfuzzer_sys::fuzz_target;
use teeserve_serving::tensor::{self, DType, Tensor};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = <teeserve_serving::proto::tensorflow::TensorProto as prost::Message>::decode(data) {
        let _ = Tensor::from_proto(&p);
    }
    if let Ok(req) = <teeserve_serving::proto::tensorflow::serving::PredictRequest as prost::Message>::decode(data) {
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
        let _ = teeserve_serving::textproto::model_server_config(s);
        let _ = teeserve_serving::textproto::batching_parameters(s);
        let _ = teeserve_serving::textproto::ssl_config(s);
    }
});
