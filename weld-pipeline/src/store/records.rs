//! What a store answers about a stream's records: counts and pages.

use crate::error::Error;
use crate::record::Record;

/// Which records a listing returns, by their state at the source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Archived {
    /// Live records only.
    #[default]
    Live,
    /// Only records archived at the source.
    Only,
    /// Every stored record, live or archived.
    All,
}

impl Archived {
    /// Whether a record in this state belongs in the listing.
    pub fn admits(self, archived: bool) -> bool {
        match self {
            Archived::Live => !archived,
            Archived::Only => archived,
            Archived::All => true,
        }
    }
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordPage {
    /// The records, in the store's key order (for numeric ids, numeric order).
    pub records: Vec<Record>,
    /// The token that resumes the listing after this page, or `None` at the end.
    pub next: Option<String>,
}

/// Live and archived record counts of a stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Records stored and not archived at the source.
    pub live: u64,
    /// Records stored and archived at the source.
    pub archived: u64,
}

/// The upsert rule every store keeps, in one place: given the version a store holds of a record
/// (its time and archived flag; `None` when it holds none), `None` when the held version is
/// newer and nothing is written; else how the live and archived counts move once `record` is
/// written (an equal time replaces).
///
/// ```
/// use weld_pipeline::store::upsert_counts;
/// use weld_pipeline::{Json, Record, Timestamp};
///
/// let archived = Record { archived: true, ..Record::new("1", Timestamp::from_millis(5), Json::parse(b"{}".to_vec())?) };
/// assert_eq!(upsert_counts(Some((Timestamp::from_millis(9), false)), &archived), None);
/// assert_eq!(upsert_counts(Some((Timestamp::from_millis(5), false)), &archived), Some((-1, 1)));
/// assert_eq!(upsert_counts(None, &archived), Some((0, 1)));
/// # Ok::<_, weld_pipeline::Error>(())
/// ```
pub fn upsert_counts(
    stored: Option<(crate::record::Timestamp, bool)>,
    record: &Record,
) -> Option<(i64, i64)> {
    let (mut live, mut archived) = (0, 0);
    match stored {
        Some((at, _)) if at > record.updated_at => return None,
        Some((_, true)) => archived -= 1,
        Some((_, false)) => live -= 1,
        None => {}
    }
    if record.archived {
        archived += 1;
    } else {
        live += 1;
    }
    Some((live, archived))
}

/// The paging token that resumes a listing after the record `id`: its bytes in hex, so a token
/// never needs escaping in a URL and every id has one. Stores that page by id share it.
pub fn encode_token(id: &str) -> String {
    id.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The id a paging token names.
///
/// # Errors
///
/// [`Error::Invalid`] for a token [`encode_token`] did not make.
pub fn decode_token(token: &str) -> Result<String, Error> {
    let invalid = || Error::Invalid(format!("{token:?} is not a paging token of this store"));
    if token.len() % 2 != 0 || !token.is_ascii() {
        return Err(invalid());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16).map_err(|_| invalid()))
        .collect::<Result<Vec<u8>, Error>>()?;
    // Any hex names a position; one that is no id's (not UTF-8) resumes after the nearest one.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
