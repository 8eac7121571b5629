//! The resume point of a stream.

use std::fmt;

use bytes::Bytes;

use crate::error::Error;

/// An opaque, source-defined resume point: where the next run of a stream starts.
///
/// Only the source that wrote a checkpoint reads it (a list `after` token during a full sync; a
/// modification-time window and the last id inside it during an incremental one). Everyone else
/// carries it as bytes. It lives with the data: a sink commits a batch's records and the
/// checkpoint the batch reached in one atomic step, and a worker is handed it when a run starts.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Checkpoint(Bytes);

impl Checkpoint {
    /// The beginning: a run from here syncs everything.
    pub fn start() -> Self {
        Checkpoint(Bytes::new())
    }

    /// Whether this is the beginning.
    pub fn is_start(&self) -> bool {
        self.0.is_empty()
    }

    /// Wraps a source's own bytes.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        Checkpoint(bytes.into())
    }

    /// The checkpoint's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The checkpoint's bytes, shared.
    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// The checkpoint of a source's structured position, encoded as JSON.
    ///
    /// # Errors
    ///
    /// [`Error::Bug`] when the position cannot be serialized (the source's type is wrong).
    pub fn from_position<T: serde::Serialize>(position: &T) -> Result<Self, Error> {
        serde_json::to_vec(position)
            .map(|v| Checkpoint(v.into()))
            .map_err(|e| Error::Bug(format!("checkpoint does not serialize: {e}")))
    }

    /// The structured position [`Checkpoint::from_position`] encoded; `None` at the beginning.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when the bytes are not the position a source expects (a checkpoint
    /// written by another source, or by an older version of it).
    pub fn position<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>, Error> {
        if self.is_start() {
            return Ok(None);
        }
        serde_json::from_slice(&self.0)
            .map(Some)
            .map_err(|e| Error::Invalid(format!("checkpoint is not this source's: {e}")))
    }
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_start() {
            return f.write_str("Checkpoint(start)");
        }
        match std::str::from_utf8(&self.0) {
            Ok(text) => write!(f, "Checkpoint({text})"),
            Err(_) => write!(f, "Checkpoint(<{} bytes>)", self.0.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_positions_round_trip_and_start_is_none() {
        let position = (1_700_000_000_000_i64, "33451".to_string());
        let checkpoint = Checkpoint::from_position(&position).unwrap();
        assert_eq!(
            checkpoint.position::<(i64, String)>().unwrap(),
            Some(position)
        );
        assert_eq!(
            Checkpoint::start().position::<(i64, String)>().unwrap(),
            None
        );
        assert!(Checkpoint::from_bytes("nope")
            .position::<(i64, String)>()
            .is_err());
    }
}
