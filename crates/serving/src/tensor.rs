//! Tensors as requests carry them: TensorFlow's TensorProto (both the packed `tensor_content`
//! and the typed `*_val` fields, with the one-value-fills-the-shape rule), TF Serving's JSON
//! forms, and .npy files.
//!
//! Facts: TensorFlow `tensor.proto`, `tensor_util.py` (make_tensor_proto), TF Serving
//! `util/json_tensor.cc`; NumPy's "NPY format" specification (format 1.0-3.0).

use crate::proto::tensorflow::{tensor_shape_proto, DataType, TensorProto, TensorShapeProto};

/// The most elements a tensor may have (bounds memory for hostile shapes).
pub const MAX_ELEMENTS: usize = 1 << 28;

/// The most bytes a tensor is decoded into when the caller gives no bound of its own
/// ([`Tensor::from_proto`], [`from_json`]): one value may fill a shape of [`MAX_ELEMENTS`]
/// elements, so without a bound a message of a few bytes would ask for gigabytes.
pub const MAX_DECODED_BYTES: usize = 1 << 30;

/// Element types teeserve handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// float32
    F32,
    /// float64
    F64,
    /// int8
    I8,
    /// int16
    I16,
    /// int32
    I32,
    /// int64
    I64,
    /// uint8
    U8,
    /// uint16
    U16,
    /// uint32
    U32,
    /// uint64
    U64,
    /// bool
    Bool,
    /// bytes (DT_STRING)
    Str,
}

impl DType {
    /// TensorFlow's DataType.
    pub fn to_tf(self) -> DataType {
        match self {
            DType::F32 => DataType::DtFloat,
            DType::F64 => DataType::DtDouble,
            DType::I8 => DataType::DtInt8,
            DType::I16 => DataType::DtInt16,
            DType::I32 => DataType::DtInt32,
            DType::I64 => DataType::DtInt64,
            DType::U8 => DataType::DtUint8,
            DType::U16 => DataType::DtUint16,
            DType::U32 => DataType::DtUint32,
            DType::U64 => DataType::DtUint64,
            DType::Bool => DataType::DtBool,
            DType::Str => DataType::DtString,
        }
    }

    /// From TensorFlow's DataType number.
    pub fn from_tf(v: i32) -> Result<Self, String> {
        let dt = DataType::try_from(v).map_err(|_| format!("unknown tensor dtype {v}"))?;
        Ok(match dt {
            DataType::DtFloat => DType::F32,
            DataType::DtDouble => DType::F64,
            DataType::DtInt8 => DType::I8,
            DataType::DtInt16 => DType::I16,
            DataType::DtInt32 => DType::I32,
            DataType::DtInt64 => DType::I64,
            DataType::DtUint8 => DType::U8,
            DataType::DtUint16 => DType::U16,
            DataType::DtUint32 => DType::U32,
            DataType::DtUint64 => DType::U64,
            DataType::DtBool => DType::Bool,
            DataType::DtString => DType::Str,
            other => {
                return Err(format!(
                    "tensor dtype {} is not supported",
                    other.as_str_name()
                ))
            }
        })
    }

    /// TensorFlow's name (`DT_FLOAT`).
    pub fn tf_name(self) -> &'static str {
        self.to_tf().as_str_name()
    }

    /// A short name (`float`, `int64`), as TensorFlow prints dtypes in messages.
    pub fn short(self) -> &'static str {
        match self {
            DType::F32 => "float",
            DType::F64 => "double",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::Bool => "bool",
            DType::Str => "string",
        }
    }

    fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::Str => 0,
        }
    }

    /// Bytes one element takes in memory once decoded; a string's content comes on top of
    /// this (its `Vec` header).
    pub fn element_bytes(self) -> usize {
        match self {
            DType::Str => std::mem::size_of::<Vec<u8>>(),
            d => d.size(),
        }
    }
}

/// What a TensorProto declares, read without decoding its values: the dtype, the shape, and
/// the bytes the decoded tensor will take (one value filling the shape counts as the whole
/// shape). Every check that needs no allocation is made here: dtype, dimensions, and that the
/// values fill the shape or are one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// Element type.
    pub dtype: DType,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Bytes of the decoded tensor.
    pub bytes: usize,
}

/// Reads what a TensorProto declares ([`Declared`]) without allocating for its values.
pub fn declared(p: &TensorProto) -> Result<Declared, String> {
    let dtype = DType::from_tf(p.dtype)?;
    let shape_p = p.tensor_shape.as_ref();
    if shape_p.is_some_and(|s| s.unknown_rank) {
        return Err("tensor_shape has unknown rank".into());
    }
    let dims = shape_p.map(|s| s.dim.as_slice()).unwrap_or_default();
    let mut shape = Vec::with_capacity(dims.len());
    for d in dims {
        if d.size < 0 {
            return Err(format!("tensor_shape has a negative dimension {}", d.size));
        }
        shape.push(usize::try_from(d.size).map_err(|_| "dimension too large")?);
    }
    let n = element_count(&shape)?;
    let overflow = || format!("tensor of shape {} overflows memory", shape_str(&shape));
    let fixed = n.checked_mul(dtype.element_bytes()).ok_or_else(overflow)?;
    if !p.tensor_content.is_empty() {
        if dtype == DType::Str {
            return Err("DT_STRING tensors cannot use tensor_content".into());
        }
        if p.tensor_content.len() != fixed {
            return Err(format!(
                "tensor_content has {} bytes; shape {} of {} needs {fixed}",
                p.tensor_content.len(),
                shape_str(&shape),
                dtype.tf_name(),
            ));
        }
        return Ok(Declared {
            dtype,
            shape,
            bytes: fixed,
        });
    }
    let (what, count) = match dtype {
        DType::F32 => ("float_val", p.float_val.len()),
        DType::F64 => ("double_val", p.double_val.len()),
        DType::I8 | DType::I16 | DType::I32 | DType::U8 | DType::U16 => {
            ("int_val", p.int_val.len())
        }
        DType::I64 => ("int64_val", p.int64_val.len()),
        DType::U32 => ("uint32_val", p.uint32_val.len()),
        DType::U64 => ("uint64_val", p.uint64_val.len()),
        DType::Bool => ("bool_val", p.bool_val.len()),
        DType::Str => ("string_val", p.string_val.len()),
    };
    // version_number 0: a single value fills the whole shape.
    if count != n && count != 1 {
        return Err(format!(
            "{what} has {count} values; shape {} has {n} elements",
            shape_str(&shape)
        ));
    }
    let content = if dtype == DType::Str {
        if count == n {
            p.string_val.iter().map(Vec::len).sum::<usize>()
        } else {
            // Each element of the shape gets its own copy of the one string.
            p.string_val[0].len().checked_mul(n).ok_or_else(overflow)?
        }
    } else {
        0
    };
    let bytes = fixed.checked_add(content).ok_or_else(overflow)?;
    Ok(Declared {
        dtype,
        shape,
        bytes,
    })
}

/// Tensor elements.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// float32
    F32(Vec<f32>),
    /// float64
    F64(Vec<f64>),
    /// int8
    I8(Vec<i8>),
    /// int16
    I16(Vec<i16>),
    /// int32
    I32(Vec<i32>),
    /// int64
    I64(Vec<i64>),
    /// uint8
    U8(Vec<u8>),
    /// uint16
    U16(Vec<u16>),
    /// uint32
    U32(Vec<u32>),
    /// uint64
    U64(Vec<u64>),
    /// bool
    Bool(Vec<bool>),
    /// bytes
    Str(Vec<Vec<u8>>),
}

/// A dense tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Elements, row-major.
    pub data: Data,
}

macro_rules! each_data {
    ($d:expr, $v:ident => $e:expr) => {
        match $d {
            Data::F32($v) => $e,
            Data::F64($v) => $e,
            Data::I8($v) => $e,
            Data::I16($v) => $e,
            Data::I32($v) => $e,
            Data::I64($v) => $e,
            Data::U8($v) => $e,
            Data::U16($v) => $e,
            Data::U32($v) => $e,
            Data::U64($v) => $e,
            Data::Bool($v) => $e,
            Data::Str($v) => $e,
        }
    };
}

/// Number of elements of a shape, bounded.
pub fn element_count(shape: &[usize]) -> Result<usize, String> {
    let mut n: usize = 1;
    for &d in shape {
        n = n.checked_mul(d).ok_or("tensor shape overflows")?;
    }
    if n > MAX_ELEMENTS {
        return Err(format!(
            "tensor of {n} elements is larger than the {MAX_ELEMENTS} allowed"
        ));
    }
    Ok(n)
}

fn shape_str(shape: &[usize]) -> String {
    format!(
        "[{}]",
        shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

impl Tensor {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match &self.data {
            Data::F32(_) => DType::F32,
            Data::F64(_) => DType::F64,
            Data::I8(_) => DType::I8,
            Data::I16(_) => DType::I16,
            Data::I32(_) => DType::I32,
            Data::I64(_) => DType::I64,
            Data::U8(_) => DType::U8,
            Data::U16(_) => DType::U16,
            Data::U32(_) => DType::U32,
            Data::U64(_) => DType::U64,
            Data::Bool(_) => DType::Bool,
            Data::Str(_) => DType::Str,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        each_data!(&self.data, v => v.len())
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Builds a tensor, checking that the data fills the shape.
    pub fn new(shape: Vec<usize>, data: Data) -> Result<Self, String> {
        let n = element_count(&shape)?;
        let t = Tensor { shape, data };
        if t.len() != n {
            return Err(format!(
                "{} values do not fill shape {}",
                t.len(),
                shape_str(&t.shape)
            ));
        }
        Ok(t)
    }

    /// Decodes a TensorProto, refusing one that would take more than [`MAX_DECODED_BYTES`].
    pub fn from_proto(p: &TensorProto) -> Result<Self, String> {
        Self::from_proto_within(p, MAX_DECODED_BYTES)
    }

    /// Decodes a TensorProto whose decoded tensor takes at most `max_bytes`; what it declares
    /// is checked ([`declared`]) before anything is allocated for its values.
    pub fn from_proto_within(p: &TensorProto, max_bytes: usize) -> Result<Self, String> {
        let Declared {
            dtype,
            shape,
            bytes,
        } = declared(p)?;
        if bytes > max_bytes {
            return Err(format!(
                "shape {} of {} takes {bytes} bytes decoded, more than the {max_bytes} allowed",
                shape_str(&shape),
                dtype.tf_name()
            ));
        }
        let n = element_count(&shape)?;
        if !p.tensor_content.is_empty() {
            return Ok(Tensor {
                data: from_le_bytes(dtype, &p.tensor_content),
                shape,
            });
        }
        // `declared` has checked that there are n values or one.
        fn fill<T: Clone>(v: &[T], n: usize) -> Vec<T> {
            if v.len() == n {
                v.to_vec()
            } else {
                vec![v[0].clone(); n]
            }
        }
        // Narrowed before the fill, so that no i32 copy of the whole shape is made.
        fn narrow<T: TryFrom<i32>>(v: &[i32], what: &str) -> Result<Vec<T>, String> {
            v.iter()
                .map(|&x| T::try_from(x).map_err(|_| format!("{what} value {x} is out of range")))
                .collect()
        }
        let data = match dtype {
            DType::F32 => Data::F32(fill(&p.float_val, n)),
            DType::F64 => Data::F64(fill(&p.double_val, n)),
            DType::I32 => Data::I32(fill(&p.int_val, n)),
            DType::I16 => Data::I16(fill(&narrow(&p.int_val, "int_val")?, n)),
            DType::I8 => Data::I8(fill(&narrow(&p.int_val, "int_val")?, n)),
            DType::U8 => Data::U8(fill(&narrow(&p.int_val, "int_val")?, n)),
            DType::U16 => Data::U16(fill(&narrow(&p.int_val, "int_val")?, n)),
            DType::I64 => Data::I64(fill(&p.int64_val, n)),
            DType::U32 => Data::U32(fill(&p.uint32_val, n)),
            DType::U64 => Data::U64(fill(&p.uint64_val, n)),
            DType::Bool => Data::Bool(fill(&p.bool_val, n)),
            DType::Str => Data::Str(fill(&p.string_val, n)),
        };
        Ok(Tensor { shape, data })
    }

    /// Encodes as a TensorProto in the typed fields (TF Serving's default) or `tensor_content`.
    pub fn to_proto(&self, as_content: bool) -> TensorProto {
        let mut p = TensorProto {
            dtype: self.dtype().to_tf() as i32,
            tensor_shape: Some(TensorShapeProto {
                dim: self
                    .shape
                    .iter()
                    .map(|&d| tensor_shape_proto::Dim {
                        size: d as i64,
                        name: String::new(),
                    })
                    .collect(),
                unknown_rank: false,
            }),
            ..Default::default()
        };
        if as_content && self.dtype() != DType::Str {
            p.tensor_content = self.to_le_bytes().into();
            return p;
        }
        match &self.data {
            Data::F32(v) => p.float_val = v.clone(),
            Data::F64(v) => p.double_val = v.clone(),
            Data::I8(v) => p.int_val = v.iter().map(|&x| i32::from(x)).collect(),
            Data::I16(v) => p.int_val = v.iter().map(|&x| i32::from(x)).collect(),
            Data::I32(v) => p.int_val = v.clone(),
            Data::U8(v) => p.int_val = v.iter().map(|&x| i32::from(x)).collect(),
            Data::U16(v) => p.int_val = v.iter().map(|&x| i32::from(x)).collect(),
            Data::I64(v) => p.int64_val = v.clone(),
            Data::U32(v) => p.uint32_val = v.clone(),
            Data::U64(v) => p.uint64_val = v.clone(),
            Data::Bool(v) => p.bool_val = v.clone(),
            Data::Str(v) => p.string_val = v.clone(),
        }
        p
    }

    /// Little-endian bytes of the elements (not for strings).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        // Written into a sized buffer with a width known at compile time:
        // `flat_map(..).collect()` runs several times slower on image-sized tensors.
        fn le<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
            let mut out = vec![0u8; v.len() * N];
            for (o, x) in out.chunks_exact_mut(N).zip(v) {
                o.copy_from_slice(&f(*x));
            }
            out
        }
        macro_rules! le {
            ($v:expr) => {
                le($v, |x| x.to_le_bytes())
            };
        }
        match &self.data {
            Data::F32(v) => le!(v),
            Data::F64(v) => le!(v),
            Data::I8(v) => le!(v),
            Data::I16(v) => le!(v),
            Data::I32(v) => le!(v),
            Data::I64(v) => le!(v),
            Data::U8(v) => v.clone(),
            Data::U16(v) => le!(v),
            Data::U32(v) => le!(v),
            Data::U64(v) => le!(v),
            Data::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
            Data::Str(_) => Vec::new(),
        }
    }

    /// Rows `[start, end)` along dimension 0.
    pub fn slice_rows(&self, start: usize, end: usize) -> Tensor {
        let row: usize = self.shape.iter().skip(1).product();
        let mut shape = self.shape.clone();
        if let Some(d) = shape.first_mut() {
            *d = end - start;
        }
        let (a, b) = (start * row, end * row);
        let data = match &self.data {
            Data::F32(v) => Data::F32(v[a..b].to_vec()),
            Data::F64(v) => Data::F64(v[a..b].to_vec()),
            Data::I8(v) => Data::I8(v[a..b].to_vec()),
            Data::I16(v) => Data::I16(v[a..b].to_vec()),
            Data::I32(v) => Data::I32(v[a..b].to_vec()),
            Data::I64(v) => Data::I64(v[a..b].to_vec()),
            Data::U8(v) => Data::U8(v[a..b].to_vec()),
            Data::U16(v) => Data::U16(v[a..b].to_vec()),
            Data::U32(v) => Data::U32(v[a..b].to_vec()),
            Data::U64(v) => Data::U64(v[a..b].to_vec()),
            Data::Bool(v) => Data::Bool(v[a..b].to_vec()),
            Data::Str(v) => Data::Str(v[a..b].to_vec()),
        };
        Tensor { shape, data }
    }

    /// Concatenates tensors of the same dtype and trailing shape along dimension 0.
    pub fn concat_rows(parts: &[&Tensor]) -> Result<Tensor, String> {
        let first = parts.first().ok_or("nothing to concatenate")?;
        let mut shape = first.shape.clone();
        if shape.is_empty() {
            return Err("scalars cannot be batched".into());
        }
        let mut rows = 0;
        for p in parts {
            if p.dtype() != first.dtype() || p.shape.get(1..) != first.shape.get(1..) {
                return Err("batched tensors differ in dtype or shape".into());
            }
            rows += p.shape[0];
        }
        shape[0] = rows;
        macro_rules! cat {
            ($variant:ident) => {{
                let mut out = Vec::new();
                for p in parts {
                    if let Data::$variant(v) = &p.data {
                        out.extend_from_slice(v);
                    }
                }
                Data::$variant(out)
            }};
        }
        let data = match first.data {
            Data::F32(_) => cat!(F32),
            Data::F64(_) => cat!(F64),
            Data::I8(_) => cat!(I8),
            Data::I16(_) => cat!(I16),
            Data::I32(_) => cat!(I32),
            Data::I64(_) => cat!(I64),
            Data::U8(_) => cat!(U8),
            Data::U16(_) => cat!(U16),
            Data::U32(_) => cat!(U32),
            Data::U64(_) => cat!(U64),
            Data::Bool(_) => cat!(Bool),
            Data::Str(_) => cat!(Str),
        };
        Ok(Tensor { shape, data })
    }
}

fn from_le_bytes(dtype: DType, b: &[u8]) -> Data {
    macro_rules! de {
        ($t:ty, $n:expr) => {
            b.chunks_exact($n)
                .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or([0; $n])))
                .collect()
        };
    }
    match dtype {
        DType::F32 => Data::F32(de!(f32, 4)),
        DType::F64 => Data::F64(de!(f64, 8)),
        DType::I8 => Data::I8(b.iter().map(|&x| x as i8).collect()),
        DType::I16 => Data::I16(de!(i16, 2)),
        DType::I32 => Data::I32(de!(i32, 4)),
        DType::I64 => Data::I64(de!(i64, 8)),
        DType::U8 => Data::U8(b.to_vec()),
        DType::U16 => Data::U16(de!(u16, 2)),
        DType::U32 => Data::U32(de!(u32, 4)),
        DType::U64 => Data::U64(de!(u64, 8)),
        DType::Bool => Data::Bool(b.iter().map(|&x| x != 0).collect()),
        DType::Str => Data::Str(Vec::new()),
    }
}

/// Parses a .npy file (NumPy format versions 1-3, little-endian, C order).
pub fn from_npy(b: &[u8]) -> Result<Tensor, String> {
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
    let n = element_count(&shape)?;
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

// ---- JSON (TF Serving's REST forms) ----

use serde_json::Value;

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "Null",
        Value::Bool(_) => {
            if *v == Value::Bool(true) {
                "True"
            } else {
                "False"
            }
        }
        Value::Number(_) => "Number",
        Value::String(_) => "String",
        Value::Array(_) => "Array",
        Value::Object(_) => "Object",
    }
}

fn type_error(v: &Value, dtype: DType) -> String {
    format!(
        "JSON Value: {v} Type: {} is not of expected type: {}",
        json_type(v),
        dtype.short()
    )
}

/// The shape of a nested JSON list (following element 0, as TF Serving does).
pub fn json_shape(v: &Value) -> Vec<usize> {
    let mut shape = Vec::new();
    let mut cur = v;
    while let Value::Array(a) = cur {
        shape.push(a.len());
        match a.first() {
            Some(x) => cur = x,
            None => break,
        }
    }
    shape
}

fn is_b64(v: &Value) -> Option<&str> {
    match v {
        Value::Object(m) if m.len() == 1 => m.get("b64").and_then(Value::as_str),
        _ => None,
    }
}

/// Reads a float tensor straight from JSON text that is a regular nested list of plain numbers
/// (an image is some 150,000 of them, which as a JSON tree cost an allocation each). Gives
/// `None` for anything else: other dtypes, empty or ragged lists, strings, objects, `true`,
/// numbers out of range, nesting deeper than 32, more than [`MAX_ELEMENTS`] values, or text
/// that is not JSON. The caller then takes the general path ([`from_json`]), which gives the
/// same tensor where this one succeeds and TF Serving's error where it does not.
pub fn from_json_numbers(text: &str, dtype: DType) -> Option<Tensor> {
    from_json_numbers_within(text, dtype, MAX_DECODED_BYTES)
}

/// [`from_json_numbers`], giving `None` also for a tensor that would take more than
/// `max_bytes` (the general path then names the bound).
pub fn from_json_numbers_within(text: &str, dtype: DType, max_bytes: usize) -> Option<Tensor> {
    if !matches!(dtype, DType::F32 | DType::F64) {
        return None;
    }
    let max_elements = MAX_ELEMENTS.min(max_bytes / dtype.element_bytes());
    let mut p = NumberScanner {
        b: text.as_bytes(),
        i: 0,
    };
    // `shape[d]`: the length every list at depth d must have (set when the first one closes,
    // usize::MAX until then);
    // `counts[d]`: elements seen so far in the open list at depth d.
    let mut shape: Vec<usize> = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    let mut leaf_depth = None;
    // Stored at the tensor's width as they are read (f64 parsed, then narrowed, as the general
    // path does).
    let (mut f32s, mut f64s) = (Vec::<f32>::new(), Vec::<f64>::new());
    let narrow = dtype == DType::F32;
    let mut depth = 0usize;
    p.ws();
    if p.peek()? != b'[' {
        return None;
    }
    loop {
        // A value: a list opens, or a number.
        p.ws();
        if p.peek()? == b'[' {
            p.i += 1;
            depth += 1;
            if depth > 32 || leaf_depth.is_some_and(|d| depth > d) {
                return None;
            }
            if counts.len() < depth {
                counts.push(0);
            } else {
                counts[depth - 1] = 0;
            }
            p.ws();
            if p.peek()? == b']' {
                return None;
            }
            continue;
        }
        if *leaf_depth.get_or_insert(depth) != depth {
            return None;
        }
        let x = p.number()?;
        if narrow {
            f32s.push(x as f32);
        } else {
            f64s.push(x);
        }
        if f32s.len() + f64s.len() > max_elements {
            return None;
        }
        // After a value: the next element, or lists close.
        loop {
            counts[depth - 1] += 1;
            p.ws();
            match p.peek()? {
                b',' => {
                    p.i += 1;
                    break;
                }
                b']' => {
                    p.i += 1;
                    let (d, n) = (depth - 1, counts[depth - 1]);
                    if shape.len() <= d {
                        shape.resize(d + 1, usize::MAX);
                    }
                    if shape[d] == usize::MAX {
                        shape[d] = n;
                    } else if shape[d] != n {
                        return None;
                    }
                    depth -= 1;
                    if depth == 0 {
                        p.ws();
                        if p.i != p.b.len() || Some(shape.len()) != leaf_depth {
                            return None;
                        }
                        let data = if narrow {
                            Data::F32(f32s)
                        } else {
                            Data::F64(f64s)
                        };
                        return Some(Tensor { shape, data });
                    }
                }
                _ => return None,
            }
        }
    }
}

struct NumberScanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl NumberScanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn digits(&mut self, mut each: impl FnMut(u64)) -> usize {
        let start = self.i;
        while let Some(c @ b'0'..=b'9') = self.peek() {
            each(u64::from(c - b'0'));
            self.i += 1;
        }
        self.i - start
    }

    /// One JSON number (RFC 8259 section 6: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`).
    /// Up to 19 significant digits and a power of ten within 22 convert exactly as
    /// `mantissa * 10^e` or `mantissa / 10^e` (both operands exact, one rounding); other numbers
    /// go through the standard library's parser.
    fn number(&mut self) -> Option<f64> {
        const POW10: [f64; 23] = [
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
            1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
        ];
        let start = self.i;
        let neg = self.peek() == Some(b'-');
        if neg {
            self.i += 1;
        }
        let (mut mant, mut digits, mut exp10, mut exact) = (0u64, 0u32, 0i64, true);
        // Keeps a significant digit while 19 fit in the mantissa; says whether it did.
        let mut take = |d: u64| {
            let fits = digits < 19;
            if fits {
                mant = mant * 10 + d;
                digits += 1;
            }
            exact &= fits;
            fits
        };
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits(|d| {
                    take(d);
                });
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            let mut kept = 0;
            if self.digits(|d| kept += i64::from(take(d))) == 0 {
                return None;
            }
            exp10 -= kept;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            let eneg = match self.peek() {
                Some(b'-') => {
                    self.i += 1;
                    true
                }
                Some(b'+') => {
                    self.i += 1;
                    false
                }
                _ => false,
            };
            let mut e: i64 = 0;
            if self.digits(|d| e = (e * 10 + d as i64).min(1 << 20)) == 0 {
                return None;
            }
            exp10 += if eneg { -e } else { e };
        }
        if exact && mant < (1 << 53) && exp10.abs() <= 22 {
            let m = mant as f64;
            let v = if exp10 >= 0 {
                m * POW10[exp10 as usize]
            } else {
                m / POW10[(-exp10) as usize]
            };
            return Some(if neg { -v } else { v });
        }
        let v: f64 = std::str::from_utf8(&self.b[start..self.i])
            .ok()?
            .parse()
            .ok()?;
        v.is_finite().then_some(v)
    }
}

/// Builds a tensor of `dtype` from a JSON value or nested list, refusing one that would take
/// more than [`MAX_DECODED_BYTES`].
pub fn from_json(v: &Value, dtype: DType) -> Result<Tensor, String> {
    from_json_within(v, dtype, MAX_DECODED_BYTES)
}

/// Builds a tensor of `dtype` from a JSON value or nested list whose decoded tensor takes at
/// most `max_bytes`. The shape read off the first element of each list is checked against
/// every list before anything is allocated for the elements.
pub fn from_json_within(v: &Value, dtype: DType, max_bytes: usize) -> Result<Tensor, String> {
    let shape = json_shape(v);
    let n = element_count(&shape)?;
    let mut content = 0usize;
    leaves(v, &shape, 0, &mut |x| {
        if dtype == DType::Str {
            // Decoded base64 is shorter than its text; a plain string is its text.
            let len = is_b64(x).map(str::len).or_else(|| x.as_str().map(str::len));
            content = content.saturating_add(len.unwrap_or(0));
        }
    })?;
    let bytes = n
        .saturating_mul(dtype.element_bytes())
        .saturating_add(content);
    if bytes > max_bytes {
        return Err(format!(
            "shape {} of {} takes {bytes} bytes decoded, more than the {max_bytes} allowed",
            shape_str(&shape),
            dtype.tf_name()
        ));
    }
    // The lists are regular: there are exactly n leaves.
    let mut flat: Vec<&Value> = Vec::with_capacity(n);
    leaves(v, &shape, 0, &mut |x| flat.push(x))?;
    macro_rules! conv {
        ($variant:ident, $f:expr) => {
            Data::$variant(
                flat.iter()
                    .map(|x| $f(*x).ok_or_else(|| type_error(x, dtype)))
                    .collect::<Result<_, _>>()?,
            )
        };
    }
    fn int<T: TryFrom<i64>>(x: &Value) -> Option<T> {
        x.as_i64().and_then(|i| T::try_from(i).ok())
    }
    let data = match dtype {
        DType::F32 => conv!(F32, |x: &Value| x.as_f64().map(|f| f as f32)),
        DType::F64 => conv!(F64, |x: &Value| x.as_f64()),
        DType::I8 => conv!(I8, int::<i8>),
        DType::I16 => conv!(I16, int::<i16>),
        DType::I32 => conv!(I32, int::<i32>),
        DType::I64 => conv!(I64, |x: &Value| x.as_i64()),
        DType::U8 => conv!(U8, int::<u8>),
        DType::U16 => conv!(U16, int::<u16>),
        DType::U32 => conv!(U32, |x: &Value| x
            .as_u64()
            .and_then(|u| u32::try_from(u).ok())),
        DType::U64 => conv!(U64, |x: &Value| x.as_u64()),
        DType::Bool => conv!(Bool, |x: &Value| x.as_bool()),
        DType::Str => Data::Str(
            flat.iter()
                .map(|x| match (x, is_b64(x)) {
                    (_, Some(b)) => {
                        use base64::Engine;
                        base64::engine::general_purpose::STANDARD
                            .decode(b)
                            .map_err(|e| format!("Unable to base64 decode: {e}"))
                    }
                    (Value::String(s), None) => Ok(s.clone().into_bytes()),
                    _ => Err(type_error(x, dtype)),
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    if dtype != DType::Str {
        if let Some(x) = flat.iter().find(|x| is_b64(x).is_some()) {
            return Err(type_error(x, dtype));
        }
    }
    Ok(Tensor { shape, data })
}

/// Calls `f` on each leaf of a nested list of this shape, in order; an error for a list of
/// another length, a list where a leaf belongs, or a leaf where a list belongs.
fn leaves<'a>(
    v: &'a Value,
    shape: &[usize],
    depth: usize,
    f: &mut impl FnMut(&'a Value),
) -> Result<(), String> {
    if depth == shape.len() {
        if v.is_array() {
            return Err("Encountered list at unexpected size".into());
        }
        f(v);
        return Ok(());
    }
    match v {
        Value::Array(a) if a.len() == shape[depth] => {
            for x in a {
                leaves(x, shape, depth + 1, f)?;
            }
            Ok(())
        }
        Value::Array(a) => Err(format!(
            "Encountered list at unexpected size: {} at dimension {depth}, expected {}",
            a.len(),
            shape[depth]
        )),
        _ => Err(format!(
            "Expecting a list at dimension {depth}, found a scalar (ragged input)"
        )),
    }
}

/// Writes element `i` of a tensor as JSON text; `b64` writes strings as `{"b64": ...}`.
fn write_elem(t: &Tensor, i: usize, b64: bool, out: &mut String) {
    use std::fmt::Write;
    // Written in place (an image is some 150,000 of them): Rust's shortest representation,
    // with ".0" added to whole numbers as TF Serving writes floats.
    fn float(out: &mut String, f: f64, x: impl std::fmt::Display) {
        if f.is_nan() {
            out.push_str("NaN");
        } else if f.is_infinite() {
            out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        } else {
            let start = out.len();
            let _ = write!(out, "{x}");
            if !out[start..].contains(['.', 'e', 'E']) {
                out.push_str(".0");
            }
        }
    }
    match &t.data {
        Data::F32(v) => float(out, f64::from(v[i]), v[i]),
        Data::F64(v) => float(out, v[i], v[i]),
        Data::I8(v) => {
            let _ = write!(out, "{}", v[i]);
        }
        Data::I16(v) => {
            let _ = write!(out, "{}", v[i]);
        }
        Data::I32(v) => {
            let _ = write!(out, "{}", v[i]);
        }
        Data::I64(v) => {
            let _ = write!(out, "{}", v[i]);
        }
        Data::U8(v) => {
            let _ = write!(out, "{}", v[i]);
        }
        Data::U16(v) => {
            let _ = write!(out, "{}", v[i]);
        }
        Data::U32(v) => {
            let _ = write!(out, "{}", v[i]);
        }
        Data::U64(v) => {
            let _ = write!(out, "{}", v[i]);
        }
        Data::Bool(v) => out.push_str(if v[i] { "true" } else { "false" }),
        Data::Str(v) => {
            if b64 {
                use base64::Engine;
                let _ = write!(
                    out,
                    "{{\"b64\": \"{}\"}}",
                    base64::engine::general_purpose::STANDARD.encode(&v[i])
                );
            } else {
                out.push_str(
                    &Value::String(String::from_utf8_lossy(&v[i]).into_owned()).to_string(),
                );
            }
        }
    }
}

/// Writes a tensor (or one row of it, when `row` is given) as nested JSON lists.
pub fn write_json(t: &Tensor, row: Option<usize>, b64: bool, out: &mut String) {
    write_nested(t, row, out, &|t, i, out| write_elem(t, i, b64, out));
}

/// Writes a tensor as nested JSON lists for a request body: as [`write_json`], except that
/// finite floats are written in their shortest form with an exponent where that is shorter
/// (`1e-7`), which takes a third of the time on an image. Any JSON reader reads the same
/// numbers back.
pub fn write_json_request(t: &Tensor, out: &mut String) {
    write_nested(t, None, out, &|t, i, out| match &t.data {
        Data::F32(v) if v[i].is_finite() => out.push_str(ryu::Buffer::new().format_finite(v[i])),
        Data::F64(v) if v[i].is_finite() => out.push_str(ryu::Buffer::new().format_finite(v[i])),
        _ => write_elem(t, i, false, out),
    });
}

fn write_nested(
    t: &Tensor,
    row: Option<usize>,
    out: &mut String,
    elem: &dyn Fn(&Tensor, usize, &mut String),
) {
    let (shape, offset) = match row {
        Some(r) => {
            let rest: Vec<usize> = t.shape.iter().skip(1).copied().collect();
            let n: usize = rest.iter().product();
            (rest, r * n)
        }
        None => (t.shape.clone(), 0),
    };
    fn rec(
        t: &Tensor,
        shape: &[usize],
        off: usize,
        out: &mut String,
        elem: &dyn Fn(&Tensor, usize, &mut String),
    ) {
        match shape.split_first() {
            None => elem(t, off, out),
            Some((&d, rest)) => {
                let stride: usize = rest.iter().product();
                out.push('[');
                for i in 0..d {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    rec(t, rest, off + i * stride, out, elem);
                }
                out.push(']');
            }
        }
    }
    rec(t, &shape, offset, out, elem);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_fills_the_shape() {
        let p = TensorProto {
            dtype: DataType::DtFloat as i32,
            tensor_shape: Some(TensorShapeProto {
                dim: vec![
                    tensor_shape_proto::Dim {
                        size: 2,
                        name: String::new(),
                    },
                    tensor_shape_proto::Dim {
                        size: 3,
                        name: String::new(),
                    },
                ],
                unknown_rank: false,
            }),
            float_val: vec![1.5],
            ..Default::default()
        };
        let t = Tensor::from_proto(&p).unwrap();
        assert_eq!(t.data, Data::F32(vec![1.5; 6]));
        let c = t.to_proto(true);
        assert_eq!(Tensor::from_proto(&c).unwrap(), t);
    }

    #[test]
    fn floats_are_written_as_tf_serving_writes_them() {
        let t = Tensor {
            shape: vec![2, 4],
            data: Data::F32(vec![
                1.0,
                0.5,
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                -3.0,
                1e-7,
                0.1,
            ]),
        };
        let mut s = String::new();
        write_json(&t, None, false, &mut s);
        assert_eq!(
            s,
            "[[1.0, 0.5, NaN, Infinity], [-Infinity, -3.0, 0.0000001, 0.1]]"
        );
        let mut row = String::new();
        write_json(&t, Some(1), false, &mut row);
        assert_eq!(row, "[-Infinity, -3.0, 0.0000001, 0.1]");
        let d = Tensor {
            shape: vec![2],
            data: Data::F64(vec![2.0, 0.25]),
        };
        let mut s = String::new();
        write_json(&d, None, false, &mut s);
        assert_eq!(s, "[2.0, 0.25]");
    }

    #[test]
    fn request_bodies_carry_the_same_numbers_in_fewer_characters() {
        let t = Tensor {
            shape: vec![2, 3],
            data: Data::F32(vec![1.0, 1e-7, 0.1, -2.5e30, f32::MAX, f32::MIN_POSITIVE]),
        };
        let mut s = String::new();
        write_json_request(&t, &mut s);
        assert_eq!(
            s,
            "[[1.0, 1e-7, 0.1], [-2.5e30, 3.4028235e38, 1.1754944e-38]]"
        );
        let back = from_json(&serde_json::from_str(&s).unwrap(), DType::F32).unwrap();
        assert_eq!(back, t);
        assert_eq!(from_json_numbers(&s, DType::F32).unwrap(), t);
        let odd = Tensor {
            shape: vec![3],
            data: Data::F64(vec![f64::NAN, f64::INFINITY, 0.5]),
        };
        let mut s = String::new();
        write_json_request(&odd, &mut s);
        assert_eq!(s, "[NaN, Infinity, 0.5]");
        let ints = Tensor {
            shape: vec![2],
            data: Data::I64(vec![-3, 7]),
        };
        let mut s = String::new();
        write_json_request(&ints, &mut s);
        assert_eq!(s, "[-3, 7]");
    }

    #[test]
    fn numeric_json_is_read_directly_as_the_general_path_reads_it() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut cases: Vec<String> = [
            "[1, 2, 3]",
            " [ [0.5 , -0.25],[1e3,\t2E-3] ]\n",
            "[[[0, -0.0], [10, 1e22]], [[1e-22, 123456789012345678901234], [0.1, 3.4028235e38]]]",
            "[9007199254740993, 0.30000000000000004, 1.7976931348623157e308, 5e-324]",
            "[12345678901234567890.5e-3, 0.0000000000000000000000000001]",
        ]
        .map(String::from)
        .to_vec();
        for _ in 0..50 {
            let (a, b) = (1 + rnd() as usize % 5, 1 + rnd() as usize % 4);
            let mut s = String::from("[");
            for i in 0..a {
                s.push_str(if i > 0 { ", [" } else { "[" });
                for j in 0..b {
                    if j > 0 {
                        s.push(',');
                    }
                    let f = f32::from_bits(rnd() as u32);
                    let f = if f.is_finite() { f } else { 1.5 };
                    match rnd() % 3 {
                        0 => s.push_str(&f.to_string()),
                        1 => s.push_str(&format!("{f:e}")),
                        _ => s.push_str(&(rnd() as i32).to_string()),
                    }
                }
                s.push(']');
            }
            s.push(']');
            cases.push(s);
        }
        for text in &cases {
            let v: Value = serde_json::from_str(text).unwrap();
            for dtype in [DType::F32, DType::F64] {
                let fast = from_json_numbers(text, dtype)
                    .unwrap_or_else(|| panic!("{text}: not read directly"));
                let slow = from_json(&v, dtype).unwrap();
                assert_eq!(fast.shape, slow.shape, "{text}");
                match (&fast.data, &slow.data) {
                    (Data::F32(a), Data::F32(b)) => assert_eq!(a, b, "{text}"),
                    (Data::F64(a), Data::F64(b)) => {
                        for (x, y) in a.iter().zip(b) {
                            assert!(
                                x == y || (x - y).abs() <= y.abs() * 1e-15,
                                "{text}: {x} {y}"
                            );
                        }
                    }
                    _ => panic!("{text}: dtypes differ"),
                }
            }
        }
    }

    #[test]
    fn json_that_is_not_a_regular_list_of_numbers_takes_the_general_path() {
        for text in [
            "",
            "5",
            "[]",
            "[[]]",
            "[[1], []]",
            "[[1, 2], [3]]",
            "[[1], 2]",
            "[1, [2]]",
            "[1, \"2\"]",
            "[true]",
            "[null]",
            "[{\"b64\": \"AA==\"}]",
            "[NaN]",
            "[Infinity]",
            "[1e400]",
            "[-1e400]",
            "[01]",
            "[1.]",
            "[.5]",
            "[-]",
            "[+1]",
            "[1e]",
            "[1e+]",
            "[0x10]",
            "[1,]",
            "[1 2]",
            "[1] x",
            "[1",
            "[[1]",
            "[1]]",
            "{\"a\": [1]}",
        ] {
            assert!(from_json_numbers(text, DType::F32).is_none(), "{text:?}");
        }
        let deep = format!("{}1{}", "[".repeat(33), "]".repeat(33));
        assert!(from_json_numbers(&deep, DType::F32).is_none());
        assert!(from_json_numbers(
            &format!("{}1{}", "[".repeat(32), "]".repeat(32)),
            DType::F32
        )
        .is_some());
        assert!(
            from_json_numbers("[1, 2]", DType::I32).is_none(),
            "floats only"
        );
        assert!(from_json_numbers("[1, 2]", DType::Str).is_none());
    }

    #[test]
    fn ragged_json_is_refused() {
        let v: Value = serde_json::from_str("[[1, 2], [3]]").unwrap();
        assert!(from_json(&v, DType::F32)
            .unwrap_err()
            .contains("unexpected size"));
        let v: Value = serde_json::from_str("[[1, 2], [3, \"x\"]]").unwrap();
        assert!(from_json(&v, DType::F32)
            .unwrap_err()
            .contains("is not of expected type: float"));
    }

    #[test]
    fn json_output_formats_floats_like_tf_serving() {
        let t = Tensor::new(vec![2], Data::F32(vec![1.0, 0.25])).unwrap();
        let mut s = String::new();
        write_json(&t, None, false, &mut s);
        assert_eq!(s, "[1.0, 0.25]");
    }
}
