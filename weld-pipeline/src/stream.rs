//! Names of streams and identifiers of runs.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::record::Timestamp;

/// The name of a stream, matching [`PATTERN`](Self::PATTERN), so it is safe in a URL path, a
/// file name and a storage key. Cheap to clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamName(Arc<str>);

impl StreamName {
    /// What a name matches, as a regular expression: lower-case letters, digits, `_` and `-`,
    /// starting with a letter or digit, at most [`MAX_LEN`](Self::MAX_LEN) bytes. Error messages
    /// and the HTTP API's document quote it.
    pub const PATTERN: &'static str = "^[a-z0-9][a-z0-9_-]{0,62}$";

    /// The longest name allowed, in bytes.
    pub const MAX_LEN: usize = 63;

    /// Checks and wraps a name.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when the name does not match [`PATTERN`](Self::PATTERN).
    pub fn new(name: impl AsRef<str>) -> Result<Self, Error> {
        let name = name.as_ref();
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok =
            chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if first_ok && rest_ok && name.len() <= Self::MAX_LEN {
            Ok(StreamName(name.into()))
        } else {
            Err(Error::Invalid(format!(
                "stream name {name:?} must match {}",
                Self::PATTERN
            )))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StreamName {
    type Error = Error;
    fn try_from(name: String) -> Result<Self, Error> {
        StreamName::new(name)
    }
}

impl From<StreamName> for String {
    fn from(name: StreamName) -> String {
        name.0.to_string()
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// The identifier of one run of a stream.
///
/// A run's batches are identified by `(stream, run_id, seq)`, so two runs of one stream must never
/// share an id, even across worker restarts and re-assignments: a collision would make a new
/// batch look like a replay of an old one. [`RunId::generate`] makes ids that are time-ordered
/// (newest sorts last) and unique: the top 48 bits are the wall clock in milliseconds, the low 16
/// bits random, and within one process each id is greater than the last.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub u64);

impl RunId {
    /// A new, time-ordered, unique run id.
    pub fn generate() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        // Within one process ids also strictly increase, whatever the clock does, so two runs
        // started in the same millisecond (a paused test clock) still differ.
        static LAST: AtomicU64 = AtomicU64::new(0);
        let millis = Timestamp::now().as_millis().max(0) as u64;
        let candidate = (millis << 16) | u64::from(fastrand::u16(..));
        let previous = LAST
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(candidate.max(last + 1))
            })
            .unwrap_or_else(|last| last);
        RunId(candidate.max(previous + 1))
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_follow_the_contract() {
        for ok in ["contacts", "a", "0-a_b", &"x".repeat(63)] {
            assert!(StreamName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "_a", "A", "a b", "a/b", "é", &"x".repeat(64)] {
            assert!(StreamName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stream_names_are_checked_when_deserialized() {
        assert!(serde_json::from_str::<StreamName>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<StreamName>("\"Not OK\"").is_err());
    }

    #[test]
    fn generated_run_ids_are_distinct_and_time_ordered() {
        let first = RunId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = RunId::generate();
        assert!(second > first);
    }
}
