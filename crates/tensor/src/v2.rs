//! The Open Inference Protocol's ("KServe v2") forms of tensors: its datatype names, the binary
//! form (the binary tensor data extension over REST and `raw_input_contents` /
//! `raw_output_contents` over gRPC: the elements little-endian in row-major order, each BYTES
//! element a 4-byte little-endian length and then its bytes, BOOL one byte), and the JSON
//! `data` member (the elements in row-major order, as a flat or a nested list).
//!
//! Facts: the protocol's `required_api.md` ("Tensor Data Types", "Tensor Data") in
//! github.com/kserve/open-inference-protocol, and Triton's `docs/protocol/extension_binary_data.md`.

use serde_json::Value;

use super::*;

/// The protocol's name of a datatype (`FP32`); `None` for the complex types, which it has no
/// name for.
pub fn datatype(d: DType) -> Option<&'static str> {
    Some(match d {
        DType::Bool => "BOOL",
        DType::U8 => "UINT8",
        DType::U16 => "UINT16",
        DType::U32 => "UINT32",
        DType::U64 => "UINT64",
        DType::I8 => "INT8",
        DType::I16 => "INT16",
        DType::I32 => "INT32",
        DType::I64 => "INT64",
        DType::F16 => "FP16",
        DType::BF16 => "BF16",
        DType::F32 => "FP32",
        DType::F64 => "FP64",
        DType::Str => "BYTES",
        DType::C64 | DType::C128 => return None,
    })
}

/// The datatype the protocol names `name`.
pub fn from_datatype(name: &str) -> Result<DType, TensorError> {
    const ALL: [DType; 14] = [
        DType::Bool,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F64,
        DType::Str,
    ];
    ALL.into_iter()
        .find(|&d| datatype(d) == Some(name))
        .ok_or_else(|| {
            TensorError::Dtype(format!(
                "datatype {:?} is not one of the protocol's (BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, BF16, FP32, FP64, BYTES)",
                name.chars().take(32).collect::<String>()
            ))
        })
}

/// A shape as the protocol sends it (`int64`s), refusing negative dimensions and shapes of more
/// than [`MAX_ELEMENTS`] elements.
pub fn shape(dims: &[i64]) -> Result<Vec<usize>, TensorError> {
    if dims.len() > MAX_RANK {
        return Err(TensorError::Shape(format!(
            "a shape of {} dimensions has more than the {MAX_RANK} allowed",
            dims.len()
        )));
    }
    let shape = dims
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| TensorError::Shape(format!("shape {dims:?} has a negative dimension")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    element_count(&shape)?;
    Ok(shape)
}

/// The most dimensions a shape may have.
pub const MAX_RANK: usize = 32;

/// The length of the binary form of `n` elements of `dtype`; `None` for BYTES, whose
/// elements carry their own lengths.
pub fn raw_len(dtype: DType, n: usize) -> Option<usize> {
    (dtype != DType::Str).then(|| n.saturating_mul(dtype.size()))
}

/// A tensor of `dtype` and `shape` from its binary form. The length must be the shape's
/// (for BYTES: the elements' length prefixes must account for every byte, no more, no less).
pub fn from_raw(dtype: DType, shape: Vec<usize>, raw: &[u8]) -> Result<Tensor, TensorError> {
    let n = element_count(&shape)?;
    let data = match raw_len(dtype, n) {
        Some(len) if len != raw.len() => {
            return Err(TensorError::Shape(format!(
                "{} bytes of binary data, but shape {} of {} takes {len}",
                raw.len(),
                shape_str(&shape),
                datatype(dtype).unwrap_or("?")
            )))
        }
        Some(_) if dtype == DType::Bool => bools(raw)?,
        Some(_) => from_le_bytes(dtype, raw),
        None => Data::Str(bytes_elements(raw, n)?),
    };
    Ok(Tensor { shape, data })
}

/// The elements of a BYTES tensor's binary form: `n` of them, each a 4-byte little-endian
/// length and its bytes, filling `raw` exactly.
fn bytes_elements(mut raw: &[u8], n: usize) -> Result<Vec<Vec<u8>>, TensorError> {
    // Each element takes at least its 4-byte length: a count the bytes cannot hold is refused
    // before anything is allocated for it.
    if n > raw.len() / 4 {
        return Err(TensorError::Shape(format!(
            "{} bytes of binary data cannot hold {n} BYTES elements (each takes 4 bytes or more)",
            raw.len()
        )));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (len, rest) = raw
            .split_first_chunk::<4>()
            .ok_or_else(|| bytes_error(i, "its 4-byte length is cut off"))?;
        let len = u32::from_le_bytes(*len) as usize;
        let elem = rest
            .get(..len)
            .ok_or_else(|| bytes_error(i, &format!("its {len} bytes are cut off")))?;
        out.push(elem.to_vec());
        raw = &rest[len..];
    }
    if !raw.is_empty() {
        return Err(TensorError::Shape(format!(
            "{} bytes of binary data are left after the {n} BYTES elements of the shape",
            raw.len()
        )));
    }
    Ok(out)
}

fn bytes_error(i: usize, what: &str) -> TensorError {
    TensorError::Value(format!("BYTES element {i} of the binary data: {what}"))
}

/// The length of a tensor's binary form.
pub fn raw_byte_len(t: &Tensor) -> usize {
    match &t.data {
        Data::Str(v) => v.iter().map(|e| 4 + e.len()).sum(),
        _ => t.le_byte_len(),
    }
}

/// Appends a tensor's binary form to `out`; `None` (nothing written) for a BYTES element
/// longer than its 4-byte length can say, or a complex tensor.
pub fn write_raw(t: &Tensor, out: &mut Vec<u8>) -> Option<()> {
    datatype(t.dtype())?;
    match &t.data {
        Data::Str(v) => {
            let lens = v
                .iter()
                .map(|e| u32::try_from(e.len()).ok())
                .collect::<Option<Vec<_>>>()?;
            out.reserve(raw_byte_len(t));
            for (e, len) in v.iter().zip(lens) {
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(e);
            }
        }
        Data::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        _ => {
            let start = out.len();
            out.resize(start + t.le_byte_len(), 0);
            t.write_le_bytes(&mut out[start..]);
        }
    }
    Some(())
}

/// A tensor of `dtype` and `shape` from a JSON `data` member: the elements in row-major order,
/// flat or nested (a nested list must be regular). Refuses one that would take more than
/// `max_bytes` before its elements are read.
pub fn from_json_data(
    v: &Value,
    dtype: DType,
    shape: Vec<usize>,
    max_bytes: usize,
) -> Result<Tensor, TensorError> {
    let n = element_count(&shape)?;
    let t = json::from_json_within(v, dtype, max_bytes)?;
    if t.len() != n {
        return Err(TensorError::Shape(format!(
            "data holds {} values, but shape {} has {n}",
            t.len(),
            shape_str(&shape)
        )));
    }
    // Nested data is the tensor itself (the protocol's "tensor data" is row-major, flat or
    // nested as the shape): nesting that contradicts the declared shape is refused, not read
    // as some other arrangement of the same values.
    if t.shape.len() > 1 && t.shape != shape {
        return Err(TensorError::Shape(format!(
            "data is nested as {}, but shape is {}: give the values flat, or nested as the shape",
            shape_str(&t.shape),
            shape_str(&shape)
        )));
    }
    Ok(Tensor {
        shape,
        data: t.data,
    })
}

/// Writes a tensor's elements as a flat JSON list (the form Triton answers with). Refuses,
/// writing nothing, a tensor JSON cannot carry as it is: a float that is NaN or infinite (JSON
/// has no such number), or BYTES that are not UTF-8 text (a JSON string would change them);
/// the binary form carries both.
pub fn write_json_data(t: &Tensor, out: &mut String) -> Result<(), TensorError> {
    let finite = match &t.data {
        Data::F32(v) => v.iter().all(|x| x.is_finite()),
        Data::F64(v) => v.iter().all(|x| x.is_finite()),
        Data::F16(v) => v.iter().all(|x| x.is_finite()),
        Data::BF16(v) => v.iter().all(|x| x.is_finite()),
        Data::Str(v) => {
            if v.iter().any(|e| std::str::from_utf8(e).is_err()) {
                return Err(TensorError::Value(
                    "holds bytes that are not UTF-8, which a JSON string cannot carry; ask for it as binary data".into(),
                ));
            }
            true
        }
        _ => true,
    };
    if !finite {
        return Err(TensorError::Value(
            "holds NaN or an infinity, which JSON has no number for; ask for it as binary data"
                .into(),
        ));
    }
    json::write_flat(t, out);
    Ok(())
}

/// Checks the elements of a BOOL tensor's binary form: each byte 0 or 1.
fn bools(raw: &[u8]) -> Result<Data, TensorError> {
    match raw.iter().position(|&b| b > 1) {
        Some(i) => Err(TensorError::Value(format!(
            "BOOL element {i} of the binary data is {}, not 0 or 1",
            raw[i]
        ))),
        None => Ok(Data::Bool(raw.iter().map(|&b| b == 1).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in [DType::Bool, DType::U8, DType::F16, DType::F64, DType::Str] {
            assert_eq!(from_datatype(datatype(d).unwrap()).unwrap(), d);
        }
        assert!(datatype(DType::C64).is_none());
        let e = from_datatype("FLOAT32").unwrap_err().to_string();
        assert!(e.contains("FLOAT32") && e.contains("FP32"), "{e}");
    }

    #[test]
    fn shapes_are_bounded() {
        assert_eq!(shape(&[2, 3]).unwrap(), vec![2, 3]);
        assert!(shape(&[-1, 3])
            .unwrap_err()
            .to_string()
            .contains("negative"));
        assert!(shape(&[1 << 20, 1 << 20]).is_err());
        assert!(shape(&[1; 33]).is_err());
    }

    #[test]
    fn raw_round_trips() {
        for t in [
            Tensor::new(vec![2, 2], Data::F32(vec![1.0, -2.5, 3.0, 4.0])).unwrap(),
            Tensor::new(vec![3], Data::Bool(vec![true, false, true])).unwrap(),
            Tensor::new(vec![2], Data::Str(vec![b"ab".to_vec(), vec![]])).unwrap(),
            Tensor::new(vec![2], Data::I64(vec![-1, 1 << 40])).unwrap(),
        ] {
            let mut raw = Vec::new();
            write_raw(&t, &mut raw).unwrap();
            assert_eq!(raw.len(), raw_byte_len(&t));
            assert_eq!(from_raw(t.dtype(), t.shape.clone(), &raw).unwrap(), t);
        }
    }

    #[test]
    fn raw_lengths_are_checked() {
        let e = from_raw(DType::F32, vec![2, 2], &[0; 15]).unwrap_err();
        assert!(e.to_string().contains("15 bytes"), "{e}");
        // A length prefix that runs past the end, bytes left over, and a count the bytes
        // cannot hold.
        assert!(from_raw(DType::Str, vec![1], &[9, 0, 0, 0, 1]).is_err());
        assert!(from_raw(DType::Str, vec![1], &[1, 0, 0, 0, 1, 2]).is_err());
        let e = from_raw(DType::Str, vec![1 << 20], &[0; 8]).unwrap_err();
        assert!(e.to_string().contains("cannot hold"), "{e}");
        let e = from_raw(DType::Bool, vec![2], &[1, 7]).unwrap_err();
        assert!(e.to_string().contains("is 7"), "{e}");
    }

    #[test]
    fn json_data_flat_or_nested() {
        let flat = serde_json::json!([1, 2, 3, 4, 5, 6]);
        let nested = serde_json::json!([[1, 2, 3], [4, 5, 6]]);
        let a = from_json_data(&flat, DType::I32, vec![2, 3], 1 << 20).unwrap();
        let b = from_json_data(&nested, DType::I32, vec![2, 3], 1 << 20).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.shape, vec![2, 3]);
        let e = from_json_data(&flat, DType::I32, vec![2, 2], 1 << 20).unwrap_err();
        assert!(e.to_string().contains("6 values"), "{e}");
        // Nesting that contradicts the shape is refused, naming both.
        let e = from_json_data(&nested, DType::I32, vec![3, 2], 1 << 20).unwrap_err();
        assert!(
            e.to_string()
                .contains("nested as [2,3], but shape is [3,2]"),
            "{e}"
        );
        let e = from_json_data(&nested, DType::I32, vec![6], 1 << 20).unwrap_err();
        assert!(e.to_string().contains("nested as [2,3]"), "{e}");
        let mut s = String::new();
        write_json_data(&a, &mut s).unwrap();
        assert_eq!(s, "[1,2,3,4,5,6]");
        // What JSON cannot carry is refused, not changed.
        let nan = Tensor::new(vec![2], Data::F32(vec![1.0, f32::NAN])).unwrap();
        assert!(write_json_data(&nan, &mut String::new()).is_err());
        let bin = Tensor::new(vec![1], Data::Str(vec![vec![0xff, 0]])).unwrap();
        assert!(write_json_data(&bin, &mut String::new()).is_err());
    }
}
