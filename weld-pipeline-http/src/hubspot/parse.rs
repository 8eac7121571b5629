//! Reading HubSpot's pages: each result's head (id, times, archived) is parsed; its body is kept
//! as the raw JSON it came as.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use weld_pipeline::{BoxError, Error, Json, Record, Timestamp};

use super::HubSpotError;

#[derive(Deserialize)]
struct Listing<'a> {
    #[serde(borrow)]
    results: Vec<&'a RawValue>,
    paging: Option<Paging>,
}

#[derive(Deserialize)]
struct Paging {
    next: Option<Next>,
}

#[derive(Deserialize)]
struct Next {
    after: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    id: String,
    updated_at: String,
    #[serde(default)]
    archived: bool,
    archived_at: Option<String>,
}

pub(super) fn unparseable(what: impl std::fmt::Display) -> BoxError {
    Box::new(Error::from(HubSpotError::Unparseable(what.to_string())))
}

/// A record from one result of a page.
pub(super) fn record(raw: &RawValue) -> Result<(Record, Option<i64>), BoxError> {
    let head: Head =
        serde_json::from_str(raw.get()).map_err(|e| unparseable(format!("a result: {e}")))?;
    let updated_at = Timestamp::parse_rfc3339(&head.updated_at).map_err(unparseable)?;
    let archived_at = head
        .archived_at
        .as_deref()
        .map(Timestamp::parse_rfc3339)
        .transpose()
        .map_err(unparseable)?
        .map(Timestamp::as_millis);
    Ok((
        Record {
            id: head.id,
            updated_at,
            archived: head.archived,
            amend: false,
            data: Json::from_raw(raw),
        },
        archived_at,
    ))
}

/// A page of a listing: its records (with their archive times) and the next paging token.
pub(super) struct Listed {
    /// The records, each with its archive time (ms) when it has one.
    pub(super) records: Vec<(Record, Option<i64>)>,
    /// The paging token of the next page, `None` on the last.
    pub(super) next: Option<String>,
}

/// Parses a list or search page.
pub(super) fn parse(body: &Bytes) -> Result<Listed, BoxError> {
    let listing: Listing<'_> = serde_json::from_slice(body).map_err(unparseable)?;
    let records = listing
        .results
        .iter()
        .map(|raw| record(raw))
        .collect::<Result<_, _>>()?;
    Ok(Listed {
        records,
        next: listing.paging.and_then(|p| p.next).map(|n| n.after),
    })
}
