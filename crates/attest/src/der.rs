//! A minimal, bounds-checked DER reader and writer for the few structures teeserve handles by
//! hand: Intel's PCK SGX extension (1.2.840.113741.1.13.1) and the simulated PKI that mimics it.
//!
//! Encoding rules: ITU-T X.690 (definite lengths only, no indefinite form).

/// Tag of a DER INTEGER.
pub(crate) const INTEGER: u8 = 0x02;
/// Tag of a DER OCTET STRING.
pub(crate) const OCTET_STRING: u8 = 0x04;
/// Tag of a DER OBJECT IDENTIFIER.
pub(crate) const OID: u8 = 0x06;
/// Tag of a DER ENUMERATED.
pub(crate) const ENUMERATED: u8 = 0x0a;
/// Tag of a DER SEQUENCE (constructed).
pub(crate) const SEQUENCE: u8 = 0x30;

/// A DER decoding error: where it happened and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DER: {0}")]
pub struct DerError(pub &'static str);

/// One tag-length-value element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tlv<'a> {
    /// The tag byte (only single-byte tags are supported).
    pub(crate) tag: u8,
    /// The content octets.
    pub(crate) value: &'a [u8],
}

/// A cursor over a run of DER elements.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads the elements of `bytes`.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// True when every byte was consumed.
    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Reads the next element.
    pub(crate) fn next_tlv(&mut self) -> Result<Tlv<'a>, DerError> {
        let (&tag, after_tag) = self.rest.split_first().ok_or(DerError("unexpected end"))?;
        if tag & 0x1f == 0x1f {
            return Err(DerError("multi-byte tags are not supported"));
        }
        let (&first, mut after_len) = after_tag.split_first().ok_or(DerError("missing length"))?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return Err(DerError("unsupported length form"));
            }
            if after_len.len() < n {
                return Err(DerError("truncated length"));
            }
            let mut len = 0usize;
            for &b in &after_len[..n] {
                len = (len << 8) | usize::from(b);
            }
            after_len = &after_len[n..];
            len
        };
        if after_len.len() < len {
            return Err(DerError("element longer than its container"));
        }
        let (value, rest) = after_len.split_at(len);
        self.rest = rest;
        Ok(Tlv { tag, value })
    }

    /// Reads the next element and checks its tag.
    pub(crate) fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], DerError> {
        let tlv = self.next_tlv()?;
        if tlv.tag != tag {
            return Err(DerError(what));
        }
        Ok(tlv.value)
    }
}

/// Decodes a non-negative DER INTEGER that fits in a u64.
pub(crate) fn uint(value: &[u8]) -> Result<u64, DerError> {
    let v = match value {
        [] => return Err(DerError("empty integer")),
        [0, rest @ ..] => rest,
        v if v[0] & 0x80 != 0 => return Err(DerError("negative integer")),
        v => v,
    };
    if v.len() > 8 {
        return Err(DerError("integer too large"));
    }
    Ok(v.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

/// Encodes the OID arcs into DER content octets.
pub(crate) fn oid_content(arcs: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    if arcs.len() >= 2 {
        push_base128(&mut out, arcs[0] * 40 + arcs[1]);
        for &a in &arcs[2..] {
            push_base128(&mut out, a);
        }
    }
    out
}

fn push_base128(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 10];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            break;
        }
    }
    let last = tmp.len() - 1;
    for (j, b) in tmp.iter().enumerate().skip(i) {
        out.push(if j == last { *b } else { *b | 0x80 });
    }
}

/// Encodes one element with a definite length.
pub(crate) fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 6);
    out.push(tag);
    push_len(&mut out, value.len());
    out.extend_from_slice(value);
    out
}

/// Encodes a length in DER's shortest form.
pub(crate) fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Encodes a non-negative INTEGER.
pub(crate) fn uint_tlv(v: u64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(7);
    let mut content = Vec::new();
    if bytes[skip] & 0x80 != 0 {
        content.push(0);
    }
    content.extend_from_slice(&bytes[skip..]);
    tlv(INTEGER, &content)
}

/// Encodes a SEQUENCE of already encoded elements.
pub(crate) fn sequence(items: &[Vec<u8>]) -> Vec<u8> {
    tlv(SEQUENCE, &items.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_round_trip() {
        assert_eq!(
            oid_content(&[1, 2, 840, 113741, 1, 13, 1]),
            hex::decode("2a864886f84d010d01").unwrap()
        );
    }

    #[test]
    fn rejects_overlong_element() {
        let mut r = Reader::new(&[0x04, 0x05, 1, 2]);
        assert!(r.next_tlv().is_err());
    }

    #[test]
    fn integers() {
        assert_eq!(uint(&[0x00, 0xff]).unwrap(), 255);
        assert_eq!(uint_tlv(255), vec![2, 2, 0, 255]);
        assert_eq!(uint_tlv(0), vec![2, 1, 0]);
    }
}
