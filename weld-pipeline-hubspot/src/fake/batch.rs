//! Batch read: `POST /crm/v3/objects/{type}/batch/read` and
//! `POST /crm/objects/2026-03/{type}/batch/read` (`archived=true` in the query for archived
//! records, as HubSpot's SDKs send it), records by id with the properties asked for, in
//! HubSpot's shape:
//!
//! - body `{"properties":[...],"inputs":[{"id":"1"}]}`, at most 100 inputs (more is a 400);
//!   `propertiesWithHistory` and `idProperty`, which HubSpot's 2026-03 SDK sends, are ignored;
//! - `{"status":"COMPLETE","results":[<object>...],"startedAt","completedAt"}`, each result as
//!   the list endpoint writes it (with `url` on the dated path);
//! - ids not found (or not in the archived state asked for) are named in `errors` with
//!   category `OBJECT_NOT_FOUND`, and the answer is then a 207.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::admission::{admit, batch_body, unknown_object};
use super::data::Answer;
use super::record::find;
use super::versions::Served;
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
    axum::Extension(served): axum::Extension<Served>,
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
        let call = Call {
            served,
            object: &object,
            archived,
        };
        batch_read(fake, &call, &uri.to_string(), &headers, &body)
    })
    .await
}

/// What a batch read asks for beside its body.
struct Call<'a> {
    served: Served,
    object: &'a str,
    archived: bool,
}

fn batch_read(
    fake: &mut Fake,
    call: &Call<'_>,
    uri: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Built, bool), Refusal> {
    let Call {
        served,
        object,
        archived,
    } = *call;
    let (fault, limit_headers) = admit(fake, served, headers, uri, object, false)?;
    let request: Request =
        batch_body(fake, served, body, MAX_INPUTS, |r: &Request| r.inputs.len())?;
    let Some(set) = fake.objects.get(canonical(object)) else {
        return Err(unknown_object(fake, served, object));
    };
    let properties = set.known_of(if request.properties.is_empty() {
        set.defaults.iter().map(|p| p.to_string()).collect()
    } else {
        request.properties
    });
    let (mut results, mut missing) = (Vec::new(), Vec::new());
    for input in &request.inputs {
        match find(set, &input.id, archived) {
            Some(o) => results.push(serde_json::to_value(Answer {
                url: served.record_url(&set.object_type, o.id),
                ..o.answer(&properties)
            })),
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
