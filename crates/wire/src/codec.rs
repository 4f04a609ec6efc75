//! The gRPC codec of every service and client here: protobuf through prost, as tonic's own
//! prost codec does, except that a message's buffer is sized to the message before it is
//! encoded. Encoding a 4.8 MB image batch into a buffer that grows as it is written copied it
//! about twice more and touched twice the memory. And a received body that arrives as one
//! buffer of its own (the server reads a request whole before it is decoded) becomes the
//! decoder's buffer instead of being copied into one.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// `application/grpc+proto` with prost messages.
#[derive(Debug, Clone, Copy)]
pub struct ProstCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProstCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for ProstCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder(PhantomData)
    }
}

/// Encodes one message into a buffer reserved to its encoded length.
#[derive(Debug, Clone, Copy)]
pub struct ProstEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for ProstEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        let len = item.encoded_len();
        buf.reserve(len);
        crate::heavy::run(len, || item.encode(buf))
            .map_err(|e| Status::internal(format!("cannot encode the message: {e}")))
    }
}

/// Decodes one message; `bytes` fields (`tensor_content`) share the received buffer.
#[derive(Debug, Clone, Copy)]
pub struct ProstDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for ProstDecoder<U> {
    type Item = U;
    type Error = Status;

    /// A decoding buffer that starts empty: tonic then takes the first frame of the body as
    /// its buffer when nothing else holds that frame (bytes' `BytesMut::put` into an empty
    /// buffer), and copies only the frames after it, as with any buffer. tonic also divides
    /// by this size to grow a decompression buffer: no compression is built or accepted here
    /// (tonic's `gzip`/`zstd`/`deflate` features are off), so a compressed message is refused
    /// before that; accepting one would need a non-zero size here.
    fn buffer_settings(&self) -> BufferSettings {
        // The yield threshold is tonic's default (32 KiB); only encoders read it.
        BufferSettings::new(0, 32 * 1024)
    }

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // A message that does not parse is INTERNAL, as gRPC's status code table has it
        // (grpc/doc/statuscodes.md) and TF Serving answers.
        crate::heavy::run(bytes::Buf::remaining(buf), || U::decode(buf))
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}
