//! A REST Predict body as the server reads it into tensors for a model's signature (the
//! direct reading of numeric lists and the general JSON path, row and columnar formats), with
//! a per-request bound; and the check of a body that asks for a receipt (no key repeated in an
//! object), whose only refusal is a repeated key. Run with a memory limit, so that any allocation beyond the bound and
//! the reservation asked for is a finding:
//!
//! ```text
//! cargo fuzz run rest_body -- -rss_limit_mb=512 -malloc_limit_mb=256
//! ```
#![no_main]
use libfuzzer_sys::fuzz_target;
use teeserve_serving::engine::{Signature, Signatures, TensorSpec};
use teeserve_serving::fuzzing::predict_inputs;
use teeserve_tensor::{DType, Data};

const MAX_TENSOR_BYTES: usize = 16 << 20;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = teeserve_serving::fuzzing::unique_json_keys(data) {
        assert!(e.message.contains("appears twice"), "{}", e.message);
    }
    let out = vec![TensorSpec::new("out", DType::F32, &[-1])];
    let signatures = [
        // One float input: the direct reading applies.
        Signature {
            inputs: vec![TensorSpec::new("pixels", DType::F32, &[-1, 64])],
            outputs: out.clone(),
        },
        Signature {
            inputs: vec![
                TensorSpec::new("ids", DType::I64, &[-1, -1]),
                TensorSpec::new("text", DType::Str, &[-1]),
            ],
            outputs: out,
        },
    ];
    for sig in signatures {
        let sig = Signatures::single(sig);
        let mut asked = 0usize;
        let r = predict_inputs(data, &sig, MAX_TENSOR_BYTES, &mut |b| {
            asked = asked.saturating_add(b);
            Ok(())
        });
        if let Ok(body) = r {
            let bytes: usize = body
                .inputs
                .iter()
                .map(|(_, t)| {
                    t.len() * t.dtype().element_bytes()
                        + match &t.data {
                            Data::Str(v) => v.iter().map(Vec::len).sum(),
                            _ => 0,
                        }
                })
                .sum();
            assert!(bytes <= MAX_TENSOR_BYTES);
            assert!(bytes <= asked, "{bytes} bytes read, {asked} reserved");
        }
    }
});
