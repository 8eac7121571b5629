//! The API's bodies, as they travel: the runtime's types mapped to the contract's JSON (times in
//! RFC 3339, counts flattened), each with its OpenAPI schema.

use std::io::Write;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use weld_pipeline::message::StreamConfig;
use weld_pipeline::runtime::{StreamState, StreamStatus};
use weld_pipeline::store::LastError;
use weld_pipeline::store::RecordPage;
use weld_pipeline::store::{RunRecord, RunState};
use weld_pipeline::transform::FieldTransform;
use weld_pipeline::{SourceSpec, Timestamp};

/// `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// `ok`, or `degraded` (with a 503) while storage cannot commit.
    #[schema(example = "ok")]
    pub(crate) status: &'static str,
    /// Workers connected now.
    pub(crate) workers: usize,
    /// `ok`, or why storage cannot commit (e.g. `No space left on device`); it heals by itself.
    #[schema(example = "ok")]
    pub(crate) storage: String,
    /// This replica's id, when it is one of several data-streams on one database; absent for a
    /// data-streams on its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) replica: Option<String>,
}

/// The body of `POST /streams/{name}/start`; every field is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartRequest {
    /// What to read: a source kind and its parameters, e.g.
    /// `{"kind":"hubspot","object":"contacts","properties":["email"]}` or
    /// `{"kind":"generator","records":1000}`. Default: the service's default source.
    #[serde(default)]
    #[schema(value_type = Option<Object>, example = json!({"kind": "hubspot", "object": "contacts"}))]
    pub(crate) source: Option<SourceSpec>,
    /// Seconds between the starts of two runs, 1..=86400. Default 300. A whole number written
    /// as a float (`300.0`) is the same number, as JSON Schema counts it.
    #[serde(default, deserialize_with = "whole_seconds")]
    #[schema(minimum = 1, maximum = 86400, example = 300)]
    pub(crate) interval_secs: Option<u64>,
    /// Field transforms applied to every record, in order (`rename`, `drop`, `redact` by JSON
    /// pointer). Default none.
    #[serde(default)]
    #[schema(schema_with = transforms_schema)]
    pub(crate) transforms: Option<Vec<FieldTransform>>,
}

/// An optional whole number of seconds: JSON Schema's `integer` is any number without a
/// fractional part, so `300.0` is taken as `300`; `300.5`, a negative or a string is refused.
fn whole_seconds<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(whole) = number.as_u64() {
        return Ok(Some(whole));
    }
    match number.as_f64() {
        // Below 2^53 every whole f64 converts exactly.
        Some(float) if float.fract() == 0.0 && (0.0..9.007_199_254_740_992e15).contains(&float) => {
            Ok(Some(float as u64))
        }
        _ => Err(D::Error::custom(format!(
            "interval_secs must be a whole number of seconds, got {number}"
        ))),
    }
}

/// The schema of a transform list: each item one of `{"rename":{"from","to"}}`, `{"drop"}`,
/// `{"redact"}`, every pointer starting with `/`.
fn transforms_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
    let pointer = || {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^/"))
            .description(Some("A JSON pointer (RFC 6901) to a field"))
    };
    let single = |key: &str, value: ObjectBuilder| {
        ObjectBuilder::new()
            .property(key, value)
            .required(key)
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
    };
    let rename = ObjectBuilder::new()
        .property("from", pointer())
        .property("to", pointer())
        .required("from")
        .required("to")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    let item = OneOfBuilder::new()
        .item(single("rename", rename))
        .item(single("drop", pointer()))
        .item(single("redact", pointer()));
    // `null` means the default (none), as for the other fields.
    utoipa::openapi::schema::ArrayBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::Array,
            Type::Null,
        ]))
        .items(item)
        .build()
}

/// A stream's status.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Status {
    /// The stream's name.
    name: String,
    /// `running` (a worker runs it), `pending` (waiting for a worker) or `stopped`.
    #[schema(value_type = String, example = "running")]
    state: StreamState,
    /// Its source.
    #[schema(value_type = Object, example = json!({"kind": "hubspot", "object": "contacts"}))]
    source: SourceSpec,
    /// Seconds between the starts of two runs.
    interval_secs: u64,
    /// Its transforms, when it has any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Option<Vec<Object>>)]
    transforms: Vec<FieldTransform>,
    /// The worker running it.
    worker: Option<String>,
    /// The data-streams replica whose worker runs it, when data-streams runs as several
    /// replicas on one database; absent for a data-streams on its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    replica: Option<String>,
    /// Live records stored.
    records: u64,
    /// Records stored that the source archived.
    archived: u64,
    /// Its newest run.
    last_run: Option<Run>,
    /// When its next run is due (RFC 3339), while it runs.
    next_run_at: Option<String>,
    /// The latest error its runs reported.
    last_error: Option<ErrorReport>,
}

impl From<StreamStatus> for Status {
    fn from(status: StreamStatus) -> Self {
        let StreamConfig {
            source,
            interval_secs,
            transforms,
        } = status.config;
        Status {
            name: status.name.to_string(),
            state: status.state,
            source,
            interval_secs,
            transforms,
            worker: status.worker,
            replica: status.replica,
            records: status.counts.live,
            archived: status.counts.archived,
            last_run: status.last_run.map(Run::from),
            next_run_at: status.next_run_at.map(rfc3339),
            last_error: status.last_error.map(ErrorReport::from),
        }
    }
}

/// A stream's latest error.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorReport {
    /// When it was reported (RFC 3339).
    at: String,
    /// What it said.
    message: String,
}

impl From<LastError> for ErrorReport {
    fn from(error: LastError) -> Self {
        ErrorReport {
            at: rfc3339(error.at),
            message: error.message,
        }
    }
}

/// `GET /streams`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StreamList {
    /// Every stream's status, by name.
    pub(crate) streams: Vec<Status>,
}

/// One run of a stream.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Run {
    /// The run's id (time-ordered).
    id: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    #[schema(value_type = String, example = "succeeded")]
    state: RunState,
    /// When it started (RFC 3339).
    started_at: String,
    /// When it ended (RFC 3339).
    finished_at: Option<String>,
    /// Records it committed: versions, amendments and purges alike.
    records: u64,
    /// Of those, records that repaired the store: a reconciliation sweep found them missing,
    /// stale, or gone for good at the source.
    repaired: u64,
    /// Of those, purges that removed a record from the store for good: records deleted at the
    /// source for privacy (a stream with `on_permanent_delete: purge`), of which no trace is
    /// kept. A purge of a record the store did not hold is not counted here.
    purged: u64,
    /// Why it failed.
    error: Option<String>,
}

impl From<RunRecord> for Run {
    fn from(run: RunRecord) -> Self {
        Run {
            id: run.id.to_string(),
            state: run.state,
            started_at: rfc3339(run.started_at),
            finished_at: run.finished_at.map(rfc3339),
            records: run.records,
            repaired: run.repaired,
            purged: run.purged,
            error: run.error,
        }
    }
}

/// `GET /streams/{name}/runs`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RunList {
    /// Newest first.
    pub(crate) runs: Vec<Run>,
}

/// The query of `GET /streams/{name}/runs`. Values are read as text and checked by the handler,
/// so a bad one is a 422 that says what is wrong.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RunsQuery {
    /// Runs to return, 1..=1000. Default 20.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub(crate) limit: Option<String>,
}

/// The query of `GET /streams/{name}/records`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RecordsQuery {
    /// Records to return, 1..=1000. Default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub(crate) limit: Option<String>,
    /// The `next` token of the previous page.
    #[param(pattern = "^([0-9a-f]{2})*$")]
    pub(crate) after: Option<String>,
    /// `false` (default): live records; `true`: those archived at the source; `all`: both.
    #[param(inline, value_type = Option<ArchivedFilter>, example = "false")]
    pub(crate) archived: Option<String>,
}

/// The values `archived` takes, for the document (the query reads it as text and says what is
/// wrong with any other value).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // described, never built: the handler matches the text
pub(crate) enum ArchivedFilter {
    /// Live records only.
    False,
    /// Only those archived at the source.
    True,
    /// Both.
    All,
}

/// `GET /streams/{name}/records`: the schema of the body [`record_list`] writes.
#[derive(Debug, ToSchema)]
#[allow(
    dead_code,
    reason = "the OpenAPI schema of a body written by record_list"
)]
pub(crate) struct RecordList {
    /// The page's records, in id order.
    records: Vec<RecordBody>,
    /// The token of the next page, `null` at the end.
    next: Option<String>,
}

/// One stored record.
#[derive(Debug, ToSchema)]
#[allow(
    dead_code,
    reason = "the OpenAPI schema of a body written by record_list"
)]
pub(crate) struct RecordBody {
    /// Its id at the source.
    id: String,
    /// Its modification time at the source (RFC 3339).
    updated_at: String,
    /// Whether the source archived (deleted) it.
    archived: bool,
    /// The object as the source returned it, after the stream's transforms.
    #[schema(value_type = Object)]
    data: Box<RawValue>,
}

/// The JSON of a page of records ([`RecordList`]), written straight from the stored bytes.
///
/// A record's data was checked as JSON where it entered the pipeline and comes out as it was
/// stored, neither parsed nor rebuilt: checking 1,000 stored records again and copying each
/// into a value of its own took a third of a page's time.
pub(crate) fn record_list(page: &RecordPage) -> Vec<u8> {
    // Each record's data, and room for its id, time and keys.
    let size: usize = page
        .records
        .iter()
        .map(|r| r.data.as_bytes().len() + r.id.len() + 80)
        .sum();
    let mut body = Vec::with_capacity(size + 64);
    body.extend_from_slice(b"{\"records\":[");
    for (i, record) in page.records.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"id\":");
        json_string(&mut body, &record.id);
        // A time's RFC 3339 form and a bool hold nothing JSON escapes.
        let _ = write!(
            body,
            ",\"updated_at\":\"{}\",\"archived\":{},\"data\":",
            rfc3339(record.updated_at),
            record.archived
        );
        body.extend_from_slice(record.data.as_bytes());
        body.push(b'}');
    }
    body.extend_from_slice(b"],\"next\":");
    match &page.next {
        Some(token) => json_string(&mut body, token),
        None => body.extend_from_slice(b"null"),
    }
    body.push(b'}');
    body
}

/// Writes `text` as a JSON string.
fn json_string(body: &mut Vec<u8>, text: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(body, text);
}

/// The answers of every route behind the API's token, beside its own.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Named for the OpenAPI document only.
pub(crate) enum Guarded {
    /// The token is missing or wrong.
    #[response(status = 401, description = "Missing or wrong token")]
    Unauthorized(ErrorBody),
    /// The client is shut out for a while after wrong tokens.
    #[response(
        status = 429,
        description = "Too many wrong tokens from this client: not checked until `Retry-After` seconds have passed"
    )]
    Throttled(ErrorBody),
}

/// The answers of a route on one stream when the name is not one.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Named for the OpenAPI document only.
pub(crate) enum NamedStream {
    /// No stream has this name.
    #[response(status = 404, description = "No such stream")]
    NotFound(ErrorBody),
    /// The name cannot be a stream's.
    #[response(status = 422, description = "Invalid name")]
    InvalidName(ErrorBody),
}

/// Every error: `{"error":{"code":"<snake_case>","message":"<human text>"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong: a stable code and a message for a human.
    pub(crate) error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// A stable, machine-readable code: `malformed_json`, `unauthorized`, `stream_not_found`,
    /// `body_too_large`, `invalid_value`, `not_found`, `method_not_allowed`, `unavailable`,
    /// `internal`.
    #[schema(example = "invalid_value")]
    pub(crate) code: &'static str,
    /// What a human should know.
    pub(crate) message: String,
}

fn rfc3339(at: Timestamp) -> String {
    at.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weld_pipeline::record::Json;
    use weld_pipeline::Record;

    fn record(id: &str, data: &str, archived: bool) -> Record {
        let mut record = Record::new(
            id,
            Timestamp::from_millis(1_700_000_000_123),
            Json::parse(data.as_bytes().to_vec()).expect("test data is JSON"),
        );
        record.archived = archived;
        record
    }

    #[test]
    fn a_page_is_written_as_the_json_of_its_records_with_data_as_stored() {
        let data = r#"{"email":"a\"b@x.io","name":"<script>é</script>","n":[1,2.5,null]}"#;
        let page = RecordPage {
            records: vec![record("1\"2\\3\n", data, false), record("7", "{}", true)],
            next: Some("tok\"en".into()),
        };
        let body = record_list(&page);
        let parsed: serde_json::Value = serde_json::from_slice(&body).expect("the page is JSON");
        assert_eq!(
            parsed,
            serde_json::json!({
                "records": [
                    {"id": "1\"2\\3\n", "updated_at": "2023-11-14T22:13:20.123Z",
                     "archived": false,
                     "data": {"email": "a\"b@x.io", "name": "<script>é</script>", "n": [1, 2.5, null]}},
                    {"id": "7", "updated_at": "2023-11-14T22:13:20.123Z", "archived": true,
                     "data": {}},
                ],
                "next": "tok\"en",
            })
        );
        // The data's bytes are those stored, not a re-serialization of them.
        let text = String::from_utf8(body).expect("UTF-8");
        assert!(text.contains(data), "{text}");
    }

    #[test]
    fn the_last_page_has_a_null_next_and_an_empty_page_no_records() {
        let page = RecordPage {
            records: Vec::new(),
            next: None,
        };
        assert_eq!(record_list(&page), br#"{"records":[],"next":null}"#);
    }
}
