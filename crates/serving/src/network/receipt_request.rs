//! What a receipt names of a request, and the requests it can name. A gRPC call's request is
//! the SHA-256 of its messages without their 5-byte length prefixes, hashed as the frames arrive
//! ([`GrpcHasher`]); since two messages hash as one message of both would, a call that asks for a
//! receipt must carry exactly one whole message ([`GrpcHasher::whole_messages`]). A REST request
//! is the SHA-256 of its body; since JSON readers differ on repeated keys, a body that asks for a
//! receipt must repeat none ([`unique_json_keys`]).

use ring::digest::{Context as Sha256, SHA256};
use tonic::Code;

use crate::api::error::ApiError;

/// Refuses a JSON body that repeats a key in an object, for a request that asks for a receipt.
/// The receipt names the body's bytes, and JSON readers differ on which of two equal keys counts
/// (RFC 8259 section 4: names "SHOULD be unique"; this server's reader keeps the last, others the
/// first), so a receipt of such a body could be shown as the answer to a request the server did
/// not read. Keys are compared as decoded (`"a"` and `"\u0061"` repeat). A body that is not
/// strict JSON (RFC 8259) is refused too: readers differ on what they make of it (a number out
/// of range, a `NaN`), and one that stopped at the bad value would not see a key repeated after
/// it.
pub fn unique_json_keys(json: &[u8]) -> Result<(), ApiError> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::borrow::Cow;

    /// Any JSON value, its objects' keys checked.
    struct Checked;

    impl<'de> DeserializeSeed<'de> for Checked {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Checked {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Checked)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if let Some(key) = seen.replace(key) {
                    return Err(serde::de::Error::custom(format_args!(
                        "the key {key:?} appears twice in one object"
                    )));
                }
                map.next_value_seed(Checked)?;
            }
            Ok(())
        }
    }

    let mut d = serde_json::Deserializer::from_slice(json);
    match Checked.deserialize(&mut d).and_then(|_| d.end()) {
        Ok(()) => Ok(()),
        // A repeated key: the one "data" error the check raises.
        Err(e) if e.classify() == serde_json::error::Category::Data => Err(ApiError::new(
            Code::InvalidArgument,
            format!(
                "a request that asks for a receipt must repeat no key in a JSON object (the \
                 receipt names the body's bytes, and readers differ on which of two equal keys \
                 counts): {e}"
            ),
        )),
        Err(e) => Err(ApiError::new(
            Code::InvalidArgument,
            format!(
                "a request that asks for a receipt must be strict JSON (the receipt names the \
                 body's bytes, and readers differ on what they make of anything else): {e}"
            ),
        )),
    }
}

/// Bodies at least this long are checked by [`unique_json_keys_of`] on a blocking thread, not on
/// an async worker (a megabyte of JSON takes a few milliseconds to read).
const CHECK_INLINE_MAX: usize = 1 << 20;

/// [`unique_json_keys`] of `json`, read on a blocking thread when it is long.
pub(crate) async fn unique_json_keys_of(json: bytes::Bytes) -> Result<(), ApiError> {
    if json.len() < CHECK_INLINE_MAX {
        return unique_json_keys(&json);
    }
    tokio::task::spawn_blocking(move || unique_json_keys(&json))
        .await
        .unwrap_or_else(|e| {
            Err(ApiError::new(
                Code::Internal,
                format!("receipt: checking the request's keys: {e}"),
            ))
        })
}

/// A SHA-256 digest as the 32 bytes a receipt names.
pub(crate) fn digest32(d: ring::digest::Digest) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256 of the messages of a gRPC stream: each frame's 5-byte header (compressed flag and
/// length, gRPC's PROTOCOL-HTTP2 "Length-Prefixed-Message") skipped, the message bytes hashed.
#[derive(Clone)]
pub(crate) struct GrpcHasher {
    sha: Sha256,
    /// Header bytes still to skip before the next message.
    header: [u8; 5],
    header_len: usize,
    /// Message bytes still to hash.
    left: usize,
    /// Messages begun (their headers read).
    messages: usize,
    /// A message's flag byte said it is compressed.
    compressed: bool,
}

impl Default for GrpcHasher {
    fn default() -> Self {
        Self {
            sha: Sha256::new(&SHA256),
            header: [0; 5],
            header_len: 0,
            left: 0,
            messages: 0,
            compressed: false,
        }
    }
}

impl GrpcHasher {
    /// Hashes the messages in the next bytes of the stream.
    pub(crate) fn update(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            if self.left > 0 {
                let n = self.left.min(b.len());
                self.sha.update(&b[..n]);
                self.left -= n;
                b = &b[n..];
                continue;
            }
            let n = (5 - self.header_len).min(b.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&b[..n]);
            self.header_len += n;
            b = &b[n..];
            if self.header_len == 5 {
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                self.left = len as usize;
                self.header_len = 0;
                self.messages += 1;
                self.compressed |= self.header[0] != 0;
            }
        }
    }

    /// How many messages the bytes seen hold, if they end where a message ends (`None`: in the
    /// middle of one). The hash covers the messages' bytes, not where one ends and the next
    /// begins, so it stands for a request only when there is exactly one.
    pub(crate) fn whole_messages(&self) -> Option<usize> {
        (self.header_len == 0 && self.left == 0).then_some(self.messages)
    }

    /// Whether a message seen was sent compressed (its flag byte set): its hash would name the
    /// compressed bytes, not the message that was read.
    pub(crate) fn compressed(&self) -> bool {
        self.compressed
    }

    /// The hash of the messages seen.
    pub(crate) fn finish(self) -> [u8; 32] {
        digest32(self.sha.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(b: &[u8]) -> [u8; 32] {
        digest32(ring::digest::digest(&SHA256, b))
    }

    fn framed(msg: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8];
        f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        f.extend_from_slice(msg);
        f
    }

    #[test]
    fn the_messages_are_hashed_without_their_frame_headers_however_they_are_split() {
        let msg = b"a protobuf message of some length";
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        framed.extend_from_slice(msg);
        let want = sha256(msg);
        for split in 0..framed.len() {
            let mut h = GrpcHasher::default();
            h.update(&framed[..split]);
            assert_eq!(
                h.whole_messages(),
                (split == 0).then_some(0),
                "{split}: a message cut short is not whole"
            );
            h.update(&framed[split..]);
            assert_eq!(h.whole_messages(), Some(1), "{split}");
            assert_eq!(h.finish(), want, "{split}");
        }
    }

    #[test]
    fn a_json_body_that_repeats_a_key_gets_no_receipt() {
        for body in [
            r#"{"instances": [1], "instances": [2]}"#,
            r#"{"inputs": {"x": 1, "\u0078": 2}}"#,
            r#"{"instances": [{"b64": "AA==", "b64": "AQ=="}]}"#,
        ] {
            let e = unique_json_keys(body.as_bytes()).unwrap_err();
            assert_eq!(e.code, Code::InvalidArgument, "{body}");
            assert!(e.message.contains("appears twice"), "{body}: {}", e.message);
        }
        let many: Vec<String> = (0..50_000).map(|i| format!("\"k{i}\": {i}")).collect();
        for body in [
            r#"{"a": {"b": 1}, "b": {"a": 1}}"#.to_owned(),
            r#"{"instances": [{"b64": "AA=="}, {"b64": "AQ=="}]}"#.to_owned(),
            format!("{{{}}}", many.join(",")),
        ] {
            assert!(unique_json_keys(body.as_bytes()).is_ok(), "{body:.80}");
        }
        // Not strict JSON: a reader that keeps the first "instances" and one that stops at the
        // bad value would read these apart from this server, which reads the last.
        for body in [
            r#"{"instances": "#,
            r#"{"instances": [[1e400]], "instances": [[0.5]]}"#,
            r#"{"instances": [[!!]], "instances": [[0.5]]}"#,
            r#"{"instances": [[NaN]]}"#,
            r#"{"instances": [[0.5]]} trailing"#,
        ] {
            let e = unique_json_keys(body.as_bytes()).unwrap_err();
            assert!(
                e.message.contains("must be strict JSON"),
                "{body}: {}",
                e.message
            );
        }
        // A key repeated before a bad value is named as a repeat.
        let e = unique_json_keys(br#"{"a": 1, "a": [[1e400]]}"#).unwrap_err();
        assert!(e.message.contains("appears twice"), "{}", e.message);
    }

    #[tokio::test]
    async fn a_long_body_is_checked_off_the_async_workers_with_the_same_verdict() {
        let rows = vec!["[1, 2, 3, 4]"; 200_000].join(",");
        let long = format!(r#"{{"instances": [{rows}]}}"#);
        assert!(long.len() > CHECK_INLINE_MAX);
        assert!(unique_json_keys_of(long.clone().into()).await.is_ok());
        let repeated = format!(r#"{{"instances": [{rows}], "instances": []}}"#);
        let e = unique_json_keys_of(repeated.into()).await.unwrap_err();
        assert!(e.message.contains("appears twice"), "{}", e.message);
    }

    #[test]
    fn two_messages_are_counted_apart_though_they_hash_as_one() {
        let (a, b) = (framed(b"first"), framed(b"second"));
        let mut two = GrpcHasher::default();
        two.update(&[a, b].concat());
        let mut one = GrpcHasher::default();
        one.update(&framed(b"firstsecond"));
        assert_eq!(two.whole_messages(), Some(2));
        assert_eq!(one.whole_messages(), Some(1));
        // Which is why a receipt is only made for a call of one message.
        assert_eq!(two.finish(), one.finish());
    }
}
