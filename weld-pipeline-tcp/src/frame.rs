//! Frames: the header every frame carries inside its length-delimited envelope.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use weld_pipeline::encoding::encode_message;
use weld_pipeline::Message;

use crate::error::TcpError;

/// The frame format version this build writes and reads.
pub const FRAME_VERSION: u8 = 1;

/// Bytes of header after the length: version, type, correlation id.
pub(crate) const HEADER_LEN: usize = 1 + 1 + 8;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// Worker to controller, first frame: a `Hello` message.
    Hello = 1,
    /// Controller to worker: 32 random bytes to prove the shared secret against.
    Challenge = 2,
    /// Worker to controller: HMAC-SHA256(secret, challenge ‖ len(worker id) as u64 BE ‖ worker id).
    Answer = 3,
    /// Controller to worker: the handshake is complete.
    Welcome = 4,
    /// Either way: the connection is refused or ended; the body says why (UTF-8). Closed after.
    Refused = 5,
    /// A request (a message), answered by one `Response` with the same correlation id.
    Request = 6,
    /// The response to the request with the same correlation id.
    Response = 7,
    /// A one-way event (a message); the correlation id is 0.
    Event = 8,
    /// A heartbeat. It needs no answer: each side's own pings keep the other's reader alive.
    Ping = 9,
    /// Reserved (an answer to a ping); accepted and ignored.
    Pong = 10,
}

impl FrameType {
    fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => FrameType::Hello,
            2 => FrameType::Challenge,
            3 => FrameType::Answer,
            4 => FrameType::Welcome,
            5 => FrameType::Refused,
            6 => FrameType::Request,
            7 => FrameType::Response,
            8 => FrameType::Event,
            9 => FrameType::Ping,
            10 => FrameType::Pong,
            _ => return None,
        })
    }
}

/// A decoded frame: its type, correlation id and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) kind: FrameType,
    pub(crate) correlation: u64,
    pub(crate) body: Bytes,
}

impl Frame {
    /// Parses the header of a frame's payload (the length is already stripped).
    pub(crate) fn parse(mut payload: Bytes) -> Result<Frame, TcpError> {
        if payload.len() < HEADER_LEN {
            return Err(TcpError::Protocol(format!(
                "a frame of {} bytes is shorter than its header",
                payload.len()
            )));
        }
        let version = payload.get_u8();
        if version != FRAME_VERSION {
            return Err(TcpError::Version(format!(
                "frame version {version}; this side speaks {FRAME_VERSION}"
            )));
        }
        let kind = payload.get_u8();
        let kind = FrameType::from_u8(kind)
            .ok_or_else(|| TcpError::Protocol(format!("unknown frame type {kind}")))?;
        let correlation = payload.get_u64();
        Ok(Frame {
            kind,
            correlation,
            body: payload,
        })
    }
}

/// A frame's payload: header and raw body.
pub(crate) fn raw(kind: FrameType, correlation: u64, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + body.len());
    put_header(&mut out, kind, correlation);
    out.put_slice(body);
    out.freeze()
}

/// A frame's payload: header and a message in the core's encoding, written once.
pub(crate) fn message(kind: FrameType, correlation: u64, message: &Message) -> Bytes {
    // Sized once: a 100 KiB batch grown from a small buffer would be copied several times.
    let capacity = match message {
        Message::Request(weld_pipeline::Request::Deliver(batch)) => batch.encoded_len() + 64,
        _ => 256,
    };
    let mut out = BytesMut::with_capacity(HEADER_LEN + capacity);
    put_header(&mut out, kind, correlation);
    encode_message(message, &mut out);
    out.freeze()
}

fn put_header(out: &mut BytesMut, kind: FrameType, correlation: u64) {
    out.put_u8(FRAME_VERSION);
    out.put_u8(kind as u8);
    out.put_u64(correlation);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a peer sends as a frame's payload, parsing it and decoding its body never
        /// panics: it is a frame or a clear error.
        #[test]
        fn arbitrary_payloads_never_panic_the_frame_decoder(
            kind in 0u8..12,
            correlation in any::<u64>(),
            body in proptest::collection::vec(any::<u8>(), 0..512),
            raw_bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let _ = Frame::parse(Bytes::from(raw_bytes));
            let mut payload = BytesMut::new();
            payload.put_u8(FRAME_VERSION);
            payload.put_u8(kind);
            payload.put_u64(correlation);
            payload.put_slice(&body);
            if let Ok(frame) = Frame::parse(payload.freeze()) {
                let _ = weld_pipeline::encoding::decode_message(frame.body);
            }
        }
    }

    #[test]
    fn frames_round_trip_their_header() {
        let payload = raw(FrameType::Event, 7, b"body");
        let frame = Frame::parse(payload).unwrap();
        assert_eq!(
            (frame.kind, frame.correlation, &frame.body[..]),
            (FrameType::Event, 7, &b"body"[..])
        );
    }

    #[test]
    fn short_unknown_and_foreign_frames_are_refused() {
        assert!(matches!(
            Frame::parse(Bytes::from_static(&[1, 6])),
            Err(TcpError::Protocol(_))
        ));
        assert!(matches!(
            Frame::parse(raw(FrameType::Ping, 0, b"").slice(..9)),
            Err(TcpError::Protocol(_))
        ));
        let mut unknown = BytesMut::from(&raw(FrameType::Ping, 0, b"")[..]);
        unknown[1] = 99;
        assert!(matches!(
            Frame::parse(unknown.freeze()),
            Err(TcpError::Protocol(_))
        ));
        let mut foreign = BytesMut::from(&raw(FrameType::Ping, 0, b"")[..]);
        foreign[0] = 2;
        assert!(matches!(
            Frame::parse(foreign.freeze()),
            Err(TcpError::Version(_))
        ));
    }
}
