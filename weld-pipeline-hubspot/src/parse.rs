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
    #[serde(default)]
    total: Option<u64>,
}

/// HubSpot's `paging` of a listing (and of each result of an association batch read).
#[derive(Deserialize)]
pub(super) struct Paging {
    pub(super) next: Option<Next>,
}

/// Where the next page starts.
#[derive(Deserialize)]
pub(super) struct Next {
    pub(super) after: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    id: String,
    updated_at: String,
    #[serde(default)]
    archived: bool,
    archived_at: Option<String>,
    #[serde(default)]
    properties: Option<HeadProperties>,
}

/// The one property read here: the records merged into this one.
#[derive(Deserialize)]
struct HeadProperties {
    #[serde(default)]
    hs_merged_object_ids: Option<String>,
}

pub(super) fn unparseable(what: impl std::fmt::Display) -> BoxError {
    Box::new(Error::from(HubSpotError::Unparseable(what.to_string())))
}

/// A record from one result of a page.
pub(super) fn record(raw: &RawValue) -> Result<(Record, Option<i64>), BoxError> {
    record_and_merges(raw, &mut Vec::new())
}

/// A record from one result of a page; the records merged into it are added to `merges`.
fn record_and_merges(
    raw: &RawValue,
    merges: &mut Vec<Merge>,
) -> Result<(Record, Option<i64>), BoxError> {
    let head: Head =
        serde_json::from_str(raw.get()).map_err(|e| unparseable(format!("a result: {e}")))?;
    let merged = head
        .properties
        .and_then(|p| p.hs_merged_object_ids)
        .unwrap_or_default();
    let updated_at = Timestamp::parse_rfc3339(&head.updated_at).map_err(unparseable)?;
    let archived_at = head
        .archived_at
        .as_deref()
        .map(Timestamp::parse_rfc3339)
        .transpose()
        .map_err(unparseable)?
        .map(Timestamp::as_millis);
    merges.extend(
        merged
            .split(';')
            .map(str::trim)
            .filter(|id| !id.is_empty() && *id != head.id)
            .map(|id| Merge {
                id: id.to_string(),
                into: head.id.clone(),
                at: updated_at,
            }),
    );
    Ok((
        Record {
            id: head.id,
            updated_at,
            archived: head.archived,
            amend: false,
            purge: false,
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
    /// The records merged into those of the page (`hs_merged_object_ids`).
    pub(super) merges: Vec<Merge>,
    /// How many records match a search, this page's among them (search answers say; lists
    /// do not).
    pub(super) total: Option<u64>,
}

/// A record merged into another: HubSpot lists it nowhere since, and the survivor names it in
/// `hs_merged_object_ids`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Merge {
    /// The merged-away record.
    pub(super) id: String,
    /// The record it was merged into.
    pub(super) into: String,
    /// The survivor's modification time (a merge modifies it).
    pub(super) at: Timestamp,
}

impl Merge {
    /// The amendment that archives the merged-away record with `merged_into`, keeping what is
    /// stored of it.
    pub(super) fn amendment(&self) -> Record {
        let data = serde_json::json!({"archived": true, "merged_into": self.into});
        Record {
            id: self.id.clone(),
            updated_at: self.at,
            archived: true,
            amend: true,
            purge: false,
            // A JSON value always serializes.
            data: Json::from_checked_bytes(serde_json::to_vec(&data).unwrap_or_default().into()),
        }
    }
}

/// Parses a list or search page.
pub(super) fn parse(body: &Bytes) -> Result<Listed, BoxError> {
    let listing: Listing<'_> = serde_json::from_slice(body).map_err(unparseable)?;
    let mut merges = Vec::new();
    let records = listing
        .results
        .iter()
        .map(|raw| record_and_merges(raw, &mut merges))
        .collect::<Result<_, _>>()?;
    Ok(Listed {
        records,
        next: listing.paging.and_then(|p| p.next).map(|n| n.after),
        merges,
        total: listing.total,
    })
}
