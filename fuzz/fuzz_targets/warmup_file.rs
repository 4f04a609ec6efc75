//! A model's warmup file (TFRecord framing of PredictionLog records, TF Serving's
//! `assets.extra/tf_serving_warmup_requests`), which the host supplies for a plaintext model:
//! the framing reader and the record decoder must refuse any bytes with an error.
//!
//! ```text
//! cargo fuzz run warmup_file -- -rss_limit_mb=512
//! ```
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message;
use teeserve_serving::fuzzing::warmup_records;
use teeserve_wire::tensorflow::serving::PredictionLog;

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = warmup_records(data) {
        for r in records {
            if let Ok(log) = PredictionLog::decode(r) {
                let _ = log.encode_to_vec();
            }
        }
    }
    // The same bytes as one record's data, framed correctly.
    let framed = teeserve_serving::fuzzing::frame_record(data);
    let records = warmup_records(&framed).expect("a framed record reads back");
    assert_eq!(records, vec![data]);
});
