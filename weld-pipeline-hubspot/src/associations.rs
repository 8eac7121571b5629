//! Associations: which records of other types each record of a page is linked to, read through
//! HubSpot's associations batch read and written into the record as `data.associations`:
//!
//! ```json
//! {"companies": [{"id": "456", "types": [{"category": "HUBSPOT_DEFINED", "typeId": 1, "label": "Primary"}]}],
//!  "deals": []}
//! ```
//!
//! Every type the stream asks for is present, empty when the record has none, so a removed link
//! shows as removed. One call per page and type: `POST /crm/associations/2026-03/{from}/{to}/batch/read`
//! with the page's ids (`{"inputs":[{"id":"123"}]}`, at most [`MAX_INPUTS`]: HubSpot refuses more
//! since February 2025, as its changelog says; a search page holds 200). A record with more links
//! than one answer holds gets a `paging.next.after` in its result (present only when more
//! follow, as HubSpot's reference says): the ids that have one are asked again with their
//! `after` until none has. HubSpot answers 207 when some ids have nothing to read, listing them in
//! `errors`; an id absent from the results has no links. An error of another category fails the
//! page (nothing is written with links missing).
//!
//! Changing a link does not move a record's modification time, so no incremental window sees
//! it: links are read with every record a run reads, and a stream with associations also reads
//! every record again once per refresh interval (see [`HubSpotObject::refresh`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{json, Value};
use tower::ServiceExt;
use weld_pipeline::{BoxError, Json, Record};

use super::calls::CallService;
use super::client::Call;
use super::parse::{unparseable, Paging};
#[cfg(doc)]
use super::HubSpotObject;

/// The most ids one batch read takes.
pub(crate) const MAX_INPUTS: usize = 1_000;

/// Per record id, its links to one type: `{"id","types"}` each.
type Links = HashMap<String, Vec<Value>>;

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    results: Vec<Result_>,
    #[serde(default)]
    errors: Vec<Failure>,
}

#[derive(Deserialize)]
struct Result_ {
    from: From,
    #[serde(default)]
    to: Vec<To>,
    paging: Option<Paging>,
}

#[derive(Deserialize)]
struct From {
    id: IdText,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct To {
    to_object_id: IdText,
    #[serde(default)]
    association_types: Vec<Value>,
}

#[derive(Deserialize)]
struct Failure {
    category: String,
    #[serde(default)]
    message: String,
}

/// An id HubSpot writes as a number or as text.
#[derive(Deserialize)]
#[serde(untagged)]
enum IdText {
    Number(u64),
    Text(String),
}

impl IdText {
    fn into_string(self) -> String {
        match self {
            IdText::Number(n) => n.to_string(),
            IdText::Text(t) => t,
        }
    }
}

/// Categories that mean "nothing to read for this id", not a failure.
const NOTHING_TO_READ: [&str; 2] = ["NO_ASSOCIATIONS_FOUND", "OBJECT_NOT_FOUND"];

/// The links of `ids` (records of `from`) to each type of `to`.
pub(super) async fn read(
    service: &CallService,
    from: &Arc<str>,
    to: &[String],
    ids: &[String],
) -> Result<BTreeMap<String, Links>, BoxError> {
    // The types are read side by side: each is one call (or a few) of its own.
    let types = to.iter().map(|to_type| async move {
        let mut links = Links::new();
        for chunk in ids.chunks(MAX_INPUTS) {
            read_type(service, from, to_type, chunk, &mut links).await?;
        }
        Ok::<_, BoxError>((to_type.clone(), links))
    });
    Ok(futures::future::try_join_all(types)
        .await?
        .into_iter()
        .collect())
}

async fn read_type(
    service: &CallService,
    from: &Arc<str>,
    to: &str,
    ids: &[String],
    links: &mut Links,
) -> Result<(), BoxError> {
    let mut inputs: Vec<Value> = ids.iter().map(|id| json!({"id": id})).collect();
    while !inputs.is_empty() {
        let call = Call::Associations {
            from: from.clone(),
            to: to.into(),
            body: json!({"inputs": inputs}),
        };
        let body = service.clone().oneshot(call).await?;
        inputs = parse_into(&body, links)
            .map_err(|e| unparseable(format!("the {from} to {to} associations: {e}")))?;
    }
    Ok(())
}

/// Adds an answer's links to `links`; returns the inputs that have more to read.
fn parse_into(body: &Bytes, links: &mut Links) -> Result<Vec<Value>, String> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if let Some(failure) = answer
        .errors
        .iter()
        .find(|f| !NOTHING_TO_READ.contains(&f.category.as_str()))
    {
        return Err(format!("{}: {}", failure.category, failure.message));
    }
    let mut more = Vec::new();
    for result in answer.results {
        let id = result.from.id.into_string();
        let entry = links.entry(id.clone()).or_default();
        entry.extend(
            result.to.into_iter().map(
                |to| json!({"id": to.to_object_id.into_string(), "types": to.association_types}),
            ),
        );
        if let Some(next) = result.paging.and_then(|p| p.next) {
            more.push(json!({"id": id, "after": next.after}));
        }
    }
    Ok(more)
}

/// Writes each live record's links into its data as `associations`, every type present.
pub(super) fn attach<'a>(
    records: impl IntoIterator<Item = &'a mut Record>,
    links: &BTreeMap<String, Links>,
) {
    for record in records.into_iter().filter(|r| !r.archived) {
        let of_record: serde_json::Map<String, Value> = links
            .iter()
            .map(|(to, by_id)| {
                let found = by_id.get(&record.id).cloned().unwrap_or_default();
                (to.clone(), Value::Array(found))
            })
            .collect();
        record.data = with_member(&record.data, "associations", &Value::Object(of_record));
    }
}

/// `object` (a JSON object's bytes, as HubSpot sent it) with one more member at its end; the
/// rest is kept byte for byte.
fn with_member(object: &Json, name: &str, value: &Value) -> Json {
    let bytes = object.as_bytes();
    let end = bytes
        .iter()
        .rposition(|b| *b == b'}')
        .unwrap_or(bytes.len());
    let empty = bytes[..end].iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let value = value.to_string();
    let mut out = BytesMut::with_capacity(bytes.len() + name.len() + value.len() + 4);
    out.put_slice(&bytes[..end]);
    if !empty {
        out.put_u8(b',');
    }
    out.put_u8(b'"');
    out.put_slice(name.as_bytes());
    out.put_slice(b"\":");
    out.put_slice(value.as_bytes());
    out.put_u8(b'}');
    // An object with a member added is an object: no need to parse it again.
    Json::from_checked_bytes(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weld_pipeline::Timestamp;

    #[test]
    fn a_member_is_added_at_the_end_of_the_object_as_it_was() {
        for (before, after) in [
            (r#"{"id":"1"}"#, r#"{"id":"1","associations":{"a":[]}}"#),
            ("{ }", r#"{ "associations":{"a":[]}}"#),
            ("{\"id\":\"1\"}\n", r#"{"id":"1","associations":{"a":[]}}"#),
        ] {
            let json = Json::parse(before.as_bytes().to_vec()).unwrap();
            let added = with_member(&json, "associations", &json!({"a": []}));
            assert_eq!(std::str::from_utf8(added.as_bytes()).unwrap(), after);
            Json::parse(added.as_bytes().to_vec()).unwrap();
        }
    }

    #[test]
    fn an_answer_gives_links_with_their_types_and_the_ids_that_have_more() {
        let body = Bytes::from_static(
            br#"{"status":"COMPLETE","results":[
                {"from":{"id":"1"},"to":[{"toObjectId":456,"associationTypes":[{"category":"HUBSPOT_DEFINED","typeId":1,"label":"Primary"}]}],
                 "paging":{"next":{"after":"MQ%3D%3D"}}},
                {"from":{"id":"2"},"to":[{"toObjectId":"7","associationTypes":[]}]}],
              "numErrors":1,"errors":[{"status":"error","category":"NO_ASSOCIATIONS_FOUND","message":"No association found for 3"}]}"#,
        );
        let mut links = Links::new();
        let more = parse_into(&body, &mut links).unwrap();
        assert_eq!(more, vec![json!({"id": "1", "after": "MQ%3D%3D"})]);
        assert_eq!(
            links["1"],
            vec![
                json!({"id": "456", "types": [{"category": "HUBSPOT_DEFINED", "typeId": 1, "label": "Primary"}]})
            ]
        );
        assert_eq!(links["2"], vec![json!({"id": "7", "types": []})]);
        assert!(!links.contains_key("3"));
    }

    #[test]
    fn another_error_category_or_a_body_that_does_not_parse_fails_the_page() {
        let mut links = Links::new();
        let failed = Bytes::from_static(
            br#"{"results":[],"errors":[{"category":"RATE_LIMITS","message":"slow down"}]}"#,
        );
        assert!(parse_into(&failed, &mut links)
            .unwrap_err()
            .contains("RATE_LIMITS"));
        assert!(parse_into(&Bytes::from_static(b"<html>"), &mut links).is_err());
    }

    #[test]
    fn every_asked_type_is_written_into_live_records_only() {
        let record = |id: &str, archived| Record {
            id: id.into(),
            updated_at: Timestamp::from_millis(1),
            archived,
            amend: false,
            purge: false,
            data: Json::parse(format!(r#"{{"id":"{id}"}}"#).into_bytes()).unwrap(),
        };
        let mut records = vec![record("1", false), record("2", true)];
        let mut companies = Links::new();
        companies.insert("1".into(), vec![json!({"id": "9", "types": []})]);
        let links = BTreeMap::from([
            ("companies".into(), companies),
            ("deals".into(), Links::new()),
        ]);
        attach(&mut records, &links);
        let first: Value = serde_json::from_slice(records[0].data.as_bytes()).unwrap();
        assert_eq!(
            first["associations"],
            json!({"companies": [{"id": "9", "types": []}], "deals": []})
        );
        assert_eq!(records[1].data.as_bytes(), br#"{"id":"2"}"#);
    }
}
