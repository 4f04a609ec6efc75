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
    let narrow = dtype == DType::F32;
    let room = list_room(text, max_elements);
    let (mut f32s, mut f64s) = if narrow {
        (Vec::<f32>::with_capacity(room), Vec::new())
    } else {
        (Vec::new(), Vec::<f64>::with_capacity(room))
    };
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

/// How many numbers a list's text can hold, at most `max_elements` and one more (which the
/// reading then refuses): every element but the last is followed by a comma, so the commas bound
/// them, and the list is allocated once instead of growing as it is read.
fn list_room(text: &str, max_elements: usize) -> usize {
    text.bytes()
        .filter(|&c| c == b',')
        .count()
        .saturating_add(1)
        .min(max_elements.saturating_add(1))
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

    /// One JSON number (RFC 8259 section 6: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`).
    /// Up to 19 significant digits and a power of ten within 22 convert exactly as
    /// `mantissa * 10^e` or `mantissa / 10^e` (both operands exact, one rounding); other numbers
    /// go through the standard library's parser. Written as one pass over the bytes with the
    /// position in a local: it runs once per element of an image.
    fn number(&mut self) -> Option<f64> {
        const POW10: [f64; 23] = [
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
            1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
        ];
        let b = self.b;
        let start = self.i;
        let mut i = start;
        let neg = b.get(i) == Some(&b'-');
        i += usize::from(neg);
        // The significant digits kept (at most 19, so that they fit in the mantissa), and
        // whether every digit was kept.
        let (mut mant, mut kept, mut exact) = (0u64, 0u32, true);
        let digit = |i: usize| b.get(i).map(|c| c.wrapping_sub(b'0')).filter(|&d| d <= 9);
        match digit(i)? {
            0 => i += 1,
            _ => {
                while let Some(d) = digit(i) {
                    if kept < 19 {
                        mant = mant * 10 + u64::from(d);
                        kept += 1;
                    } else {
                        exact = false;
                    }
                    i += 1;
                }
            }
        }
        let mut exp10 = 0i64;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let first = i;
            while let Some(d) = digit(i) {
                if kept < 19 {
                    mant = mant * 10 + u64::from(d);
                    kept += 1;
                    exp10 -= 1;
                } else {
                    exact = false;
                }
                i += 1;
            }
            if i == first {
                return None;
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            let eneg = b.get(i) == Some(&b'-');
            i += usize::from(matches!(b.get(i), Some(b'-' | b'+')));
            let first = i;
            let mut e: i64 = 0;
            while let Some(d) = digit(i) {
                e = (e * 10 + i64::from(d)).min(1 << 20);
                i += 1;
            }
            if i == first {
                return None;
            }
            exp10 += if eneg { -e } else { e };
        }
        self.i = i;
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
                out.push_str(
                    &Value::String(String::from_utf8_lossy(&v[i]).into_owned()).to_string(),
                );
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

/// Writes the `"inputs"` member of a REST Predict request body (columnar format): the key and
/// an object of the named tensors, each as [`write_json_request`] writes it.
pub fn write_json_inputs(inputs: &[(String, Tensor)], out: &mut String) {
    out.push_str("\"inputs\": {");
    for (i, (n, x)) in inputs.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&Value::String(n.clone()).to_string());
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
            // Read one unit in the last place away by a reader that rounds twice.
            "[0.9245192110538483, 0.9452706955539223]",
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
                    (Data::F64(a), Data::F64(b)) => assert_eq!(a, b, "{text}"),
                    _ => panic!("{text}: dtypes differ"),
                }
            }
        }
    }

    #[test]
    fn decimals_are_read_to_the_nearest_float_on_every_path() {
        // Each the nearest f64 (as Python's float() and Rust's str::parse read them), and the
        // f32 nearest to that.
        let text = "[0.9245192110538483, 0.9452706955539223]";
        let want: Vec<f64> = ["0.9245192110538483", "0.9452706955539223"]
            .map(|t| t.parse().unwrap())
            .to_vec();
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            from_json(&v, DType::F64).unwrap().data,
            Data::F64(want.clone())
        );
        let narrow: Vec<f32> = want.iter().map(|&x| x as f32).collect();
        assert_eq!(from_json(&v, DType::F32).unwrap().data, Data::F32(narrow));
        assert_eq!(
            from_json_numbers(text, DType::F64).unwrap().data,
            Data::F64(want)
        );
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
