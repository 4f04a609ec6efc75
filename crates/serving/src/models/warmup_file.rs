//! A version's warmup file (TF Serving's `assets.extra/tf_serving_warmup_requests`): read,
//! unsealed when sealed, and split into its records. The records are replayed by the serving
//! API, which the repository reaches only through [`WarmUp`].
//!
//! The file is a TFRecord file of `PredictionLog` messages. TFRecord framing (TensorFlow's
//! `tensorflow/core/lib/io/record_writer.cc`): each record is a little-endian u64 length, the
//! masked CRC-32C of those 8 bytes, the data, and the masked CRC-32C of the data; a masked CRC
//! is `((crc >> 15) | (crc << 17)) + 0xa282ead8`.

use std::path::Path;

use teeserve_seal::SealKey;
use teeserve_seal::{binding, stream};

use super::files::{ModelFileError, SEALED_SUFFIX};
use crate::engine::LoadedModel;

/// Replays a version's warmup records on the loaded model before the version is served; the
/// serving API implements it (the repository knows the file, not the requests in it).
pub trait WarmUp: Send + Sync + std::fmt::Debug {
    /// Replays the records of `file` on `model`; gives the number replayed.
    fn replay(&self, model: &dyn LoadedModel, file: &[u8]) -> Result<usize, WarmupError>;
}

/// Where the warmup file is, inside a version directory.
pub const WARMUP_FILE: &str = "assets.extra/tf_serving_warmup_requests";

/// The most records replayed; TF Serving refuses a warmup file with more.
pub const MAX_RECORDS: usize = 1000;

/// The largest warmup file read.
pub const MAX_WARMUP_BYTES: u64 = 256 << 20;

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

/// The warmup file of a version (TF Serving's `assets.extra/tf_serving_warmup_requests`), in
/// memory: sealed and bound to `<model>/<version>/assets.extra/tf_serving_warmup_requests` when
/// the server holds a model key (a plaintext one is then refused, as any plaintext model file
/// is), plaintext otherwise. `None` when the version has none.
pub(crate) fn read_warmup(
    dir: &Path,
    model: &str,
    version: i64,
    key: Option<&SealKey>,
) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, ModelFileError> {
    let plain = dir.join(WARMUP_FILE);
    let sealed = dir.join(format!("{WARMUP_FILE}{SEALED_SUFFIX}"));
    let read = |p: &Path| -> Result<zeroize::Zeroizing<Vec<u8>>, ModelFileError> {
        let io = |source| ModelFileError::Io {
            path: p.to_owned(),
            source,
        };
        let len = std::fs::metadata(p).map_err(io)?.len();
        if len > MAX_WARMUP_BYTES {
            return Err(ModelFileError::TooLarge {
                path: p.to_owned(),
                len,
            });
        }
        Ok(zeroize::Zeroizing::new(std::fs::read(p).map_err(io)?))
    };
    let Some(key) = key else {
        return if plain.is_file() {
            read(&plain).map(Some)
        } else {
            Ok(None)
        };
    };
    if plain.exists() {
        return Err(ModelFileError::PlaintextRefused { path: plain });
    }
    if !sealed.is_file() {
        return Ok(None);
    }
    let bytes = read(&sealed)?;
    let unseal = |source| ModelFileError::Unseal {
        path: sealed.clone(),
        source,
    };
    let (header, _) = stream::SealedHeader::parse(&bytes).map_err(unseal)?;
    let expected = binding::model_file(model, version, WARMUP_FILE);
    if header.name != expected {
        return Err(ModelFileError::WrongBinding {
            path: sealed,
            found: header.name,
            expected,
        });
    }
    let plaintext = stream::unseal_to_vec(key, &bytes, Some(&expected)).map_err(unseal)?;
    Ok(Some(plaintext))
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
