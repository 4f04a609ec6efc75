//! Model warmup as TF Serving does it: the records of a version's
//! `assets.extra/tf_serving_warmup_requests` are replayed on the loaded model before the
//! version becomes AVAILABLE, so that the first requests do not pay for lazy initialisation
//! (tract's plans for the shapes requests send, TensorFlow's first session run).
//!
//! The file is a TFRecord file of `PredictionLog` messages. TFRecord framing (TensorFlow's
//! `tensorflow/core/lib/io/record_writer.cc`): each record is a little-endian u64 length, the
//! masked CRC-32C of those 8 bytes, the data, and the masked CRC-32C of the data; a masked CRC
//! is `((crc >> 15) | (crc << 17)) + 0xa282ead8`.

use prost::Message;

use crate::api::classify::{self, CLASSIFY_METHOD, REGRESS_METHOD};
use crate::engine::LoadedModel;
use teeserve_tensor::Tensor;
use teeserve_wire::tensorflow::serving::{prediction_log, Input, ModelSpec, PredictionLog};

/// Where the warmup file is, inside a version directory.
pub(crate) const WARMUP_FILE: &str = "assets.extra/tf_serving_warmup_requests";

/// The most records replayed; TF Serving refuses a warmup file with more.
pub(crate) const MAX_RECORDS: usize = 1000;

/// The most bytes one warmup input decodes into: the default bound of a request's inputs.
const MAX_TENSOR_BYTES: usize = crate::api::service::DEFAULT_MAX_TENSOR_BYTES;

/// The largest warmup file read.
pub(crate) const MAX_WARMUP_BYTES: u64 = 256 << 20;

/// Why a warmup file failed; the version then fails to load, as in TF Serving.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WarmupError {
    /// The TFRecord framing is broken (truncated, or a checksum does not match).
    #[error("warmup file: record {record}: {reason}")]
    Framing {
        /// The record's index (0-based).
        record: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// More records than TF Serving replays.
    #[error("warmup file: more than {MAX_RECORDS} records")]
    TooMany,
    /// A record is not a PredictionLog teeserve replays, or the model refused it.
    #[error("warmup file: record {record}: {reason}")]
    Record {
        /// The record's index (0-based).
        record: usize,
        /// What is wrong.
        reason: String,
    },
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bitwise: warmup files are small.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Frames `data` as one TFRecord record.
pub fn frame_record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// The records of a TFRecord file, each checked against its checksums.
pub fn records(mut file: &[u8]) -> Result<Vec<&[u8]>, WarmupError> {
    let mut out = Vec::new();
    while !file.is_empty() {
        let record = out.len();
        if record == MAX_RECORDS {
            return Err(WarmupError::TooMany);
        }
        let framing = |reason| WarmupError::Framing { record, reason };
        let (len_bytes, rest) = file
            .split_first_chunk::<8>()
            .ok_or_else(|| framing("truncated length"))?;
        let (len_crc, rest) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| framing("truncated length checksum"))?;
        if u32::from_le_bytes(*len_crc) != masked_crc(len_bytes) {
            return Err(framing("length checksum mismatch"));
        }
        let len = usize::try_from(u64::from_le_bytes(*len_bytes))
            .ok()
            .filter(|&l| l <= rest.len())
            .ok_or_else(|| framing("length beyond the end of the file"))?;
        let (data, rest) = rest.split_at(len);
        let (data_crc, rest) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| framing("truncated data checksum"))?;
        if u32::from_le_bytes(*data_crc) != masked_crc(data) {
            return Err(framing("data checksum mismatch"));
        }
        out.push(data);
        file = rest;
    }
    Ok(out)
}

/// Replays the warmup records on `model`; gives the number of records replayed. A predict log
/// runs its request on the signature it names; a classify or regress log runs its examples as
/// Classify and Regress would (a classification or regression signature takes them serialized;
/// another model takes them as rows of floats).
pub(crate) fn replay(model: &dyn LoadedModel, file: &[u8]) -> Result<usize, WarmupError> {
    let records = records(file)?;
    let mut replayed = 0;
    for (record, data) in records.iter().enumerate() {
        let fail = |reason: String| WarmupError::Record { record, reason };
        let log =
            PredictionLog::decode(*data).map_err(|e| fail(format!("not a PredictionLog: {e}")))?;
        match log.log_type {
            Some(prediction_log::LogType::PredictLog(p)) => {
                let req = p
                    .request
                    .ok_or_else(|| fail("predict_log has no request".into()))?;
                let name = req
                    .model_spec
                    .as_ref()
                    .map(|s| s.signature_name.as_str())
                    .unwrap_or_default();
                let sig = model
                    .signatures()
                    .get(name)
                    .ok_or_else(|| fail(format!("no signature {name:?}")))?;
                let mut inputs = Vec::with_capacity(sig.inputs.len());
                for spec in &sig.inputs {
                    let tp = req
                        .inputs
                        .get(&spec.name)
                        .ok_or_else(|| fail(format!("no input {:?}", spec.name)))?;
                    // Bounded as a request's inputs are, before anything is allocated: a
                    // record of a few bytes may declare a shape of gigabytes.
                    let t = Tensor::from_proto_within(tp, MAX_TENSOR_BYTES)
                        .map_err(|e| fail(format!("input {:?}: {e}", spec.name)))?;
                    inputs.push(t);
                }
                model
                    .run(name, inputs)
                    .map_err(|e| fail(format!("the model refused it: {e}")))?;
                replayed += 1;
            }
            Some(prediction_log::LogType::ClassifyLog(c)) => {
                let req = c
                    .request
                    .ok_or_else(|| fail("classify_log has no request".into()))?;
                run_examples(
                    model,
                    req.model_spec.as_ref(),
                    req.input.as_ref(),
                    CLASSIFY_METHOD,
                )
                .map_err(fail)?;
                replayed += 1;
            }
            Some(prediction_log::LogType::RegressLog(r)) => {
                let req = r
                    .request
                    .ok_or_else(|| fail("regress_log has no request".into()))?;
                run_examples(
                    model,
                    req.model_spec.as_ref(),
                    req.input.as_ref(),
                    REGRESS_METHOD,
                )
                .map_err(fail)?;
                replayed += 1;
            }
            None => {
                return Err(fail(
                    "a PredictionLog of a kind teeserve does not replay".into(),
                ))
            }
        }
    }
    Ok(replayed)
}

/// Runs the examples of a Classify or Regress request (`method` says which) on `model`, with
/// the inputs the live request would give it, bounded as a request's are.
fn run_examples(
    model: &dyn LoadedModel,
    spec: Option<&ModelSpec>,
    input: Option<&Input>,
    method: &str,
) -> Result<(), String> {
    let name = spec.map(|s| s.signature_name.as_str()).unwrap_or_default();
    if model.signatures().method(name) == Some(method) {
        let sig = model
            .signatures()
            .get(name)
            .ok_or_else(|| format!("no signature {name:?}"))?;
        let serialized =
            classify::serialized_examples(input, MAX_TENSOR_BYTES).map_err(|e| e.message)?;
        let n = serialized.len();
        let (_, t) = classify::examples_tensor(sig, serialized).map_err(|e| e.message)?;
        let outs = model
            .run(name, vec![t])
            .map_err(|e| format!("the model refused it: {e}"))?;
        // Its outputs read as Classify or Regress reads them: a signature whose outputs they
        // could not answer fails here as the live request would.
        let outs: Vec<(String, Tensor)> = sig
            .outputs
            .iter()
            .map(|s| s.name.clone())
            .zip(outs)
            .collect();
        let read = if method == CLASSIFY_METHOD {
            classify::classifications(&outs, n).map(drop)
        } else {
            classify::regressions(&outs, n).map(drop)
        };
        return read.map_err(|e| e.message);
    }
    if !name.is_empty() && model.signatures().get(name).is_none() {
        return Err(format!("no signature {name:?}"));
    }
    let rows = classify::rows(input, MAX_TENSOR_BYTES).map_err(|e| e.message)?;
    // The rows rule of a model without such a signature: as wide as the first example.
    let width = rows[0].len();
    let t = classify::rows_tensor(rows, width).map_err(|e| e.message)?;
    let out = model
        .run("", vec![t])
        .map_err(|e| format!("the model refused it: {e}"))?;
    let first = out
        .first()
        .ok_or_else(|| "the model gave no output".to_owned())?;
    let (_, values, _) = classify::scores(first).map_err(|e| e.message)?;
    if method == REGRESS_METHOD && values != 1 {
        return Err(format!(
            "Regress needs one value per example; the model gives {values}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_published_check_value() {
        // RFC 3720, B.4: CRC-32C of "123456789" is 0xE3069283.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn records_round_trip_and_damage_is_named() {
        let mut file = frame_record(b"first");
        file.extend(frame_record(b""));
        file.extend(frame_record(b"third record"));
        let r = records(&file).unwrap();
        assert_eq!(r, vec![&b"first"[..], b"", b"third record"]);
        let mut bad = file.clone();
        bad[14] ^= 1; // inside the first record's data
        assert_eq!(
            records(&bad),
            Err(WarmupError::Framing {
                record: 0,
                reason: "data checksum mismatch"
            })
        );
        assert!(matches!(
            records(&file[..file.len() - 2]),
            Err(WarmupError::Framing { record: 2, .. })
        ));
        let mut huge = file.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(records(&huge).is_err());
    }

    #[test]
    fn more_records_than_tf_serving_replays_are_refused() {
        let file: Vec<u8> = (0..=MAX_RECORDS).flat_map(|_| frame_record(b"x")).collect();
        assert_eq!(records(&file), Err(WarmupError::TooMany));
    }
}
