//! .npy files (NumPy's "NPY format" specification, format versions 1.0-3.0).

use super::*;

/// Parses a .npy file (NumPy format versions 1-3, little-endian, C order).
pub fn from_npy(b: &[u8]) -> Result<Tensor, TensorError> {
    from_npy_text(b).map_err(TensorError::Npy)
}

fn from_npy_text(b: &[u8]) -> Result<Tensor, String> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (magic \\x93NUMPY missing)".into());
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(format!(".npy version {v} is not supported")),
    };
    let header = b.get(start..start + hlen).ok_or(".npy header truncated")?;
    let header = std::str::from_utf8(header).map_err(|_| ".npy header is not text")?;
    let field = |k: &str| -> Option<&str> {
        let at = header.find(&format!("'{k}'"))? + k.len() + 2;
        let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr").ok_or(".npy header has no descr")?;
    let descr = descr
        .trim_start_matches('\'')
        .split('\'')
        .next()
        .unwrap_or("");
    if field("fortran_order")
        .map(|f| f.starts_with("True"))
        .unwrap_or(false)
    {
        return Err(".npy arrays in Fortran order are not supported".into());
    }
    let shape_s = field("shape").ok_or(".npy header has no shape")?;
    let inner = shape_s
        .trim_start_matches('(')
        .split(')')
        .next()
        .unwrap_or("");
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!(".npy shape {inner:?} is not numeric"))
        })
        .collect::<Result<_, _>>()?;
    let dtype = match descr {
        "<f2" => DType::F16,
        "<c8" => DType::C64,
        "<c16" => DType::C128,
        "<f4" => DType::F32,
        "<f8" => DType::F64,
        "|i1" => DType::I8,
        "<i2" => DType::I16,
        "<i4" => DType::I32,
        "<i8" => DType::I64,
        "|u1" => DType::U8,
        "<u2" => DType::U16,
        "<u4" => DType::U32,
        "<u8" => DType::U64,
        "|b1" => DType::Bool,
        d => {
            return Err(format!(
                ".npy dtype {d:?} is not supported (little-endian numbers and bool)"
            ))
        }
    };
    let n = element_count(&shape).map_err(|e| e.to_string())?;
    let body = &b[start + hlen..];
    if body.len() != n * dtype.size() {
        return Err(format!(
            ".npy data has {} bytes; shape {} needs {}",
            body.len(),
            shape_str(&shape),
            n * dtype.size()
        ));
    }
    Ok(Tensor {
        data: from_le_bytes(dtype, body),
        shape,
    })
}
