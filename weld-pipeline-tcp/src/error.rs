//! The transport's error, and what each means for the caller.

use std::time::Duration;

use weld_pipeline::{Classify, Error, ErrorKind};

/// Why a TCP connection failed or was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TcpError {
    /// The socket failed (refused, reset, closed). Transient: reconnect.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer did not complete the handshake in time. Transient.
    #[error("handshake timed out after {0:?}")]
    HandshakeTimeout(Duration),
    /// The peer sent something that is not this protocol: framing is lost. Permanent for the
    /// connection, which is closed.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The peer speaks another frame or protocol version. Permanent: upgrade one side.
    #[error("unsupported version: {0}")]
    Version(String),
    /// The shared secret did not match, or one side has none. Permanent: fix the configuration.
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// The controller is busy (at its connection limit): transient, dial again later.
    #[error("refused by the controller: {0}")]
    Refused(String),
}

impl Classify for TcpError {
    fn kind(&self) -> ErrorKind {
        match self {
            TcpError::Io(_) | TcpError::HandshakeTimeout(_) | TcpError::Refused(_) => {
                ErrorKind::Transient
            }
            TcpError::Protocol(_) | TcpError::Version(_) | TcpError::Authentication(_) => {
                ErrorKind::Permanent
            }
        }
    }
}

impl From<TcpError> for Error {
    fn from(error: TcpError) -> Self {
        let kind = error.kind();
        Error::new(kind, error)
    }
}
