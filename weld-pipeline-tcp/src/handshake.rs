//! The handshake: hello, an optional challenge on the shared secret, welcome.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use weld_pipeline::encoding::decode_message;
use weld_pipeline::transport::check_hello;
use weld_pipeline::{Hello, Message};

use crate::config::TcpConfig;
use crate::error::TcpError;
use crate::frame::{self, Frame, FrameType};

pub(crate) type Wire = Framed<TcpStream, LengthDelimitedCodec>;

use weld_pipeline::transport::CHALLENGE_LEN;

/// The refusal codes carried first in a `Refused` frame's body, so the other side can tell
/// its caller what to do (the crate docs' frame table lists them).
mod code {
    /// The peer broke the protocol: permanent.
    pub(super) const PROTOCOL: u8 = 1;
    /// Another protocol version: permanent.
    pub(super) const VERSION: u8 = 2;
    /// A wrong or missing proof of the shared secret: permanent.
    pub(super) const AUTHENTICATION: u8 = 3;
    /// The controller is busy (at its connection limit): transient, dial again later.
    pub(super) const BUSY: u8 = 4;
}

/// A `Refused` frame for an error.
pub(crate) fn refusal(error: &TcpError) -> Bytes {
    let code = match error {
        TcpError::Version(_) => code::VERSION,
        TcpError::Authentication(_) => code::AUTHENTICATION,
        TcpError::Refused(_) => code::BUSY,
        _ => code::PROTOCOL,
    };
    let mut body = vec![code];
    body.extend_from_slice(error.to_string().as_bytes());
    frame::raw(FrameType::Refused, 0, &body)
}

/// The error a `Refused` frame's body describes.
pub(crate) fn refused(body: &[u8]) -> TcpError {
    let reason = String::from_utf8_lossy(body.get(1..).unwrap_or_default()).into_owned();
    match body.first() {
        Some(&code::VERSION) => TcpError::Version(reason),
        Some(&code::AUTHENTICATION) => TcpError::Authentication(reason),
        Some(&code::BUSY) => TcpError::Refused(reason),
        _ => TcpError::Protocol(reason),
    }
}

pub(crate) async fn read(wire: &mut Wire) -> Result<Frame, TcpError> {
    match wire.next().await {
        Some(Ok(payload)) => Frame::parse(payload.freeze()),
        Some(Err(error)) if error.kind() == std::io::ErrorKind::InvalidData => {
            Err(TcpError::Protocol(format!("bad frame: {error}")))
        }
        Some(Err(error)) => Err(TcpError::Io(error)),
        None => Err(TcpError::Io(std::io::ErrorKind::UnexpectedEof.into())),
    }
}

/// The largest frame either side takes before the welcome: a hello, a challenge, an answer.
/// Small, so that an unauthenticated client cannot make the controller allocate much.
pub(crate) const HANDSHAKE_MAX_FRAME: usize = 4096;

/// The controller's side: returns the worker's hello once it is accepted; [`welcome`] completes
/// the handshake.
pub(crate) async fn accept(wire: &mut Wire, config: &TcpConfig) -> Result<Hello, TcpError> {
    let first = read(wire).await?;
    if first.kind != FrameType::Hello {
        return Err(TcpError::Protocol(format!(
            "expected a hello, got {:?}",
            first.kind
        )));
    }
    let hello = match decode_message(first.body) {
        Ok(Message::Hello(hello)) => hello,
        Ok(_) => {
            return Err(TcpError::Protocol(
                "the hello frame holds another message".into(),
            ))
        }
        Err(error) => {
            return Err(TcpError::Protocol(format!(
                "the hello does not decode: {error}"
            )))
        }
    };
    check_hello(&hello).map_err(|e| TcpError::Version(e.to_string()))?;
    if let Some(secret) = &config.secret {
        let challenge = weld_pipeline::transport::random_bytes();
        wire.send(frame::raw(FrameType::Challenge, 0, &challenge))
            .await?;
        let answer = read(wire).await?;
        if answer.kind != FrameType::Answer {
            return Err(TcpError::Authentication(format!(
                "worker {} did not answer the challenge",
                hello.worker_id
            )));
        }
        // Compared in constant time.
        if !secret.verify(&challenge, &hello.worker_id, &answer.body) {
            return Err(TcpError::Authentication(format!(
                "worker {} has the wrong secret",
                hello.worker_id
            )));
        }
    }
    Ok(hello)
}

/// Completes an accepted handshake: from now on frames up to the full limit are taken.
pub(crate) async fn welcome(wire: &mut Wire, config: &TcpConfig) -> Result<(), TcpError> {
    wire.send(frame::raw(FrameType::Welcome, 0, &[])).await?;
    wire.codec_mut()
        .set_max_frame_length(config.max_frame_bytes);
    Ok(())
}

/// The worker's side.
pub(crate) async fn connect(
    wire: &mut Wire,
    hello: &Hello,
    config: &TcpConfig,
) -> Result<(), TcpError> {
    wire.send(frame::message(
        FrameType::Hello,
        0,
        &Message::Hello(hello.clone()),
    ))
    .await?;
    loop {
        let frame = read(wire).await?;
        match frame.kind {
            FrameType::Challenge => {
                // Only a challenge of the protocol's length is signed: anything else is not
                // the controller's random bytes but someone fishing for a signature.
                if frame.body.len() != CHALLENGE_LEN {
                    return Err(TcpError::Protocol(format!(
                        "a challenge of {} bytes",
                        frame.body.len()
                    )));
                }
                let secret = config.secret.as_ref().ok_or_else(|| {
                    TcpError::Authentication(
                        "the controller requires a shared secret and none is configured".into(),
                    )
                })?;
                let answer = secret.prove(&frame.body, &hello.worker_id);
                wire.send(frame::raw(FrameType::Answer, 0, &answer)).await?;
            }
            FrameType::Welcome => {
                wire.codec_mut()
                    .set_max_frame_length(config.max_frame_bytes);
                return Ok(());
            }
            FrameType::Refused => return Err(refused(&frame.body)),
            other => {
                return Err(TcpError::Protocol(format!(
                    "unexpected {other:?} during the handshake"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The refusal codes as the crate docs' frame table gives them, in bytes: length, version 1,
    /// type 5, correlation 0, then the code and the reason.
    #[test]
    fn refusals_carry_the_documented_codes_and_read_back_as_the_same_error() {
        for (error, code) in [
            (TcpError::Protocol("bad".into()), 1u8),
            (TcpError::Version("bad".into()), 2),
            (TcpError::Authentication("bad".into()), 3),
            (TcpError::Refused("bad".into()), 4),
        ] {
            let frame = refusal(&error);
            let reason = error.to_string();
            let mut expected = vec![1, 5, 0, 0, 0, 0, 0, 0, 0, 0, code];
            expected.extend_from_slice(reason.as_bytes());
            assert_eq!(&frame[..], &expected[..], "{error:?}");
            let back = refused(&frame[10..]);
            assert_eq!(
                std::mem::discriminant(&back),
                std::mem::discriminant(&error),
                "{error:?} reads back as {back:?}"
            );
        }
    }
}
