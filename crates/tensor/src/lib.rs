//! Tensors as requests carry them, and the signatures that say which a model takes: TensorFlow's TensorProto (both the packed `tensor_content`
//! and the typed `*_val` fields, with the one-value-fills-the-shape rule), TF Serving's JSON
//! forms, the Open Inference Protocol's forms ([`v2`]), and .npy files.
//!
//! Facts: TensorFlow `tensor.proto`, `tensor_util.py` (make_tensor_proto), TF Serving
//! `util/json_tensor.cc`; NumPy's "NPY format" specification (format 1.0-3.0).

#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

mod json;
mod json_numbers;
mod npy;
mod proto;
mod signature;
pub mod v2;

pub use json::{
    from_json, from_json_within, json_shape, write_json, write_json_inputs, write_json_request,
    write_json_string,
};
pub use json_numbers::{from_json_numbers, from_json_numbers_within};
pub use npy::from_npy;
pub use proto::{declared, Declared};
pub use signature::{
    signature_def, Signature, Signatures, TensorSpec, DEFAULT_SIGNATURE, PREDICT_METHOD,
};

use teeserve_wire::tensorflow::DataType;

/// Why bytes, JSON or a TensorProto do not make a tensor. The message is TF Serving's where it
/// has one (requesters and their tests read it); the variant says which kind of fault it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    /// An unknown or unsupported element type.
    #[error("{0}")]
    Dtype(String),
    /// A shape that is invalid, does not match the values, or overflows memory.
    #[error("{0}")]
    Shape(String),
    /// A tensor that would take more bytes than the caller allows.
    #[error("{0}")]
    TooLarge(String),
    /// A value of the wrong type or out of range.
    #[error("{0}")]
    Value(String),
    /// A malformed .npy file.
    #[error("{0}")]
    Npy(String),
}

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
    /// IEEE half precision (DT_HALF)
    F16,
    /// bfloat16 (DT_BFLOAT16)
    BF16,
    /// complex of two float32 (DT_COMPLEX64)
    C64,
    /// complex of two float64 (DT_COMPLEX128)
    C128,
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
            DType::F16 => DataType::DtHalf,
            DType::BF16 => DataType::DtBfloat16,
            DType::C64 => DataType::DtComplex64,
            DType::C128 => DataType::DtComplex128,
        }
    }

    /// From TensorFlow's DataType number.
    pub fn from_tf(v: i32) -> Result<Self, TensorError> {
        let dt = DataType::try_from(v)
            .map_err(|_| TensorError::Dtype(format!("unknown tensor dtype {v}")))?;
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
            DataType::DtHalf => DType::F16,
            DataType::DtBfloat16 => DType::BF16,
            DataType::DtComplex64 => DType::C64,
            DataType::DtComplex128 => DType::C128,
            other => {
                return Err(TensorError::Dtype(format!(
                    "tensor dtype {} is not supported",
                    other.as_str_name()
                )))
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
            DType::F16 => "half",
            DType::BF16 => "bfloat16",
            DType::C64 => "complex64",
            DType::C128 => "complex128",
        }
    }

    fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::I16 | DType::U16 | DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 | DType::C64 => 8,
            DType::C128 => 16,
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
    /// half
    F16(Vec<half::f16>),
    /// bfloat16
    BF16(Vec<half::bf16>),
    /// complex64: (real, imaginary)
    C64(Vec<[f32; 2]>),
    /// complex128: (real, imaginary)
    C128(Vec<[f64; 2]>),
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
            Data::F16($v) => $e,
            Data::BF16($v) => $e,
            Data::C64($v) => $e,
            Data::C128($v) => $e,
        }
    };
}

/// Number of elements of a shape, bounded.
pub fn element_count(shape: &[usize]) -> Result<usize, TensorError> {
    let mut n: usize = 1;
    for &d in shape {
        n = n
            .checked_mul(d)
            .ok_or_else(|| TensorError::Shape("tensor shape overflows".into()))?;
    }
    if n > MAX_ELEMENTS {
        return Err(TensorError::Shape(format!(
            "tensor of {n} elements is larger than the {MAX_ELEMENTS} allowed"
        )));
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
            Data::F16(_) => DType::F16,
            Data::BF16(_) => DType::BF16,
            Data::C64(_) => DType::C64,
            Data::C128(_) => DType::C128,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        each_data!(&self.data, v => v.len())
    }

    /// The bytes its elements take: the element size times their number, or for strings the
    /// strings' lengths.
    pub fn data_bytes(&self) -> usize {
        match &self.data {
            Data::Str(s) => s.iter().map(Vec::len).fold(0, usize::saturating_add),
            _ => self.len().saturating_mul(self.dtype().element_bytes()),
        }
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Builds a tensor, checking that the data fills the shape.
    pub fn new(shape: Vec<usize>, data: Data) -> Result<Self, TensorError> {
        let n = element_count(&shape)?;
        let t = Tensor { shape, data };
        if t.len() != n {
            return Err(TensorError::Shape(format!(
                "{} values do not fill shape {}",
                t.len(),
                shape_str(&t.shape)
            )));
        }
        Ok(t)
    }

    /// Little-endian bytes of the elements (not for strings).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.le_byte_len()];
        self.write_le_bytes(&mut out);
        out
    }

    /// How many bytes [`Tensor::write_le_bytes`] writes (0 for strings).
    pub fn le_byte_len(&self) -> usize {
        self.len() * self.dtype().size()
    }

    /// Writes the elements little-endian into `out`, straight into a buffer an engine owns;
    /// `out` must be [`Tensor::le_byte_len`] long (a shorter one takes the elements that fit).
    pub fn write_le_bytes(&self, out: &mut [u8]) {
        // Written through chunks of a width known at compile time:
        // `flat_map(..).collect()` runs several times slower on image-sized tensors.
        fn le<T: Copy, const N: usize>(v: &[T], out: &mut [u8], f: impl Fn(T) -> [u8; N]) {
            for (o, x) in out.chunks_exact_mut(N).zip(v) {
                o.copy_from_slice(&f(*x));
            }
        }
        macro_rules! le {
            ($v:expr) => {
                le($v, out, |x| x.to_le_bytes())
            };
        }
        match &self.data {
            Data::F32(v) => le!(v),
            Data::F64(v) => le!(v),
            Data::I8(v) => le!(v),
            Data::I16(v) => le!(v),
            Data::I32(v) => le!(v),
            Data::I64(v) => le!(v),
            Data::U8(v) => {
                let n = v.len().min(out.len());
                out[..n].copy_from_slice(&v[..n]);
            }
            Data::U16(v) => le!(v),
            Data::U32(v) => le!(v),
            Data::U64(v) => le!(v),
            Data::Bool(v) => le(v, out, |b| [u8::from(b)]),
            Data::Str(_) => {}
            Data::F16(v) => le!(v),
            Data::BF16(v) => le!(v),
            Data::C64(v) => le(v, out, |[re, im]| {
                let mut b = [0u8; 8];
                b[..4].copy_from_slice(&re.to_le_bytes());
                b[4..].copy_from_slice(&im.to_le_bytes());
                b
            }),
            Data::C128(v) => le(v, out, |[re, im]| {
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&re.to_le_bytes());
                b[8..].copy_from_slice(&im.to_le_bytes());
                b
            }),
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
            Data::F16(v) => Data::F16(v[a..b].to_vec()),
            Data::BF16(v) => Data::BF16(v[a..b].to_vec()),
            Data::C64(v) => Data::C64(v[a..b].to_vec()),
            Data::C128(v) => Data::C128(v[a..b].to_vec()),
        };
        Tensor { shape, data }
    }

    /// Concatenates tensors of the same dtype and trailing shape along dimension 0.
    pub fn concat_rows(parts: &[&Tensor]) -> Result<Tensor, TensorError> {
        let first = parts
            .first()
            .ok_or_else(|| TensorError::Shape("nothing to concatenate".into()))?;
        let mut shape = first.shape.clone();
        if shape.is_empty() {
            return Err(TensorError::Shape("scalars cannot be batched".into()));
        }
        let mut rows = 0;
        for p in parts {
            if p.dtype() != first.dtype() || p.shape.get(1..) != first.shape.get(1..) {
                return Err(TensorError::Shape(
                    "batched tensors differ in dtype or shape".into(),
                ));
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
            Data::F16(_) => cat!(F16),
            Data::BF16(_) => cat!(BF16),
            Data::C64(_) => cat!(C64),
            Data::C128(_) => cat!(C128),
        };
        Ok(Tensor { shape, data })
    }
}

/// Complex numbers from their parts, real then imaginary (an odd last part is dropped).
pub(crate) fn complex_pairs<T: Copy>(parts: &[T]) -> Vec<[T; 2]> {
    parts.chunks_exact(2).map(|c| [c[0], c[1]]).collect()
}

/// Elements of `dtype` from their little-endian bytes (a whole number of elements; not for
/// strings).
pub fn from_le_bytes(dtype: DType, b: &[u8]) -> Data {
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
        DType::F16 => Data::F16(de!(half::f16, 2)),
        DType::BF16 => Data::BF16(de!(half::bf16, 2)),
        DType::C64 => {
            let parts: Vec<f32> = de!(f32, 4);
            Data::C64(complex_pairs(&parts))
        }
        DType::C128 => {
            let parts: Vec<f64> = de!(f64, 8);
            Data::C128(complex_pairs(&parts))
        }
    }
}
