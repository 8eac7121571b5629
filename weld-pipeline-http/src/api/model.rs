//! The API's bodies, as they travel: the runtime's types mapped to the contract's JSON (times in
//! RFC 3339, counts flattened), each with its OpenAPI schema.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use weld_pipeline::message::StreamConfig;
use weld_pipeline::runtime::{StreamState, StreamStatus};
use weld_pipeline::store::LastError;
use weld_pipeline::store::{RunRecord, RunState};
use weld_pipeline::transform::FieldTransform;
use weld_pipeline::{Record, SourceSpec, Timestamp};

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
    /// Records it committed.
    records: u64,
    /// Of those, records that repaired the store: a reconciliation sweep found them missing,
    /// stale, or gone for good at the source.
    repaired: u64,
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

/// `GET /streams/{name}/records`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RecordList {
    /// The page's records, in id order.
    pub(crate) records: Vec<RecordBody>,
    /// The token of the next page, `null` at the end.
    pub(crate) next: Option<String>,
}

/// One stored record.
#[derive(Debug, Serialize, ToSchema)]
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

impl RecordBody {
    /// The record as the API shows it. Its JSON was checked when it was fetched; it is written
    /// out as it is, without being rebuilt.
    pub(crate) fn new(record: Record) -> Result<Self, weld_pipeline::Error> {
        // Stored JSON that does not parse is damage, not a bad request.
        let data: &RawValue = record.data.decode().map_err(|error| {
            weld_pipeline::Error::Bug(format!(
                "stored record {} does not parse: {error}",
                record.id
            ))
        })?;
        Ok(RecordBody {
            data: data.to_owned(),
            id: record.id,
            updated_at: rfc3339(record.updated_at),
            archived: record.archived,
        })
    }
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
