//! Float tensors read straight from JSON text that is a regular nested list of numbers (the
//! usual image request), without building a JSON tree; anything else is left to the general
//! reading of [`from_json`].

use super::*;

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
        let mut m = Mantissa::default();
        match digit(b, i)? {
            0 => i += 1,
            _ => i = m.append(b, i).0,
        }
        let mut exp10 = 0i64;
        if b.get(i) == Some(&b'.') {
            let (end, kept) = m.append(b, i + 1);
            if end == i + 1 {
                return None;
            }
            exp10 -= kept;
            i = end;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            let eneg = b.get(i) == Some(&b'-');
            i += usize::from(matches!(b.get(i), Some(b'-' | b'+')));
            let first = i;
            let mut e: i64 = 0;
            while let Some(d) = digit(b, i) {
                e = (e * 10 + i64::from(d)).min(1 << 20);
                i += 1;
            }
            if i == first {
                return None;
            }
            exp10 += if eneg { -e } else { e };
        }
        self.i = i;
        if m.exact && m.value < (1 << 53) && exp10.abs() <= 22 {
            let m = m.value as f64;
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

/// The digit at `b[i]`, if there is one.
fn digit(b: &[u8], i: usize) -> Option<u8> {
    b.get(i).map(|c| c.wrapping_sub(b'0')).filter(|&d| d <= 9)
}

/// A number's significant digits: at most 19 kept, so that they fit in the mantissa.
struct Mantissa {
    value: u64,
    kept: u32,
    /// Every digit was kept.
    exact: bool,
}

impl Default for Mantissa {
    fn default() -> Self {
        Self {
            value: 0,
            kept: 0,
            exact: true,
        }
    }
}

impl Mantissa {
    /// Appends the run of digits that starts at `b[i]`: where it ends, and how many of its
    /// digits were kept.
    fn append(&mut self, b: &[u8], mut i: usize) -> (usize, i64) {
        let mut kept = 0;
        while let Some(d) = digit(b, i) {
            if self.kept < 19 {
                self.value = self.value * 10 + u64::from(d);
                self.kept += 1;
                kept += 1;
            } else {
                self.exact = false;
            }
            i += 1;
        }
        (i, kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

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
}
