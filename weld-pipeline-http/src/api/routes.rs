//! The handlers, one per route, each with its OpenAPI description.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::error::Category;
use weld_pipeline::message::StreamConfig;
use weld_pipeline::store::Archived;
use weld_pipeline::StreamName;

use super::error::{cut, ApiError};
use super::extract::{ApiQuery, StreamPath};
use super::model::{
    record_list, ErrorBody, Guarded, Health, NamedStream, RecordList, RecordsQuery, RunList,
    RunsQuery, StartRequest, Status, StreamList,
};
use super::{Api, BODY_LIMIT};
use weld_pipeline::source::SourceKinds;
use weld_pipeline::store::StoreHealth;

type Shared = State<Arc<Api>>;
type Answer<T> = Result<T, ApiError>;

/// The default interval: five minutes, the original integration's.
const DEFAULT_INTERVAL_SECS: u64 = 300;
/// The longest interval: a day. Longer schedules belong to a calendar, not a sync.
const MAX_INTERVAL_SECS: u64 = 86_400;

#[utoipa::path(get, path = "/health", tag = "service", security(()),
    responses(
        (status = 200, description = "The service is up and its storage commits", body = Health),
        (status = 503, description = "Degraded: storage cannot commit (it heals by itself)", body = Health),
    ))]
pub(crate) async fn health(State(api): Shared) -> (StatusCode, Json<Health>) {
    let workers = api.streams.workers();
    let replica = api.streams.replica();
    match api.streams.store().health() {
        StoreHealth::Ok => (
            StatusCode::OK,
            Json(Health {
                status: "ok",
                workers,
                storage: "ok".into(),
                replica,
            }),
        ),
        StoreHealth::Failed { reason, .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "degraded",
                workers,
                storage: reason,
                replica,
            }),
        ),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "service",
    responses(
        (status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"),
        Guarded,
    ))]
pub(crate) async fn metrics(State(api): Shared) -> impl IntoResponse {
    let text = match &api.metrics {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

#[utoipa::path(get, path = "/openapi.json", tag = "service",
    responses(
        (status = 200, description = "This document", body = Object),
        Guarded,
    ))]
pub(crate) async fn openapi(State(api): Shared) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        api.document.clone(),
    )
}

#[utoipa::path(post, path = "/streams/{name}/start", tag = "streams",
    params(StreamPath),
    request_body(content = Option<StartRequest>, description = "Optional; defaults: the service's default source (HubSpot contacts in the reference service), every 300 s"),
    responses(
        (status = 200, description = "Started (or already running); its status", body = Status),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        Guarded,
        (status = 409, description = "The stream exists and reads another source", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 422, description = "Invalid name, source or interval", body = ErrorBody),
    ))]
pub(crate) async fn start_stream(
    State(api): Shared,
    StreamPath(_, stream): StreamPath,
    body: Result<Bytes, BytesRejection>,
) -> Answer<Json<Status>> {
    let body = body_bytes(body)?;
    let current = api
        .streams
        .status(&stream)
        .await?
        .map(|status| status.config);
    let config = stream_config(&body, current.as_ref(), api.streams.sources())?;
    let status = api.streams.start_stream(&stream, config).await?;
    Ok(Json(status.into()))
}

#[utoipa::path(post, path = "/streams/{name}/stop", tag = "streams",
    params(StreamPath),
    responses(
        (status = 200, description = "Stopped: no source request starts after this answer", body = Status),
        Guarded,
        NamedStream,
    ))]
pub(crate) async fn stop_stream(
    State(api): Shared,
    StreamPath(name, stream): StreamPath,
) -> Answer<Json<Status>> {
    match api.streams.stop_stream(&stream).await? {
        Some(status) => Ok(Json(status.into())),
        None => Err(ApiError::no_stream(&name)),
    }
}

#[utoipa::path(post, path = "/streams/{name}/resync", tag = "streams",
    params(StreamPath),
    responses(
        (status = 200, description = "The next run reads the whole source again (a full sync), then goes on incrementally; nothing stored is dropped first. A run in flight is stopped at its page boundary first. A stopped stream stays stopped.", body = Status),
        Guarded,
        NamedStream,
        (status = 503, description = "Storage cannot be written right now", body = ErrorBody),
    ))]
pub(crate) async fn resync_stream(
    State(api): Shared,
    StreamPath(name, stream): StreamPath,
) -> Answer<Json<Status>> {
    match api.streams.resync_stream(&stream).await? {
        Some(status) => Ok(Json(status.into())),
        None => Err(ApiError::no_stream(&name)),
    }
}

#[utoipa::path(get, path = "/streams", tag = "streams",
    responses(
        (status = 200, description = "Every stream, by name", body = StreamList),
        Guarded,
    ))]
pub(crate) async fn list_streams(State(api): Shared) -> Answer<Json<StreamList>> {
    let streams = api.streams.streams().await?;
    Ok(Json(StreamList {
        streams: streams.into_iter().map(Status::from).collect(),
    }))
}

#[utoipa::path(get, path = "/streams/{name}", tag = "streams",
    params(StreamPath),
    responses(
        (status = 200, description = "Its status", body = Status),
        Guarded,
        NamedStream,
    ))]
pub(crate) async fn get_stream(
    State(api): Shared,
    StreamPath(name, stream): StreamPath,
) -> Answer<Json<Status>> {
    match api.streams.status(&stream).await? {
        Some(status) => Ok(Json(status.into())),
        None => Err(ApiError::no_stream(&name)),
    }
}

#[utoipa::path(delete, path = "/streams/{name}", tag = "streams",
    params(StreamPath),
    responses(
        (status = 204, description = "Stopped, and its configuration and data deleted"),
        Guarded,
        NamedStream,
    ))]
pub(crate) async fn delete_stream(
    State(api): Shared,
    StreamPath(name, stream): StreamPath,
) -> Answer<StatusCode> {
    if api.streams.delete_stream(&stream).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::no_stream(&name))
    }
}

#[utoipa::path(get, path = "/streams/{name}/records", tag = "streams",
    params(StreamPath, RecordsQuery),
    responses(
        (status = 200, description = "A page of stored records; `next` pages on, each record once", body = RecordList),
        Guarded,
        (status = 404, description = "No such stream", body = ErrorBody),
        (status = 422, description = "Invalid name, limit, token or archived", body = ErrorBody),
    ))]
pub(crate) async fn list_records(
    State(api): Shared,
    StreamPath(name, stream): StreamPath,
    ApiQuery(query): ApiQuery<RecordsQuery>,
) -> Answer<impl IntoResponse> {
    let limit = limit(query.limit.as_deref(), 100)?;
    let archived = match query.archived.as_deref() {
        None | Some("false") => Archived::Live,
        Some("true") => Archived::Only,
        Some("all") => Archived::All,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "archived must be false, true or all, not {:?}",
                cut(other)
            )))
        }
    };
    let page = api
        .streams
        .store()
        .existing_records(&stream, query.after.as_deref(), limit, archived)
        .await?
        .ok_or_else(|| ApiError::no_stream(&name))?;
    // Up to 1,000 records written out: off the runtime's threads, which carry the workers' deliveries.
    let body = tokio::task::spawn_blocking(move || record_list(&page))
        .await
        .map_err(|e| weld_pipeline::Error::from_join("a records page", e))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body))
}

#[utoipa::path(get, path = "/streams/{name}/runs", tag = "streams",
    params(StreamPath, RunsQuery),
    responses(
        (status = 200, description = "Its runs, newest first", body = RunList),
        Guarded,
        (status = 404, description = "No such stream", body = ErrorBody),
        (status = 422, description = "Invalid name or limit", body = ErrorBody),
    ))]
pub(crate) async fn list_runs(
    State(api): Shared,
    path: StreamPath,
    ApiQuery(query): ApiQuery<RunsQuery>,
) -> Answer<Json<RunList>> {
    let limit = limit(query.limit.as_deref(), 20)?;
    let stream = existing_stream(&api, path).await?;
    let runs = api.streams.store().runs(&stream, limit).await?;
    Ok(Json(RunList {
        runs: runs.into_iter().map(Into::into).collect(),
    }))
}

/// The stream of this path, when it exists: its runs are read without the registry, which alone
/// tells a deleted stream from one without runs. Its registry entry only: a whole status costs
/// a store its run and counts aggregates (on PostgreSQL they grow with the ledger), which a page
/// of runs does not show. (A records page asks the store for both at once.)
async fn existing_stream(api: &Api, path: StreamPath) -> Answer<StreamName> {
    let StreamPath(name, stream) = path;
    match api.streams.store().stream(&stream).await? {
        Some(_) => Ok(stream),
        None => Err(ApiError::no_stream(&name)),
    }
}

fn limit(text: Option<&str>, default: usize) -> Answer<usize> {
    let Some(text) = text else {
        return Ok(default);
    };
    // Digits only: `+5` or ` 5` parse as numbers in Rust, and are not what the API documents.
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<usize>() {
        Ok(limit @ 1..=1000) if digits => Ok(limit),
        _ => Err(ApiError::invalid(format!(
            "limit must be a whole number from 1 to 1000, not {:?}",
            cut(text)
        ))),
    }
}

/// The body, or the reason it could not be read: over the limit is a 413 in the API's shape.
fn body_bytes(body: Result<Bytes, BytesRejection>) -> Answer<Bytes> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(BODY_LIMIT)
        } else {
            ApiError::new(rejection.status(), "bad_request", rejection.body_text())
        }
    })
}

/// The configuration a start body asks for. A new stream gets the defaults for what the body
/// leaves out; an existing one keeps its own (so a bare start of a stopped stream resumes it as it
/// was). JSON that does not parse is a 400; JSON that parses into something the API does not take
/// is a 422. A source that reads other records than an existing stream's is a 409: its
/// checkpoint and records belong to the source they came from; the same records read another
/// way (a HubSpot stream's property list) apply from the next run.
fn stream_config(
    body: &[u8],
    current: Option<&StreamConfig>,
    kinds: &SourceKinds,
) -> Answer<StreamConfig> {
    let request: StartRequest = if body.iter().all(u8::is_ascii_whitespace) {
        StartRequest::default()
    } else {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|error| match error.classify() {
                Category::Syntax | Category::Eof | Category::Io => ApiError::malformed(error),
                Category::Data => ApiError::invalid(error.to_string()),
            })?;
        // serde would take an array for a struct, field by field: only an object is a request,
        // and `null` says what no body says.
        match value {
            serde_json::Value::Null => StartRequest::default(),
            value if value.is_object() => serde_json::from_value(value)
                .map_err(|error| ApiError::invalid(error.to_string()))?,
            _ => return Err(ApiError::invalid("the body must be a JSON object")),
        }
    };
    let interval_secs = request
        .interval_secs
        .or(current.map(|c| c.interval_secs))
        .unwrap_or(DEFAULT_INTERVAL_SECS);
    if !(1..=MAX_INTERVAL_SECS).contains(&interval_secs) {
        return Err(ApiError::invalid(format!(
            "interval_secs must be from 1 to {MAX_INTERVAL_SECS}, not {interval_secs}"
        )));
    }
    let source = match (request.source, current) {
        (Some(source), _) => kinds.check(&source)?,
        (None, Some(current)) => current.source.clone(),
        (None, None) => kinds.default_spec().ok_or_else(|| {
            ApiError::invalid("this service has no default source: name one in the body")
        })?,
    };
    if let Some(current) = current {
        if !kinds.same_records(&current.source, &source) {
            let json = |spec| serde_json::to_string(spec).unwrap_or_default();
            return Err(ApiError::source_changed(format!(
                "a stream's source cannot change (it reads {}, not {}): its checkpoint and records \
                 belong to that source; delete the stream first, or start another one",
                cut(&json(&current.source)),
                cut(&json(&source)),
            )));
        }
    }
    let transforms = match request.transforms {
        Some(transforms) => transforms,
        None => current.map(|c| c.transforms.clone()).unwrap_or_default(),
    };
    for transform in &transforms {
        transform.check()?;
    }
    Ok(StreamConfig {
        source,
        interval_secs,
        transforms,
    })
}
