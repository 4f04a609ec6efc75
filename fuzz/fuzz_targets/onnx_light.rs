//! The model ONNX Runtime saves as it optimised a requester's model, read to move its large
//! initializers out (the two sessions of one model over one copy of the weights): any bytes,
//! with any length of weights file, give a model and weights that all lie inside that file, or
//! a refusal that names what is wrong.
//!
//! ```text
//! cargo fuzz run onnx_light -- -rss_limit_mb=512
//! ```
#![no_main]
use libfuzzer_sys::fuzz_target;
use teeserve_serving::engine::onnx_light::light_model;

fuzz_target!(|data: &[u8]| {
    let Some((len, model)) = data.split_first_chunk::<4>() else {
        return;
    };
    let weights_len = u32::from_le_bytes(*len) as usize;
    match light_model(model, weights_len) {
        Ok((_, weights)) => {
            for w in &weights {
                assert!(w.len > 0 && w.offset + w.len <= weights_len, "{w:?}");
            }
        }
        Err(e) => assert!(e.starts_with("the optimised model"), "{e}"),
    }
});
