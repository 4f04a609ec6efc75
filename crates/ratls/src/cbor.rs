//! The few CBOR shapes of TCG DICE tagged evidence and of receipts (RFC 8949), written and read
//! with bounds.

/// A decoded CBOR item (only the types RA-TLS uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item<'a> {
    Uint(u64),
    /// A negative integer: -1 - the value.
    Neg(u64),
    Bytes(&'a [u8]),
    Text(&'a str),
    Array(Vec<Item<'a>>),
    Map(Vec<(Item<'a>, Item<'a>)>),
    Tag(u64, Box<Item<'a>>),
}

fn head(major: u8, v: u64, out: &mut Vec<u8>) {
    let m = major << 5;
    if v < 24 {
        out.push(m | v as u8);
    } else if v <= 0xff {
        out.extend_from_slice(&[m | 24, v as u8]);
    } else if v <= 0xffff {
        out.push(m | 25);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= 0xffff_ffff {
        out.push(m | 26);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Encodes a byte string.
pub(crate) fn bstr(b: &[u8], out: &mut Vec<u8>) {
    head(2, b.len() as u64, out);
    out.extend_from_slice(b);
}

/// Encodes a text string.
pub(crate) fn tstr(s: &str, out: &mut Vec<u8>) {
    head(3, s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

/// Encodes an unsigned integer.
pub(crate) fn uint(v: u64, out: &mut Vec<u8>) {
    head(0, v, out);
}

/// Encodes a signed integer (major type 0 or 1).
pub(crate) fn int(v: i64, out: &mut Vec<u8>) {
    if v >= 0 {
        head(0, v as u64, out);
    } else {
        // -1 - n for n >= 0 (RFC 8949 section 3.1, major type 1).
        head(1, (-1 - v) as u64, out);
    }
}

/// Encodes an array header.
pub(crate) fn array(n: u64, out: &mut Vec<u8>) {
    head(4, n, out);
}

/// Encodes a map header.
pub(crate) fn map(n: u64, out: &mut Vec<u8>) {
    head(5, n, out);
}

/// Encodes a tag header.
pub(crate) fn tag(t: u64, out: &mut Vec<u8>) {
    head(6, t, out);
}

const MAX_DEPTH: usize = 8;
const MAX_ITEMS: u64 = 64;

/// Decodes one item from the start of `b`; returns it and the rest.
pub(crate) fn decode(b: &[u8]) -> Result<(Item<'_>, &[u8]), &'static str> {
    decode_at(b, 0)
}

fn decode_at(b: &[u8], depth: usize) -> Result<(Item<'_>, &[u8]), &'static str> {
    if depth > MAX_DEPTH {
        return Err("CBOR nested too deeply");
    }
    let (&first, rest) = b.split_first().ok_or("CBOR truncated")?;
    let major = first >> 5;
    let info = first & 0x1f;
    let (v, mut rest) = match info {
        0..=23 => (u64::from(info), rest),
        24..=27 => {
            let n = 1usize << (info - 24);
            if rest.len() < n {
                return Err("CBOR truncated");
            }
            let v = rest[..n].iter().fold(0u64, |a, &x| (a << 8) | u64::from(x));
            (v, &rest[n..])
        }
        _ => return Err("CBOR indefinite or reserved length"),
    };
    match major {
        0 => Ok((Item::Uint(v), rest)),
        1 => Ok((Item::Neg(v), rest)),
        2 | 3 => {
            let n = usize::try_from(v).map_err(|_| "CBOR length too large")?;
            if rest.len() < n {
                return Err("CBOR string longer than its container");
            }
            let (s, r) = rest.split_at(n);
            if major == 2 {
                Ok((Item::Bytes(s), r))
            } else {
                Ok((
                    Item::Text(std::str::from_utf8(s).map_err(|_| "CBOR text is not UTF-8")?),
                    r,
                ))
            }
        }
        4 => {
            if v > MAX_ITEMS {
                return Err("CBOR array too long");
            }
            let mut items = Vec::new();
            for _ in 0..v {
                let (it, r) = decode_at(rest, depth + 1)?;
                items.push(it);
                rest = r;
            }
            Ok((Item::Array(items), rest))
        }
        5 => {
            if v > MAX_ITEMS {
                return Err("CBOR map too long");
            }
            let mut items = Vec::new();
            for _ in 0..v {
                let (k, r) = decode_at(rest, depth + 1)?;
                let (val, r) = decode_at(r, depth + 1)?;
                items.push((k, val));
                rest = r;
            }
            Ok((Item::Map(items), rest))
        }
        6 => {
            let (it, r) = decode_at(rest, depth + 1)?;
            Ok((Item::Tag(v, Box::new(it)), r))
        }
        _ => Err("CBOR type not used by RA-TLS or receipts"),
    }
}
