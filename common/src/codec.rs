//! Frames: a 4-byte big-endian length, then a postcard-encoded message.
//!
//! The reader learns a frame's length from its header before reading the body, so an
//! oversized frame is refused before a byte of it is buffered. Decoding garbage returns
//! an error, never panics. The async reading and writing live with the transports;
//! this module only does the byte arithmetic.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::Error;

/// Size of the length header.
pub const HEADER_BYTES: usize = 4;

/// Encodes `msg` as a frame (header + body), refusing bodies over `max_frame`.
pub fn encode_frame<T: Serialize>(msg: &T, max_frame: usize) -> Result<Vec<u8>, Error> {
    let mut out = vec![0u8; HEADER_BYTES];
    out = postcard::to_extend(msg, out).map_err(|e| Error::Malformed {
        reason: format!("cannot encode: {e}"),
    })?;
    let body = out.len() - HEADER_BYTES;
    if body > max_frame {
        return Err(Error::TooLarge {
            what: "frame",
            size: body,
            limit: max_frame,
        });
    }
    let len = u32::try_from(body).map_err(|_| Error::TooLarge {
        what: "frame",
        size: body,
        limit: max_frame,
    })?;
    out[..HEADER_BYTES].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// Reads a header and returns the body length, refusing lengths over `max_frame`.
pub fn body_len(header: [u8; HEADER_BYTES], max_frame: usize) -> Result<usize, Error> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max_frame {
        return Err(Error::TooLarge {
            what: "frame",
            size: len,
            limit: max_frame,
        });
    }
    Ok(len)
}

/// Decodes a frame body; trailing bytes are an error.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let (msg, rest) = postcard::take_from_bytes(body).map_err(|e| Error::Malformed {
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(Error::Malformed {
            reason: format!("{} unexpected bytes after the message", rest.len()),
        });
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::Quorum;
    use crate::wire::{GetRequest, Request, Response};
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip() {
        let req = Request::Get(GetRequest {
            key: b"cart:1".to_vec(),
            r: Quorum::All,
            mode: Default::default(),
            read_repair: Default::default(),
            timeout_ms: Some(500),
        });
        let frame = encode_frame(&req, 1 << 20).unwrap();
        let len = body_len(frame[..4].try_into().unwrap(), 1 << 20).unwrap();
        assert_eq!(len, frame.len() - 4);
        let back: Request = decode_body(&frame[4..]).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn oversized_frames_are_refused_on_both_ends() {
        let req = Request::ReplicaGet { key: vec![7; 100] };
        assert!(matches!(
            encode_frame(&req, 50),
            Err(Error::TooLarge { what: "frame", .. })
        ));
        assert!(body_len(u32::MAX.to_be_bytes(), 1 << 20).is_err());
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut frame = encode_frame(&Response::Ack, 1024).unwrap();
        frame.push(0);
        assert!(decode_body::<Response>(&frame[4..]).is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_body::<Request>(&bytes);
            let _ = decode_body::<Response>(&bytes);
        }
    }
}
