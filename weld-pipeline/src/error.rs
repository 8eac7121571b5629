//! The crate's error type and the classifier every layer reads.
//!
//! Every failure answers one question for its caller: what to do next. [`ErrorKind`] is that
//! answer: retry it ([`ErrorKind::Transient`]), stop the run and record it
//! ([`ErrorKind::Permanent`]), or log it loudly because the program is wrong ([`ErrorKind::Bug`]).
//!
//! Middleware stacks box their errors ([`BoxError`]), as tower does, so that swapping two layers
//! never changes an error type; [`classify`] and [`retry_after`] look through the box, and through
//! the chain of sources, for the first error that knows its kind.

use std::error::Error as StdError;
use std::time::Duration;

/// A boxed error, the error type of every middleware stack (as in tower).
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What the caller of a failed operation should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Try again later: a timeout, a reset connection, a 429 or a 5xx. The retry layer retries it.
    Transient,
    /// Retrying cannot help: bad credentials, a malformed request or response. Stop the run and
    /// record the error.
    Permanent,
    /// The program broke one of its own invariants. Neither retried nor expected: log loudly.
    Bug,
}

/// The error of every fallible operation in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operation did not finish within its deadline. Transient.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        operation: &'static str,
        /// The deadline that passed.
        after: Duration,
    },
    /// The remote service asked us to slow down. Transient; `retry_after` is its hint.
    #[error("rate limited{}", retry_after.map(|d| format!(" (retry after {d:?})")).unwrap_or_default())]
    RateLimited {
        /// How long the service asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// The peer or service is unreachable or failed for a reason that may pass. Transient.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The connection to the peer closed before the operation finished. Transient: reconnect.
    #[error("connection closed")]
    Closed,
    /// A request or input was refused as invalid; sending it again cannot succeed. Permanent.
    #[error("invalid: {0}")]
    Invalid(String),
    /// Bytes that should hold an encoded message do not. Permanent for that message.
    #[error("malformed message: {0}")]
    Decode(#[from] DecodeError),
    /// The operation was cancelled by a stop. Permanent: the run ends, nothing is retried.
    #[error("cancelled")]
    Cancelled,
    /// An invariant of this program was broken.
    #[error("bug: {0}")]
    Bug(String),
    /// A controller replica was refused a commit of a stream whose lease it does not hold, at
    /// the batch's lease epoch, in the database's eyes ([`crate::lease`]). Transient: the worker
    /// holds the batch, and the replica's next lease period settles it (a renewal that was late
    /// lets it in; a lease lost or claimed anew stops the stream on that worker, whose batches
    /// are then refused for good and fetched again by the holder). Not a storage failure: the
    /// store is healthy, and a store that heals by itself lets it pass.
    #[error("not leased: {0}")]
    NotLeased(String),
    /// An error from another layer or crate, with the kind it was classified as.
    #[error("{source}")]
    Other {
        /// What to do about it.
        kind: ErrorKind,
        /// The original error.
        source: BoxError,
    },
}

impl Error {
    /// Wraps any error with the kind its caller decided it has.
    pub fn new(kind: ErrorKind, source: impl Into<BoxError>) -> Self {
        Error::Other {
            kind,
            source: source.into(),
        }
    }

    /// Whether a retry may help, a stop is due, or the program is wrong.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Timeout { .. }
            | Error::RateLimited { .. }
            | Error::Unavailable(_)
            | Error::NotLeased(_)
            | Error::Closed => ErrorKind::Transient,
            Error::Invalid(_) | Error::Decode(_) | Error::Cancelled => ErrorKind::Permanent,
            Error::Bug(_) => ErrorKind::Bug,
            Error::Other { kind, .. } => *kind,
        }
    }

    /// Shorthand for `self.kind() == ErrorKind::Transient`.
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    /// The wait the remote service asked for before the next attempt, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// The error of a blocking task (`spawn_blocking`) that did not return, `what` naming its
    /// work. A panic is a bug. A task cancelled before it ran is not: its runtime is shutting
    /// down, and the work may well succeed on the next try (after a restart, elsewhere), so it
    /// is transient. Called a bug, a commit cut short by a controller's shutdown was refused for
    /// good, and its worker dropped the stream and cancelled its run until the next interval.
    pub fn from_join(what: &str, error: tokio::task::JoinError) -> Self {
        if error.is_cancelled() {
            Error::Unavailable(format!(
                "{what} was cancelled: the runtime is shutting down"
            ))
        } else {
            Error::Bug(format!("{what} panicked: {error}"))
        }
    }

    /// Turns a boxed error from a middleware stack back into an [`Error`], keeping its kind.
    pub fn from_boxed(error: BoxError) -> Self {
        match error.downcast::<Error>() {
            Ok(error) => *error,
            Err(other) => {
                let kind = classify(other.as_ref());
                Error::Other {
                    kind,
                    source: other,
                }
            }
        }
    }
}

/// Errors that know what their caller should do next.
///
/// Implemented by this crate's [`Error`] and meant for the error types of crates built on it (a
/// transport's, a source's): [`classify`] cannot downcast to types it does not know, so those
/// crates convert into [`Error`] (with [`Error::new`]) at their edge, and their own error type
/// implements this trait for callers that hold it directly.
pub trait Classify {
    /// The kind of this error.
    fn kind(&self) -> ErrorKind;

    /// The wait a remote service asked for, if any.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        Error::kind(self)
    }

    fn retry_after(&self) -> Option<Duration> {
        Error::retry_after(self)
    }
}

/// Classifies any error, looking through its chain of sources.
///
/// The first error in the chain that is an [`Error`] decides; tower's timeout error and
/// `std::io::Error`s of the kinds a network produces (reset, refused, broken pipe, timed out,
/// unexpected EOF) count as transient. An error nothing recognises is a [`ErrorKind::Bug`]: the
/// program let an unclassified error escape, which is worth a loud log rather than a silent retry.
pub fn classify(error: &(dyn StdError + 'static)) -> ErrorKind {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(error) = error.downcast_ref::<Error>() {
            return match error {
                // A wrapped error may itself be more specific, but its wrapper's kind was chosen
                // on purpose by whoever wrapped it.
                Error::Other { kind, .. } => *kind,
                other => other.kind(),
            };
        }
        if error.is::<tower::timeout::error::Elapsed>() {
            return ErrorKind::Transient;
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as Io;
            return match io.kind() {
                Io::ConnectionReset
                | Io::ConnectionRefused
                | Io::ConnectionAborted
                | Io::BrokenPipe
                | Io::TimedOut
                | Io::UnexpectedEof
                | Io::Interrupted
                | Io::NotConnected
                | Io::AddrNotAvailable => ErrorKind::Transient,
                _ => ErrorKind::Permanent,
            };
        }
        current = error.source();
    }
    ErrorKind::Bug
}

/// The retry-after hint carried anywhere in an error's chain of sources.
pub fn retry_after(error: &(dyn StdError + 'static)) -> Option<Duration> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(error) = error.downcast_ref::<Error>() {
            if let Some(after) = error.retry_after() {
                return Some(after);
            }
        }
        current = error.source();
    }
    None
}

/// Why bytes could not be decoded into a message or a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the field that was being read.
    #[error("truncated: needed {needed} more bytes for {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// How many bytes were missing.
        needed: usize,
    },
    /// The envelope's version is not one this build speaks.
    #[error("unsupported encoding version {0}")]
    UnsupportedVersion(u8),
    /// The message tag names no known message.
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    /// A field's bytes are not what it must hold (text that is not UTF-8, an invalid name...).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field's name in the encoding's docs.
        field: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// Bytes were left over after the message ended.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_what_the_caller_should_do() {
        assert_eq!(Error::Closed.kind(), ErrorKind::Transient);
        assert_eq!(
            Error::RateLimited { retry_after: None }.kind(),
            ErrorKind::Transient
        );
        assert_eq!(Error::Invalid("x".into()).kind(), ErrorKind::Permanent);
        assert_eq!(Error::Cancelled.kind(), ErrorKind::Permanent);
        assert_eq!(Error::Bug("x".into()).kind(), ErrorKind::Bug);
    }

    #[test]
    fn classify_looks_through_boxes_and_source_chains() {
        let boxed: BoxError = Box::new(Error::Unavailable("503".into()));
        assert_eq!(classify(boxed.as_ref()), ErrorKind::Transient);

        let wrapped = Error::new(ErrorKind::Permanent, Error::Closed);
        assert_eq!(classify(&wrapped), ErrorKind::Permanent);

        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(classify(&io), ErrorKind::Transient);

        let elapsed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert_eq!(classify(elapsed.as_ref()), ErrorKind::Transient);

        let unknown: BoxError = "something odd".into();
        assert_eq!(classify(unknown.as_ref()), ErrorKind::Bug);
    }

    #[test]
    fn retry_after_is_found_in_a_chain() {
        let hinted = Error::RateLimited {
            retry_after: Some(Duration::from_secs(3)),
        };
        let outer = Error::new(ErrorKind::Transient, hinted);
        assert_eq!(retry_after(&outer), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&Error::Closed), None);
    }

    #[test]
    fn from_boxed_keeps_the_original_error() {
        let boxed: BoxError = Box::new(Error::Cancelled);
        assert!(matches!(Error::from_boxed(boxed), Error::Cancelled));
        let io: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!(Error::from_boxed(io).kind(), ErrorKind::Transient);
    }
}
