//! tf.Examples as Classify and Regress read them: a gRPC `ClassificationRequest` decoded by
//! prost, its `Input` turned into rows of floats (the rule for models without a classification
//! signature) and into serialized examples (a SavedModel's DT_STRING input, the context merged
//! into each); and a REST body's `examples` and `context` read by the JSON rules of both paths.
//! Every path is bounded by the request's tensor bound; run with a memory limit, so that any
//! allocation the bound does not cover is a finding:
//!
//! ```text
//! cargo fuzz run tf_example -- -rss_limit_mb=512 -malloc_limit_mb=256
//! ```
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use teeserve_serving::fuzzing::{
    check_merged, example_row, example_rows, json_example, serialized_examples,
};
use teeserve_wire::tensorflow::serving::ClassificationRequest;

const MAX_TENSOR_BYTES: usize = 16 << 20;

fn grpc(data: &[u8]) {
    let Ok(req) = ClassificationRequest::decode(data) else {
        return;
    };
    if let Ok(rows) = example_rows(req.input.as_ref(), MAX_TENSOR_BYTES) {
        let bytes: usize = rows.iter().map(|r| r.len() * 4).sum();
        assert!(bytes <= MAX_TENSOR_BYTES, "{bytes} bytes of rows");
    }
    if let Ok(examples) = serialized_examples(req.input.as_ref(), MAX_TENSOR_BYTES) {
        let bytes: usize = examples.iter().map(Vec::len).sum();
        assert!(bytes <= MAX_TENSOR_BYTES, "{bytes} bytes of examples");
    }
}

fn rest(data: &[u8]) {
    let Ok(serde_json::Value::Object(body)) = serde_json::from_slice(data) else {
        return;
    };
    let Some(examples) = body.get("examples").and_then(|e| e.as_array()) else {
        return;
    };
    // A classification signature's path: each JSON example becomes a tf.Example.
    for e in examples.iter().chain(body.get("context")) {
        let _ = json_example(e);
    }
    // The rows path: values read, then the merged total checked before any copy.
    let mut shared = Vec::new();
    if let Some(c) = body.get("context") {
        if example_row(c, &mut shared).is_err() {
            return;
        }
    }
    let mut rows = Vec::new();
    for e in examples {
        let mut row = Vec::new();
        if example_row(e, &mut row).is_err() {
            return;
        }
        rows.push(row);
    }
    let _ = check_merged(
        shared.len() * 4,
        rows.iter().map(|r| r.len() * 4),
        MAX_TENSOR_BYTES,
    );
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0, rest_bytes)) => rest(rest_bytes),
        Some((_, grpc_bytes)) => grpc(grpc_bytes),
        None => {}
    }
});
