//! TF Serving's JSON forms of tensors (TF Serving `util/json_tensor.cc`): reading nested lists
//! and `{"b64": ...}` strings, and writing them as TF Serving does.

use serde_json::Value;

use super::*;

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

fn type_error(v: &Value, dtype: DType) -> TensorError {
    TensorError::Value(format!(
        "JSON Value: {v} Type: {} is not of expected type: {}",
        json_type(v),
        dtype.short()
    ))
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

/// Builds a tensor of `dtype` from a JSON value or nested list, refusing one that would take
/// more than [`MAX_DECODED_BYTES`].
pub fn from_json(v: &Value, dtype: DType) -> Result<Tensor, TensorError> {
    from_json_within(v, dtype, MAX_DECODED_BYTES)
}

/// Builds a tensor of `dtype` from a JSON value or nested list whose decoded tensor takes at
/// most `max_bytes`. The shape read off the first element of each list is checked against
/// every list before anything is allocated for the elements.
pub fn from_json_within(v: &Value, dtype: DType, max_bytes: usize) -> Result<Tensor, TensorError> {
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
        return Err(TensorError::TooLarge(format!(
            "shape {} of {} takes {bytes} bytes decoded, more than the {max_bytes} allowed",
            shape_str(&shape),
            dtype.tf_name()
        )));
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
        // Numbers, rounded to the nearest 16-bit float (TF Serving's JSON has no 16-bit floats;
        // teeserve reads them as numbers, as a requester would write them).
        DType::F16 => conv!(F16, |x: &Value| x.as_f64().map(half::f16::from_f64)),
        DType::BF16 => conv!(BF16, |x: &Value| x.as_f64().map(half::bf16::from_f64)),
        // As TF Serving: JSON has no complex numbers (send them over gRPC).
        DType::C64 | DType::C128 => {
            return Err(TensorError::Dtype(format!(
            "Conversion of JSON Value to type {} is not supported; send complex tensors over gRPC",
            dtype.tf_name()
        )))
        }
        DType::Str => Data::Str(
            flat.iter()
                .map(|x| match (x, is_b64(x)) {
                    (_, Some(b)) => {
                        use base64::Engine;
                        base64::engine::general_purpose::STANDARD
                            .decode(b)
                            .map_err(|e| {
                                TensorError::Value(format!("Unable to base64 decode: {e}"))
                            })
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
) -> Result<(), TensorError> {
    if depth == shape.len() {
        if v.is_array() {
            return Err(TensorError::Shape(
                "Encountered list at unexpected size".into(),
            ));
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
        Value::Array(a) => Err(TensorError::Shape(format!(
            "Encountered list at unexpected size: {} at dimension {depth}, expected {}",
            a.len(),
            shape[depth]
        ))),
        _ => Err(TensorError::Shape(format!(
            "Expecting a list at dimension {depth}, found a scalar (ragged input)"
        ))),
    }
}

/// Writes element `i` of a tensor as JSON text; `b64` writes strings as `{"b64": ...}`.
fn write_elem(t: &Tensor, i: usize, b64: bool, out: &mut String) {
    use std::fmt::Write;
    // Written in place (an image is some 150,000 of them): the shortest representation that
    // reads back as the same value (Ryu), whole numbers with ".0" as TF Serving writes floats,
    // very small and very large ones with an exponent. Rust's `Display` gives the same digits
    // at some ten times the cost, and never an exponent.
    fn float<F: ryu::Float>(out: &mut String, f: f64, x: F) {
        if f.is_nan() {
            out.push_str("NaN");
        } else if f.is_infinite() {
            out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        } else {
            out.push_str(ryu::Buffer::new().format_finite(x));
        }
    }
    match &t.data {
        Data::F32(v) => float(out, f64::from(v[i]), v[i]),
        Data::F64(v) => float(out, v[i], v[i]),
        Data::I8(v) => out.push_str(itoa::Buffer::new().format(v[i])),
        Data::I16(v) => out.push_str(itoa::Buffer::new().format(v[i])),
        Data::I32(v) => out.push_str(itoa::Buffer::new().format(v[i])),
        Data::I64(v) => out.push_str(itoa::Buffer::new().format(v[i])),
        Data::U8(v) => out.push_str(itoa::Buffer::new().format(v[i])),
        Data::U16(v) => out.push_str(itoa::Buffer::new().format(v[i])),
        Data::U32(v) => out.push_str(itoa::Buffer::new().format(v[i])),
        Data::U64(v) => out.push_str(itoa::Buffer::new().format(v[i])),
        Data::Bool(v) => out.push_str(if v[i] { "true" } else { "false" }),
        Data::F16(v) => float(out, v[i].to_f64(), v[i].to_f32()),
        Data::BF16(v) => float(out, v[i].to_f64(), v[i].to_f32()),
        // A complex number as its (real, imaginary) pair.
        Data::C64(v) => {
            out.push('[');
            float(out, f64::from(v[i][0]), v[i][0]);
            out.push_str(", ");
            float(out, f64::from(v[i][1]), v[i][1]);
            out.push(']');
        }
        Data::C128(v) => {
            out.push('[');
            float(out, v[i][0], v[i][0]);
            out.push_str(", ");
            float(out, v[i][1], v[i][1]);
            out.push(']');
        }
        Data::Str(v) => {
            if b64 {
                use base64::Engine;
                let _ = write!(
                    out,
                    "{{\"b64\": \"{}\"}}",
                    base64::engine::general_purpose::STANDARD.encode(&v[i])
                );
            } else {
                write_json_string(&String::from_utf8_lossy(&v[i]), out);
            }
        }
    }
}

/// Writes a tensor's elements as one flat JSON list, strings as UTF-8 text.
pub(crate) fn write_flat(t: &Tensor, out: &mut String) {
    out.push('[');
    for i in 0..t.len() {
        if i > 0 {
            out.push(',');
        }
        write_elem(t, i, false, out);
    }
    out.push(']');
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

/// Writes `text` as a JSON string: as it is between quotes when nothing in it needs an escape
/// (a tensor's or model's name, as a rule), else as serde_json escapes it (RFC 8259 section 7:
/// the quotation mark, the reverse solidus and the control characters must be escaped).
pub fn write_json_string(text: &str, out: &mut String) {
    if text.bytes().all(|c| c >= 0x20 && c != b'"' && c != b'\\') {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        out.push_str(&Value::String(text.to_owned()).to_string());
    }
}

/// Writes the `"inputs"` member of a REST Predict request body (columnar format): the key and
/// an object of the named tensors, each as [`write_json_request`] writes it.
pub fn write_json_inputs(inputs: &[(String, Tensor)], out: &mut String) {
    out.push_str("\"inputs\": {");
    for (i, (n, x)) in inputs.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_json_string(n, out);
        out.push_str(": ");
        write_json_request(x, out);
    }
    out.push('}');
}

fn write_nested(
    t: &Tensor,
    row: Option<usize>,
    out: &mut String,
    elem: &dyn Fn(&Tensor, usize, &mut String),
) {
    let (shape, offset) = match row {
        Some(r) => {
            let rest = t.shape.get(1..).unwrap_or_default();
            (rest, r * rest.iter().product::<usize>())
        }
        None => (&t.shape[..], 0),
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
    rec(t, shape, offset, out, elem);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let mut texts: Vec<String> = (0u8..0x80).map(|c| format!("a{}b", c as char)).collect();
        texts.extend(["", "plain_name", "caf\u{e9} \u{1f600}", "\u{7f}\u{2028}"].map(String::from));
        for text in &texts {
            let mut out = String::new();
            write_json_string(text, &mut out);
            assert_eq!(out, serde_json::to_string(text).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn floats_are_written_shortest_and_whole_ones_with_a_point() {
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
            "[[1.0, 0.5, NaN, Infinity], [-Infinity, -3.0, 1e-7, 0.1]]"
        );
        let mut row = String::new();
        write_json(&t, Some(1), false, &mut row);
        assert_eq!(row, "[-Infinity, -3.0, 1e-7, 0.1]");
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
    fn ragged_json_is_refused() {
        let v: Value = serde_json::from_str("[[1, 2], [3]]").unwrap();
        assert!(from_json(&v, DType::F32)
            .unwrap_err()
            .to_string()
            .contains("unexpected size"));
        let v: Value = serde_json::from_str("[[1, 2], [3, \"x\"]]").unwrap();
        assert!(from_json(&v, DType::F32)
            .unwrap_err()
            .to_string()
            .contains("is not of expected type: float"));
    }

    #[test]
    fn json_output_formats_floats_like_tf_serving() {
        let t = Tensor::new(vec![2], Data::F32(vec![1.0, 0.25])).unwrap();
        let mut s = String::new();
        write_json(&t, None, false, &mut s);
        assert_eq!(s, "[1.0, 0.25]");
    }

    #[test]
    fn sixteen_bit_floats_are_numbers_and_complex_numbers_are_pairs() {
        let t = from_json(&serde_json::json!([1.5, -0.25, 3.0]), DType::F16).unwrap();
        let Data::F16(v) = &t.data else { panic!() };
        assert_eq!(v[0], half::f16::from_f32(1.5));
        let mut s = String::new();
        write_json(&t, None, false, &mut s);
        assert_eq!(s, "[1.5, -0.25, 3.0]");
        let t = from_json(&serde_json::json!([[2.5]]), DType::BF16).unwrap();
        let mut s = String::new();
        write_json(&t, None, false, &mut s);
        assert_eq!(s, "[[2.5]]");
        // As TF Serving, no complex numbers in; out, each is its (real, imaginary) pair.
        let e = from_json(&serde_json::json!([[1, 2]]), DType::C64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("DT_COMPLEX64"), "{e}");
        let t = Tensor::new(vec![2], Data::C64(vec![[1.0, -2.0], [0.5, 0.0]])).unwrap();
        let mut s = String::new();
        write_json(&t, None, false, &mut s);
        assert_eq!(s, "[[1.0, -2.0], [0.5, 0.0]]");
    }
}
