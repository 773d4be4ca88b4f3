//! A gRPC codec whose requests are already-encoded protobuf bytes: the
//! generated client would re-encode the message on every call, which costs
//! more CPU than the server's whole model run for a small request.

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use taskcast_proto::PredictResponse;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Sends encoded `PredictRequest` bytes as they are; decodes `PredictResponse`
/// so a malformed answer is an error, not a success.
#[derive(Clone, Copy, Debug, Default)]
pub struct PreEncoded;

/// Writes the bytes through.
#[derive(Clone, Copy, Debug, Default)]
pub struct BytesEncoder;

/// Decodes a `PredictResponse`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ResponseDecoder;

impl Codec for PreEncoded {
    type Encode = Bytes;
    type Decode = PredictResponse;
    type Encoder = BytesEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ResponseDecoder
    }
}

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = PredictResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<PredictResponse>, Status> {
        let len = src.remaining();
        let msg = PredictResponse::decode(src.copy_to_bytes(len))
            .map_err(|e| Status::internal(format!("undecodable PredictResponse: {e}")))?;
        Ok(Some(msg))
    }
}
