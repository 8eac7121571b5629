//! One item of a stream: its id, when it last changed, and its JSON carried as bytes.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::de::IgnoredAny;

use crate::error::Error;

/// One item of a stream, unique by `id` within it.
///
/// `data` is the item's JSON as the source returned it (after the stream's transforms). It is
/// parsed once, at the source, and from then on travels and is stored as bytes: see [`Json`].
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's id at the source (HubSpot's `id`). Unique within a stream.
    pub id: String,
    /// When the record last changed at the source. A store never replaces a record with an
    /// older version.
    pub updated_at: Timestamp,
    /// Whether the source archived (deleted) it. An archived record is kept and marked.
    pub archived: bool,
    /// Whether this is an amendment rather than a whole version: a source that learns a
    /// record's fate but not its contents (merged into another, deleted for good) sends one. A
    /// store writes its `data`'s top-level members over the stored document's, keeping every
    /// other member, and takes its `archived` and `updated_at` (the usual rule applies: never
    /// over a newer version). With nothing stored, it is stored as it is.
    pub amend: bool,
    /// Whether this removes the record: the source learned it is gone for good and the stream
    /// asked that such records leave no trace (a privacy deletion). A store deletes the stored
    /// record and its links, whatever their versions (a purge wins over a newer stored one),
    /// and counts it as purged; `data` is empty and `archived` is set. With nothing stored,
    /// nothing is stored. See the [`StreamStore`](crate::store::StreamStore) contract for the
    /// order within a batch.
    pub purge: bool,
    /// The record's JSON document.
    pub data: Json,
}

impl Record {
    /// A live (not archived) record.
    pub fn new(id: impl Into<String>, updated_at: Timestamp, data: Json) -> Self {
        Record {
            id: id.into(),
            updated_at,
            archived: false,
            amend: false,
            purge: false,
            data,
        }
    }

    /// The removal of record `id`, learned at `at`: a record whose `purge` is set.
    pub fn purge(id: impl Into<String>, at: Timestamp) -> Self {
        Record {
            id: id.into(),
            updated_at: at,
            archived: true,
            amend: false,
            purge: true,
            data: Json::from_checked_bytes(Bytes::from_static(b"{}")),
        }
    }

    /// The stored version `self` with `amendment` applied (see [`Record::amend`]): its data's
    /// top-level members written over this one's, its `archived` and `updated_at` taken. A
    /// document that is not an object is replaced whole.
    pub fn amended_by(&self, amendment: &Record) -> Record {
        type Members = serde_json::Map<String, serde_json::Value>;
        let data = match (
            self.data.decode::<Members>(),
            amendment.data.decode::<Members>(),
        ) {
            (Ok(mut stored), Ok(members)) => {
                stored.extend(members);
                // A map of JSON values always serializes.
                let bytes = serde_json::to_vec(&stored).unwrap_or_default();
                Json::from_checked_bytes(bytes.into())
            }
            _ => amendment.data.clone(),
        };
        Record {
            id: self.id.clone(),
            updated_at: amendment.updated_at,
            archived: amendment.archived,
            amend: false,
            purge: false,
            data,
        }
    }

    /// The number of bytes this record takes in a batch's encoding: its id and data, each
    /// after a 4-byte length, its time (8) and flags (1).
    pub fn encoded_len(&self) -> usize {
        4 + self.id.len() + 8 + 1 + 4 + self.data.len()
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("id", &self.id)
            .field("updated_at", &self.updated_at)
            .field("archived", &self.archived)
            .field("amend", &self.amend)
            .field("purge", &self.purge)
            .field("data", &self.data)
            .finish()
    }
}

/// A JSON document held as its bytes.
///
/// Parsing 1 KiB of JSON costs about as much as moving it across a socket (measured by the
/// `encoding` bench), so a document is checked once where it enters the pipeline
/// ([`Json::parse`]) and is never parsed or re-serialized again by a transport or a store.
/// Cloning is cheap: the bytes are reference-counted.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Json(Bytes);

impl Json {
    /// Checks that `bytes` hold exactly one JSON value and keeps them as they are.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when the bytes are not one well-formed JSON value.
    pub fn parse(bytes: impl Into<Bytes>) -> Result<Self, Error> {
        let bytes = bytes.into();
        serde_json::from_slice::<IgnoredAny>(&bytes)
            .map_err(|e| Error::Invalid(format!("record data is not JSON: {e}")))?;
        Ok(Json(bytes))
    }

    /// Serializes a value (used where a document is built rather than received).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when the value cannot be serialized (a map with non-string keys).
    pub fn from_serialize<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        serde_json::to_vec(value)
            .map(|bytes| Json(Bytes::from(bytes)))
            .map_err(|e| Error::Invalid(format!("cannot serialize record data: {e}")))
    }

    /// Copies a document out of a parsed page without parsing it again: the source's one parse
    /// already checked it.
    pub fn from_raw(raw: &serde_json::value::RawValue) -> Self {
        Json(Bytes::copy_from_slice(raw.get().as_bytes()))
    }

    /// Keeps bytes that were checked before they were stored or sent (a store's own value, a
    /// frame from an authenticated peer), without checking them again.
    pub fn from_checked_bytes(bytes: Bytes) -> Self {
        Json(bytes)
    }

    /// The document's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The document's bytes, shared.
    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes (never true for a parsed document).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses the document into any type: for code that needs to look inside it (a field
    /// transform, a test), never for the hot path.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when the document does not have the shape of `T`.
    pub fn decode<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, Error> {
        serde_json::from_slice(&self.0)
            .map_err(|e| Error::Invalid(format!("record data does not decode: {e}")))
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(text) => write!(f, "{text}"),
            Err(_) => write!(f, "<{} bytes>", self.0.len()),
        }
    }
}

/// A point in time, in milliseconds since the Unix epoch (UTC), as HubSpot's change dates are.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The epoch itself.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// From milliseconds since the epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// The wall clock now. Wall-clock time, not tokio's: it is what a source's data is stamped
    /// with, and it does not pause in tests.
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }

    /// Parses an RFC 3339 time in UTC (`2025-07-07T20:27:17.947Z`), as HubSpot writes them.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when the text is not such a time or lies before the epoch.
    pub fn parse_rfc3339(text: &str) -> Result<Self, Error> {
        let time = humantime::parse_rfc3339(text)
            .map_err(|e| Error::Invalid(format!("{text:?} is not an RFC 3339 time: {e}")))?;
        let since = time
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Error::Invalid(format!("{text:?} is before 1970")))?;
        Ok(Timestamp(
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
        ))
    }

    /// This time moved back by `by`, saturating.
    pub fn saturating_sub(self, by: Duration) -> Self {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(by))
    }
}

/// RFC 3339 in UTC with milliseconds (`2025-07-07T20:27:17.947Z`); times before the epoch show
/// as the epoch.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // RFC 3339 ends at year 9999; a time past it (only a peer's bad data) prints as millis.
        const LAST_RFC3339_MILLIS: i64 = 253_402_300_799_999;
        if self.0 > LAST_RFC3339_MILLIS {
            return write!(f, "{}ms", self.0);
        }
        let millis = u64::try_from(self.0).unwrap_or(0);
        let time = UNIX_EPOCH + Duration::from_millis(millis);
        write!(f, "{}", humantime::format_rfc3339_millis(time))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_and_parse_as_rfc3339() {
        let at = Timestamp::parse_rfc3339("2025-07-07T20:27:17.947Z").unwrap();
        assert_eq!(at.as_millis(), 1_751_920_037_947);
        assert_eq!(at.to_string(), "2025-07-07T20:27:17.947Z");
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
        assert_eq!(
            Timestamp::from_millis(i64::MAX).to_string(),
            format!("{}ms", i64::MAX)
        );
        assert_eq!(
            Timestamp::from_millis(-5).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn json_parse_refuses_what_is_not_one_json_value() {
        assert!(Json::parse(&b"{\"a\":1}"[..]).is_ok());
        assert!(Json::parse(&b"{\"a\":"[..]).is_err());
        assert!(Json::parse(&b"{} {}"[..]).is_err());
        assert!(Json::parse(&b""[..]).is_err());
    }

    #[test]
    fn json_keeps_the_exact_bytes_it_was_given() {
        let text = b"{ \"b\" : 2,\"a\":1 }";
        let json = Json::parse(&text[..]).unwrap();
        assert_eq!(json.as_bytes(), text);
    }

    #[test]
    fn json_from_raw_copies_the_raw_slice() {
        let page: Vec<&serde_json::value::RawValue> =
            serde_json::from_str(r#"[{"id":"1"}, {"id":"2"}]"#).unwrap();
        assert_eq!(Json::from_raw(page[1]).as_bytes(), br#"{"id":"2"}"#);
    }
}
