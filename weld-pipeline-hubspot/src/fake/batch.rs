//! Batch read: `POST /crm/v3/objects/{type}/batch/read` (`archived=true` in the query for
//! archived records), records by id with the properties asked for, in HubSpot's shape:
//!
//! - body `{"properties":[...],"inputs":[{"id":"1"}]}`, at most 100 inputs (more is a 400);
//! - `{"status":"COMPLETE","results":[<object>...],"startedAt","completedAt"}`, each result as
//!   the list endpoint writes it;
//! - ids not found (or not in the archived state asked for) are named in `errors` with
//!   category `OBJECT_NOT_FOUND`, and the answer is then a 207.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::admission::{admit, batch_body, unknown_object};
use super::wire::{batch_answer, Built};
use super::{answer_batch, canonical, Fake, Refusal, Shared};

/// The most inputs one batch read takes.
const MAX_INPUTS: usize = 100;

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    properties: Vec<String>,
    inputs: Vec<Input>,
}

#[derive(Deserialize)]
struct Input {
    id: String,
}

/// The query of a batch read.
#[derive(Deserialize)]
pub(super) struct BatchQuery {
    archived: Option<String>,
}

pub(super) async fn batch_read_route(
    State(state): State<Shared>,
    Path(object): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<BatchQuery>,
    body: Bytes,
) -> Response {
    let archived = query
        .archived
        .as_deref()
        .is_some_and(|a| a.eq_ignore_ascii_case("true"));
    answer_batch(&state, |fake| {
        batch_read(fake, &object, archived, &uri.to_string(), &headers, &body)
    })
    .await
}

fn batch_read(
    fake: &mut Fake,
    object: &str,
    archived: bool,
    uri: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Built, bool), Refusal> {
    let (fault, limit_headers) = admit(fake, headers, uri, object, false)?;
    let request: Request = batch_body(fake, body, MAX_INPUTS, |r: &Request| r.inputs.len())?;
    let Some(set) = fake.objects.get(canonical(object)) else {
        return Err(unknown_object(fake, object));
    };
    let properties = set.known_of(if request.properties.is_empty() {
        set.defaults.iter().map(|p| p.to_string()).collect()
    } else {
        request.properties
    });
    let (mut results, mut missing) = (Vec::new(), Vec::new());
    for input in &request.inputs {
        let found = input
            .id
            .parse::<u64>()
            .ok()
            .and_then(|id| set.records.get(&id))
            .filter(|o| o.archived_at.is_some() == archived);
        match found {
            Some(o) => results.push(serde_json::to_value(o.answer(&properties))),
            None => missing.push(input.id.clone()),
        }
    }
    let results: Vec<Value> = results.into_iter().filter_map(Result::ok).collect();
    let served = results.len() as u64;
    let partial = !missing.is_empty();
    let errors = if partial {
        vec![json!({
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": "Could not get some objects, they may be deleted or not exist.",
            "context": {"ids": missing},
            "errors": [],
            "links": {},
        })]
    } else {
        Vec::new()
    };
    let answer = batch_answer(results, errors);
    Ok((
        (
            answer.to_string().into_bytes(),
            served,
            fault,
            limit_headers,
        ),
        partial,
    ))
}
