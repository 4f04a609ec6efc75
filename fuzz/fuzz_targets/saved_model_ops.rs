//! A SavedModel's `saved_model.pb`, which the host supplies for a plaintext model: the operator
//! policy's reader (SavedModel, MetaGraphDef, GraphDef, function library, attributes) must give
//! a verdict or an error for any bytes, within its node bound, never a panic; deep attribute
//! nesting is bounded by prost's recursion limit.
//!
//! ```text
//! cargo fuzz run saved_model_ops -- -rss_limit_mb=512
//! ```
#![no_main]
use libfuzzer_sys::fuzz_target;
use teeserve_serving::engine::tensorflow::ops;

fuzz_target!(|data: &[u8]| {
    let tags = ["serve".to_owned()];
    if let Ok(reached) = ops::check(data, &tags, &[]) {
        // What passes reaches only operators of the policy.
        assert!(reached.iter().all(|op| ops::is_compute(op)));
    }
    let _ = ops::check(data, &tags, &["PrintV2".to_owned()]);
});
