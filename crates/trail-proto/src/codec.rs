//! The codec the server view is generated with (`build.rs`, `codec_path`):
//! tonic-prost's, except that a request that does not decode is answered
//! with INVALID_ARGUMENT, not tonic-prost's INTERNAL. The bytes came from
//! the client and retrying them unchanged fails again; INTERNAL would tell
//! the client the server is at fault (docs/DECISIONS.md).

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::ProstEncoder;

/// [`tonic_prost::ProstCodec`] with client-caused decode errors as
/// INVALID_ARGUMENT.
#[derive(Debug, Clone, Copy)]
pub struct ServerCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for ServerCodec<T, U> {
    fn default() -> Self {
        ServerCodec {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for ServerCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ServerDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ServerDecoder { _type: PhantomData }
    }
}

/// Decodes a request message; see [`ServerCodec`].
#[derive(Debug, Clone, Copy)]
pub struct ServerDecoder<U> {
    _type: PhantomData<U>,
}

impl<U: Message + Default> Decoder for ServerDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // prost's message names the message and field that failed
        // ("failed to decode Protobuf message: AppendRequest.log: ...").
        U::decode(buf)
            .map(Some)
            .map_err(|error| Status::invalid_argument(error.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}
