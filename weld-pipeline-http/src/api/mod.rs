//! The HTTP API of data-streams: start, stop, inspect and read streams (feature `api`).
//!
//! [`router`] builds the whole API as an axum [`Router`] over anything that implements
//! [`Streams`] (a [`Controller`] does, over any transport), so a service serves it on its own
//! listener and a test calls it without a socket:
//!
//! | method and path | does |
//! |---|---|
//! | `GET /health` | `{"status":"ok","workers":N,"storage":"ok"}`; while storage cannot commit `{"status":"degraded",...,"storage":"<why>"}` with 503; never behind the token; a replica of several adds `"replica":"<its id>"` |
//! | `GET /metrics` | Prometheus text, from the [`PrometheusHandle`] given |
//! | `GET /openapi.json` | the OpenAPI 3 document, generated from the handlers, with the service's source kinds ([`openapi_for`]) |
//! | `POST /streams/{name}/start` | create or update, then run; idempotent |
//! | `POST /streams/{name}/stop` | stop at the next page boundary; idempotent |
//! | `POST /streams/{name}/resync` | the next run reads the whole source again; nothing stored is dropped |
//! | `GET /streams`, `GET /streams/{name}` | status; when data-streams runs as several replicas ([`Storage::replica`](weld_pipeline::store::Storage::replica)), `"replica"` names the one whose worker runs the stream |
//! | `GET /streams/{name}/records` | stored records, paged by token, each once |
//! | `GET /streams/{name}/runs` | run history, newest first |
//! | `DELETE /streams/{name}` | stop, then delete configuration and data |
//!
//! Every error is `{"error":{"code","message"}}`: 400 `malformed_json` for a body that is not
//! JSON, 401 `unauthorized` when [`ApiConfig::token`] is set and the request lacks it, 429
//! `too_many_wrong_tokens` with `Retry-After` for a client shut out for guessing (below), 404
//! `stream_not_found`, 413 `body_too_large` past [`BODY_LIMIT`], 422 `invalid_value` for JSON
//! the API does not take (an unknown field, a name, a limit or an interval out of range), 409
//! `source_changed` for a start naming another source than its existing stream reads, 404
//! `not_found` and 405 `method_not_allowed` for routes that do not exist, 503 `unavailable` when
//! storage fails transiently. Bad input is answered, not logged as an error.
//!
//! Reads (counts, pages, statuses) see a commit as soon as it is written, a few milliseconds
//! before the sync that makes it durable and lets it be acknowledged. After a power loss a
//! count can therefore step back by the batches that were visible but not yet synced (16,000,
//! then 15,900); their workers never had the ack, send them again, and the count moves on. Serving
//! only synced state would cost every read a wait for the next sync round.
//!
//! The listener's limits (connections, header, idle, body and request timeouts) are those of
//! [`listener`](crate::listener); the reference service uses its defaults.
//!
//! # Limits
//!
//! Besides the listener's, with a token configured:
//!
//! | limit | default | checked | on breach |
//! |---|---|---|---|
//! | the token's length, [`MIN_TOKEN_BYTES`] | 16 bytes | [`ApiToken::new`], so at the service's start | `Error::Invalid` saying how to make a token; the example services exit with status 2 |
//! | wrong tokens in a row per client (its IP; an IPv6 one by its /64) | 4 free | each request with a `Bearer` token but a wrong one, and each dashboard login; shared by the clones of one [`ApiToken`] | the client is shut out for 1 s, doubling per further wrong token to 60 s: 429 `too_many_wrong_tokens` with `Retry-After`, its token not looked at; a right token, or 15 min without a wrong one, clears the count |
//! | clients remembered | 10,000 (under 1 MiB) | when a new client fails | those quiet 15 min go first, then the tenth that failed longest ago |
//! | the log of wrong tokens | 1 line per 30 s | each wrong token | the first of a period is logged (`warn`, with its client), the others counted and their number logged with the next one after 30 s |
//! | security headers | always | every answer | `X-Frame-Options: DENY`, `Content-Security-Policy: default-src 'none'; frame-ancestors 'none'`, `X-Content-Type-Options: nosniff`, `Cache-Control: no-store` |
//!
//! A request with no token at all is answered 401 and not counted: it guesses nothing. The
//! client is the peer address the listener gives in the request's `ConnectInfo<SocketAddr>`;
//! requests without one (a router called with `oneshot`) count as one client together. Metrics:
//! `weld_token_failures_total` and `weld_token_throttled_total`, labelled `via` (`api` or
//! `dashboard`).
//!
//! The API knows no source: a start body's `source` is checked by the controller's
//! [`SourceKinds`], and a start without one gets the first kind registered there.
//!
//! ```
//! use std::sync::Arc;
//! use weld_pipeline::runtime::Controller;
//! use weld_pipeline::source::{GeneratorSources, SourceKinds};
//! use weld_pipeline::store::Storage;
//! use weld_pipeline::transport::MemoryPeer;
//! use weld_pipeline_http::api::{self, ApiConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let kinds = SourceKinds::new().with(Arc::new(GeneratorSources));
//! let controller = Controller::<MemoryPeer>::new(Storage::sled(dir.path())?, kinds);
//! let app: axum::Router = api::router(controller, ApiConfig::default());
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```

mod error;
mod extract;
mod guesses;
mod headers;
mod model;
mod routes;
mod token;

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
pub use metrics_exporter_prometheus::PrometheusHandle;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use weld_pipeline::message::StreamConfig;
use weld_pipeline::runtime::{ConnectedWorker, Controller, StreamStatus};
use weld_pipeline::source::SourceKinds;
use weld_pipeline::store::StreamStore;
use weld_pipeline::transport::Peer;
use weld_pipeline::{Error, StreamName};

use error::ApiError;
pub(crate) use guesses::{Client, Verdict, Via};
pub(crate) use headers::secure;
pub use token::{ApiToken, MIN_TOKEN_BYTES};

/// The largest request body taken: a start request is well under 1 KiB; 64 KiB leaves room for
/// long property lists and transforms without letting a client make the service buffer much.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What the API needs of a controller: its stream operations, its store for reads, and the
/// source kinds it accepts.
///
/// [`Controller`] implements it over every transport; the API holds it as a trait object, so
/// one router serves a TCP or an HTTP controller alike.
#[async_trait]
pub trait Streams: Send + Sync + 'static {
    /// See [`Controller::start_stream`].
    async fn start_stream(
        &self,
        name: &StreamName,
        config: StreamConfig,
    ) -> Result<StreamStatus, Error>;
    /// See [`Controller::stop_stream`].
    async fn stop_stream(&self, name: &StreamName) -> Result<Option<StreamStatus>, Error>;
    /// See [`Controller::resync_stream`].
    async fn resync_stream(&self, name: &StreamName) -> Result<Option<StreamStatus>, Error>;
    /// See [`Controller::delete_stream`].
    async fn delete_stream(&self, name: &StreamName) -> Result<bool, Error>;
    /// See [`Controller::status`].
    async fn status(&self, name: &StreamName) -> Result<Option<StreamStatus>, Error>;
    /// See [`Controller::streams`].
    async fn streams(&self) -> Result<Vec<StreamStatus>, Error>;
    /// See [`Controller::workers`].
    fn workers(&self) -> usize;
    /// See [`Controller::connected_workers`]. None by default, for implementations that keep
    /// no such list.
    fn connected_workers(&self) -> Vec<ConnectedWorker> {
        Vec::new()
    }
    /// See [`Controller::replica`]. None by default: a controller on its own.
    fn replica(&self) -> Option<String> {
        None
    }
    /// See [`Controller::store`].
    fn store(&self) -> &Arc<dyn StreamStore>;
    /// See [`Controller::sources`].
    fn sources(&self) -> &SourceKinds;
}

#[async_trait]
impl<P: Peer> Streams for Controller<P> {
    async fn start_stream(
        &self,
        name: &StreamName,
        config: StreamConfig,
    ) -> Result<StreamStatus, Error> {
        Controller::start_stream(self, name, config).await
    }
    async fn stop_stream(&self, name: &StreamName) -> Result<Option<StreamStatus>, Error> {
        Controller::stop_stream(self, name).await
    }
    async fn resync_stream(&self, name: &StreamName) -> Result<Option<StreamStatus>, Error> {
        Controller::resync_stream(self, name).await
    }
    async fn delete_stream(&self, name: &StreamName) -> Result<bool, Error> {
        Controller::delete_stream(self, name).await
    }
    async fn status(&self, name: &StreamName) -> Result<Option<StreamStatus>, Error> {
        Controller::status(self, name).await
    }
    async fn streams(&self) -> Result<Vec<StreamStatus>, Error> {
        Controller::streams(self).await
    }
    fn workers(&self) -> usize {
        Controller::workers(self)
    }
    fn connected_workers(&self) -> Vec<ConnectedWorker> {
        Controller::connected_workers(self)
    }
    fn replica(&self) -> Option<String> {
        Controller::replica(self).map(str::to_owned)
    }
    fn store(&self) -> &Arc<dyn StreamStore> {
        Controller::store(self)
    }
    fn sources(&self) -> &SourceKinds {
        Controller::sources(self)
    }
}

/// How the API is served.
#[derive(Clone, Debug, Default)]
pub struct ApiConfig {
    /// When set, every route but `/health` needs `Authorization: Bearer <token>`
    /// (`WELD_API_TOKEN`). `Debug` shows it redacted.
    pub token: Option<ApiToken>,
    /// The Prometheus recorder's handle that `/metrics` renders; without one it answers an
    /// empty document.
    pub metrics: Option<PrometheusHandle>,
}

/// The API's shared state.
struct Api {
    streams: Arc<dyn Streams>,
    metrics: Option<PrometheusHandle>,
    token: Option<ApiToken>,
    /// `/openapi.json`, built once.
    document: Bytes,
}

/// Routes and their OpenAPI descriptions, registered together so that neither can miss one.
fn routes() -> OpenApiRouter<Arc<Api>> {
    OpenApiRouter::with_openapi(description())
        .routes(routes!(routes::health))
        .routes(routes!(routes::metrics))
        .routes(routes!(routes::openapi))
        .routes(routes!(routes::list_streams))
        .routes(routes!(routes::get_stream, routes::delete_stream))
        .routes(routes!(routes::start_stream))
        .routes(routes!(routes::stop_stream))
        .routes(routes!(routes::resync_stream))
        .routes(routes!(routes::list_records))
        .routes(routes!(routes::list_runs))
}

fn description() -> OpenApi {
    let mut doc = utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("data-streams")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Scheduled syncs from external APIs (HubSpot): start, stop, inspect and read streams.",
                ))
                .build(),
        )
        .build();
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    doc.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
        "bearer",
        Vec::<String>::new(),
    )]);
    doc
}

/// The OpenAPI 3 document of the API, generated from its handlers; a start body's `source` is
/// any object. [`openapi_for`] describes one service's sources.
pub fn openapi() -> OpenApi {
    routes().split_for_parts().1
}

/// The OpenAPI 3 document of a service that accepts `kinds`, as JSON: a start body's `source`
/// is one of their parameter schemas ([`SourceKinds::schema`]) or `null`, so the document
/// refuses what the service refuses.
pub fn openapi_for(kinds: &SourceKinds) -> serde_json::Value {
    let mut doc = serde_json::to_value(openapi()).unwrap_or_default();
    if let Some(source) = doc.pointer_mut("/components/schemas/StartRequest/properties/source") {
        *source = serde_json::json!({
            "description": "What to read: one of the source kinds this service runs, with its \
                parameters. Default (absent or null): the first kind, with its defaults.",
            "oneOf": [kinds.schema(), {"type": "null"}],
        });
    }
    doc
}

/// The API over `streams` (a [`Controller`]), with a 64 KiB body limit, the bearer check when a
/// token is configured, and errors in the API's shape for unknown routes and methods.
pub fn router(streams: Arc<dyn Streams>, config: ApiConfig) -> Router {
    let document = serde_json::to_vec(&openapi_for(streams.sources()))
        .map(Bytes::from)
        .unwrap_or_default();
    let api = Arc::new(Api {
        streams,
        metrics: config.metrics,
        token: config.token,
        document,
    });
    let (router, _) = routes().split_for_parts();
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(api.clone(), authorize))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(api);
    secure(router, headers::API_POLICY)
}

/// Lets a request through when no token is configured, it is `/health`, or it carries the token
/// and its client is not shut out for guessing (see the [limits](self#limits)). A request with no
/// token at all is no guess, and is answered 401 without counting.
async fn authorize(State(api): State<Arc<Api>>, request: Request, next: Next) -> Response {
    if let Some(token) = &api.token {
        if request.uri().path() != "/health" {
            let presented = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|value| bearer(value.as_bytes()));
            let Some(presented) = presented else {
                return ApiError::unauthorized().into_response();
            };
            match token.check(Client::of(request.extensions()), Via::Api, presented) {
                Verdict::Allowed => {}
                Verdict::Wrong => return ApiError::unauthorized().into_response(),
                Verdict::Throttled(wait) => return ApiError::throttled(wait).into_response(),
            }
        }
    }
    next.run(request).await
}

/// The credentials of an `Authorization: Bearer <token>` header; the scheme's name is
/// case-insensitive (RFC 9110).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route {} {}",
            error::cut(request.method().as_str()),
            error::cut(request.uri().path())
        ),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not a method of {}",
            error::cut(request.method().as_str()),
            error::cut(request.uri().path())
        ),
    )
}
