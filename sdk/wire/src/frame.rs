//! Framing: each message travels as a 4-byte big-endian body length, then the MessagePack body.

use serde::{Serialize, de::DeserializeOwned};

/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {length} bytes is over the limit of {limit} bytes")]
    TooLong { length: usize, limit: usize },
    #[error("cannot encode message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("cannot decode message: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
}

/// Encodes `message` as one frame: length prefix and body.
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut frame = vec![0; FRAME_HEADER_BYTES];
    rmp_serde::encode::write_named(&mut frame, message)?;
    let length = frame.len() - FRAME_HEADER_BYTES;
    let length = u32::try_from(length)
        .map_err(|_| FrameError::TooLong { length, limit: u32::MAX as usize })?;
    frame[..FRAME_HEADER_BYTES].copy_from_slice(&length.to_be_bytes());
    Ok(frame)
}

/// Reads a frame header, refusing a body longer than `limit` bytes before anything is read.
pub fn frame_length(header: [u8; FRAME_HEADER_BYTES], limit: usize) -> Result<usize, FrameError> {
    let length = u32::from_be_bytes(header) as usize;
    if length > limit {
        return Err(FrameError::TooLong { length, limit });
    }
    Ok(length)
}

/// Decodes a frame body.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    Ok(rmp_serde::from_slice(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefix_is_big_endian_body_length() {
        let frame = encode_frame(&"abc").expect("encodes");
        assert_eq!(&frame[..4], &[0, 0, 0, 4]);
        assert_eq!(frame_length([0, 0, 0, 4], 10).expect("fits"), 4);
        assert!(matches!(
            frame_length([0, 0, 1, 0], 10),
            Err(FrameError::TooLong { length: 256, limit: 10 })
        ));
    }
}
