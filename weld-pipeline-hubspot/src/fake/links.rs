//! One record's links, and the link types between two object types, in HubSpot's shapes:
//!
//! - `GET /crm/objects/2026-03/{type}/{id}/associations/{toType}` (and v4's
//!   `GET /crm/v4/objects/{type}/{id}/associations/{toType}`): `limit` (default and most 500,
//!   more is a 400) and `after` (an offset, from `paging.next.after`);
//!   `{"results":[{"toObjectId","associationTypes":[{"category","typeId","label"}]}],
//!   "paging":{"next":{"after","link"}}}`, `paging` only when more follow, `toObjectId` text on
//!   the dated path and a number on v4 (as the batch read writes them). A record without links,
//!   or unknown, has no results.
//! - `GET /crm/associations/2026-03/{from}/{to}/labels` (and v4's
//!   `GET /crm/associations/v4/{from}/{to}/labels`, the same answer):
//!   `{"results":[{"category","typeId","label"}]}`, every type the batch read and the
//!   per-record read put on a link between the two, from the same type ids.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::admission::{admit, error};
use super::associations::{known_pair, linked, type_id};
use super::versions::Served;
use super::{answer, Fake, Refusal, Shared};

/// The most links one per-record read returns: HubSpot's "Limit 500 per call".
const MAX_LIMIT: usize = 500;

/// The query of a per-record read.
#[derive(Deserialize)]
pub(super) struct LinksQuery {
    limit: Option<String>,
    after: Option<String>,
}

pub(super) async fn record_links_route(
    State(state): State<Shared>,
    axum::Extension(served): axum::Extension<Served>,
    Path((object, id, to)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<LinksQuery>,
) -> Response {
    answer(&state, |fake| {
        let (fault, limit_headers) =
            admit(fake, served, &headers, &uri.to_string(), &object, false)?;
        let (from, to) = known_pair(fake, served, &object, &to)?;
        let (body, links) = record_links(fake, served, (&from, &id, &to), &query)?;
        Ok((body, links, fault, limit_headers))
    })
    .await
}

/// The page of `id`'s links (of type `from`) to `to`, and how many links it holds.
fn record_links(
    fake: &mut Fake,
    served: Served,
    (from, id, to): (&str, &str, &str),
    query: &LinksQuery,
) -> Result<(Vec<u8>, u64), Refusal> {
    let limit = match query.limit.as_deref().map(str::parse::<usize>) {
        None => MAX_LIMIT,
        Some(Ok(limit)) if (1..=MAX_LIMIT).contains(&limit) => limit,
        Some(_) => {
            return Err(error(
                fake,
                served,
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!("limit must be between 1 and {MAX_LIMIT}"),
            ))
        }
    };
    let start = match query.after.as_deref().map(str::parse::<usize>) {
        None => 0,
        Some(Ok(start)) => start,
        Some(Err(_)) => {
            return Err(error(
                fake,
                served,
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "after is not a valid paging token",
            ))
        }
    };
    let all = id
        .parse::<u64>()
        .map(|id| fake.links.of(from, id, to))
        .unwrap_or(&[]);
    let end = start.saturating_add(limit).min(all.len());
    let results: Vec<Value> = (start.min(end)..end)
        .map(|i| linked(served, from, to, all[i], i))
        .collect();
    let count = results.len() as u64;
    let mut body = json!({ "results": results });
    if end < all.len() {
        let template = served.routes().record_links;
        let path = template
            .replace("{object}", from)
            .replace("{id}", id)
            .replace("{to}", to);
        body["paging"] = json!({"next": {
            "after": end.to_string(),
            "link": format!("https://api.hubapi.com{path}?after={end}"),
        }});
    }
    Ok((body.to_string().into_bytes(), count))
}

pub(super) async fn labels_route(
    State(state): State<Shared>,
    axum::Extension(served): axum::Extension<Served>,
    Path((from, to)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    answer(&state, |fake| {
        let (fault, limit_headers) = admit(fake, served, &headers, &uri.to_string(), &from, false)?;
        let (from, to) = known_pair(fake, served, &from, &to)?;
        let results = labels(&from, &to);
        let count = results.len() as u64;
        let body = json!({ "results": results }).to_string().into_bytes();
        Ok((body, count, fault, limit_headers))
    })
    .await
}

/// Every type a link from `from` to `to` can carry: the pair's own, and for a contact's
/// company the `Primary` label too.
fn labels(from: &str, to: &str) -> Vec<Value> {
    let mut results =
        vec![json!({"category": "HUBSPOT_DEFINED", "typeId": type_id(from, to), "label": null})];
    if (from, to) == ("contacts", "companies") {
        results.push(json!({"category": "HUBSPOT_DEFINED", "typeId": 1, "label": "Primary"}));
    }
    results
}
