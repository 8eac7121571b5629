//! One record by id: `GET /crm/v3/objects/{type}/{id}` and `GET /crm/objects/2026-03/{type}/{id}`
//! (`properties` as in a list, `archived=true` for an archived one), answered as the list
//! writes a record; an id not found (or not in the archived state asked for) is a 404
//! `OBJECT_NOT_FOUND`.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;

use super::admission::{admit, error, unknown_object};
use super::data::{Answer, Object, ObjectSet};
use super::list::ListQuery;
use super::versions::Served;
use super::{answer, canonical, Fake, Refusal, Shared};

/// The record `id` (as a URL or a batch input names it) of `set`, if it is in the archived
/// state asked for: what a get and a batch read find alike.
pub(super) fn find<'a>(set: &'a ObjectSet, id: &str, archived: bool) -> Option<&'a Object> {
    id.parse::<u64>()
        .ok()
        .and_then(|id| set.records.get(&id))
        .filter(|o| o.archived_at.is_some() == archived)
}

pub(super) async fn record_route(
    State(state): State<Shared>,
    axum::Extension(served): axum::Extension<Served>,
    Path((object, id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let query = ListQuery::from_pairs(pairs);
    answer(&state, |fake| {
        let (fault, limit_headers) =
            admit(fake, served, &headers, &uri.to_string(), &object, false)?;
        let body = record(fake, served, &object, &id, &query)?;
        Ok((body, 1, fault, limit_headers))
    })
    .await
}

fn record(
    fake: &mut Fake,
    served: Served,
    object: &str,
    id: &str,
    query: &ListQuery,
) -> Result<Vec<u8>, Refusal> {
    let Some(set) = fake.objects.get(canonical(object)) else {
        return Err(unknown_object(fake, served, object));
    };
    let Some(found) = find(set, id, query.archived()) else {
        return Err(error(
            fake,
            served,
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            &format!("Object not found. objectId are usually numeric. ({object} {id})"),
        ));
    };
    let properties = set.known_of(set.properties_or_defaults(query.properties.as_deref()));
    let answer = Answer {
        url: served.record_url(&set.object_type, found.id),
        ..found.answer(&properties)
    };
    Ok(serde_json::to_vec(&answer).unwrap_or_default())
}
