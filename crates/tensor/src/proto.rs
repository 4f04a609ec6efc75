//! TensorFlow's TensorProto: both the packed `tensor_content` and the typed `*_val` fields, with
//! the one-value-fills-the-shape rule (TensorFlow `tensor.proto`, `tensor_util.py`).

use super::*;
use teeserve_wire::tensorflow::{tensor_shape_proto, TensorProto, TensorShapeProto};

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

/// The complex values of a `*complex_val` field of `len` floats: (real, imaginary) pairs.
fn pairs(what: &str, len: usize) -> Result<usize, TensorError> {
    if !len.is_multiple_of(2) {
        return Err(TensorError::Shape(format!(
            "{what} has {len} values; complex values come as (real, imaginary) pairs"
        )));
    }
    Ok(len / 2)
}

/// Reads what a TensorProto declares ([`Declared`]) without allocating for its values.
pub fn declared(p: &TensorProto) -> Result<Declared, TensorError> {
    let dtype = DType::from_tf(p.dtype)?;
    let shape_p = p.tensor_shape.as_ref();
    if shape_p.is_some_and(|s| s.unknown_rank) {
        return Err(TensorError::Shape("tensor_shape has unknown rank".into()));
    }
    let dims = shape_p.map(|s| s.dim.as_slice()).unwrap_or_default();
    let mut shape = Vec::with_capacity(dims.len());
    for d in dims {
        if d.size < 0 {
            return Err(TensorError::Shape(format!(
                "tensor_shape has a negative dimension {}",
                d.size
            )));
        }
        shape.push(
            usize::try_from(d.size)
                .map_err(|_| TensorError::Shape("dimension too large".into()))?,
        );
    }
    let n = element_count(&shape)?;
    let overflow = || {
        TensorError::Shape(format!(
            "tensor of shape {} overflows memory",
            shape_str(&shape)
        ))
    };
    let fixed = n.checked_mul(dtype.element_bytes()).ok_or_else(overflow)?;
    if !p.tensor_content.is_empty() {
        if dtype == DType::Str {
            return Err(TensorError::Shape(
                "DT_STRING tensors cannot use tensor_content".into(),
            ));
        }
        if p.tensor_content.len() != fixed {
            return Err(TensorError::Shape(format!(
                "tensor_content has {} bytes; shape {} of {} needs {fixed}",
                p.tensor_content.len(),
                shape_str(&shape),
                dtype.tf_name(),
            )));
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
        // The bit patterns, one per int32.
        DType::F16 | DType::BF16 => ("half_val", p.half_val.len()),
        // (real, imaginary) pairs.
        DType::C64 => ("scomplex_val", pairs("scomplex_val", p.scomplex_val.len())?),
        DType::C128 => ("dcomplex_val", pairs("dcomplex_val", p.dcomplex_val.len())?),
    };
    // version_number 0: a single value fills the whole shape.
    if count != n && count != 1 {
        return Err(TensorError::Shape(format!(
            "{what} has {count} values; shape {} has {n} elements",
            shape_str(&shape)
        )));
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

impl Tensor {
    /// Decodes a TensorProto, refusing one that would take more than [`MAX_DECODED_BYTES`].
    pub fn from_proto(p: &TensorProto) -> Result<Self, TensorError> {
        Self::from_proto_within(p, MAX_DECODED_BYTES)
    }

    /// Decodes a TensorProto whose decoded tensor takes at most `max_bytes`; what it declares
    /// is checked ([`declared`]) before anything is allocated for its values.
    pub fn from_proto_within(p: &TensorProto, max_bytes: usize) -> Result<Self, TensorError> {
        let Declared {
            dtype,
            shape,
            bytes,
        } = declared(p)?;
        if bytes > max_bytes {
            return Err(TensorError::TooLarge(format!(
                "shape {} of {} takes {bytes} bytes decoded, more than the {max_bytes} allowed",
                shape_str(&shape),
                dtype.tf_name()
            )));
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
        fn narrow<T: TryFrom<i32>>(v: &[i32], what: &str) -> Result<Vec<T>, TensorError> {
            v.iter()
                .map(|&x| {
                    T::try_from(x).map_err(|_| {
                        TensorError::Value(format!("{what} value {x} is out of range"))
                    })
                })
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
            DType::F16 => Data::F16(fill(
                &narrow::<u16>(&p.half_val, "half_val")?
                    .into_iter()
                    .map(half::f16::from_bits)
                    .collect::<Vec<_>>(),
                n,
            )),
            DType::BF16 => Data::BF16(fill(
                &narrow::<u16>(&p.half_val, "half_val")?
                    .into_iter()
                    .map(half::bf16::from_bits)
                    .collect::<Vec<_>>(),
                n,
            )),
            DType::C64 => Data::C64(fill(&super::complex_pairs(&p.scomplex_val), n)),
            DType::C128 => Data::C128(fill(&super::complex_pairs(&p.dcomplex_val), n)),
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
            Data::F16(v) => p.half_val = v.iter().map(|x| i32::from(x.to_bits())).collect(),
            Data::BF16(v) => p.half_val = v.iter().map(|x| i32::from(x.to_bits())).collect(),
            Data::C64(v) => p.scomplex_val = v.iter().flatten().copied().collect(),
            Data::C128(v) => p.dcomplex_val = v.iter().flatten().copied().collect(),
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use teeserve_wire::tensorflow::DataType;

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

    fn dims(shape: &[i64]) -> Option<TensorShapeProto> {
        Some(TensorShapeProto {
            dim: shape
                .iter()
                .map(|&size| tensor_shape_proto::Dim {
                    size,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        })
    }

    #[test]
    fn sixteen_bit_floats_and_complex_numbers_round_trip_in_both_encodings() {
        // What tf.make_tensor_proto writes: bit patterns in half_val, (re, im) in *complex_val.
        let half = TensorProto {
            dtype: DataType::DtHalf as i32,
            tensor_shape: dims(&[3]),
            half_val: vec![0x3E00, 0xB400, 0x7BFF], // 1.5, -0.25, 65504
            ..Default::default()
        };
        let t = Tensor::from_proto(&half).unwrap();
        let want: Vec<f32> = vec![1.5, -0.25, 65504.0];
        let Data::F16(v) = &t.data else { panic!() };
        assert_eq!(v.iter().map(|x| x.to_f32()).collect::<Vec<_>>(), want);
        assert_eq!(t.to_proto(false), half);
        assert_eq!(Tensor::from_proto(&t.to_proto(true)).unwrap(), t);

        let bf = TensorProto {
            dtype: DataType::DtBfloat16 as i32,
            tensor_shape: dims(&[2]),
            half_val: vec![0x3FC0], // 1.5, filling the shape
            ..Default::default()
        };
        let t = Tensor::from_proto(&bf).unwrap();
        assert_eq!(t.data, Data::BF16(vec![half::bf16::from_f32(1.5); 2]));
        assert_eq!(Tensor::from_proto(&t.to_proto(true)).unwrap(), t);

        let c = TensorProto {
            dtype: DataType::DtComplex64 as i32,
            tensor_shape: dims(&[2]),
            scomplex_val: vec![1.0, 2.0, -3.0, 0.5],
            ..Default::default()
        };
        let t = Tensor::from_proto(&c).unwrap();
        assert_eq!(t.data, Data::C64(vec![[1.0, 2.0], [-3.0, 0.5]]));
        assert_eq!(t.to_proto(false), c);
        let content = t.to_proto(true);
        assert_eq!(content.tensor_content.len(), 16);
        assert_eq!(Tensor::from_proto(&content).unwrap(), t);

        let z = TensorProto {
            dtype: DataType::DtComplex128 as i32,
            tensor_shape: dims(&[1, 2]),
            dcomplex_val: vec![0.25, -1.0],
            ..Default::default()
        };
        let t = Tensor::from_proto(&z).unwrap();
        assert_eq!(t.data, Data::C128(vec![[0.25, -1.0]; 2]));
        assert_eq!(Tensor::from_proto(&t.to_proto(true)).unwrap(), t);
        assert_eq!(declared(&z).unwrap().bytes, 32);
    }

    #[test]
    fn malformed_sixteen_bit_and_complex_values_are_named() {
        let odd = TensorProto {
            dtype: DataType::DtComplex64 as i32,
            tensor_shape: dims(&[1]),
            scomplex_val: vec![1.0, 2.0, 3.0],
            ..Default::default()
        };
        let e = Tensor::from_proto(&odd).unwrap_err().to_string();
        assert!(e.contains("scomplex_val has 3 values"), "{e}");
        let wide = TensorProto {
            dtype: DataType::DtHalf as i32,
            tensor_shape: dims(&[1]),
            half_val: vec![0x1_0000],
            ..Default::default()
        };
        let e = Tensor::from_proto(&wide).unwrap_err().to_string();
        assert!(e.contains("half_val value 65536 is out of range"), "{e}");
        let short = TensorProto {
            dtype: DataType::DtComplex128 as i32,
            tensor_shape: dims(&[2]),
            tensor_content: vec![0; 24].into(),
            ..Default::default()
        };
        let e = Tensor::from_proto(&short).unwrap_err().to_string();
        assert!(e.contains("tensor_content has 24 bytes"), "{e}");
    }
}
