//! The dashboard: the streams at a glance, in a browser, served by data-streams itself (feature
//! `dashboard`).
//!
//! [`router`] builds server-rendered HTML pages over the same [`Streams`] the API reads, as an
//! axum [`Router`] to merge beside the API (the reference data-streams serves it at `/`) or to
//! nest under a path of a user's own app:
//!
//! | page | shows |
//! |---|---|
//! | `GET /` | every stream: state, worker, records, archived, last run (outcome, duration, records), next run, last error, and the storage state of `/health`; refreshes itself every 5 s |
//! | `GET /ui/streams/{name}` | one stream: its status, buttons to start, stop, resync and delete it, its source and configuration, its runs, a page of its records with their properties (`?after=` pages on) |
//! | `GET /ui/workers` | the connected workers: id, source kinds, streams, since when, outbox depth; refreshes itself |
//! | `POST /ui/streams/{name}/start`, `/stop`, `/resync`, `/delete` | the buttons; a delete first asks on `GET /ui/streams/{name}/delete` |
//! | `GET`/`POST /ui/login`, `POST /ui/logout` | the login, when the API has a token |
//!
//! Mounted under a path, the path must be literal (`/admin`, not `/{tenant}/admin`): links are
//! built from it.
//!
//! The pages are HTML and CSS, with no script at all: they read and act without JavaScript, and
//! fit a phone's width. Every value is escaped by [maud](https://maud.lambda.xyz) (chosen over a
//! template language for that: markup in Rust, checked when the crate compiles, escaping
//! everything unless told not to), so a record property or an error holding `<script>` shows as
//! text. Times show relative and absolute (`12 s ago (2026-12-02 01:02:03 UTC)`), numbers with
//! separators.
//!
//! With [`DashboardConfig::token`] set (the API's `WELD_API_TOKEN`), every page but the login
//! answers 401 with the login form until the token is given there; the login sets an `HttpOnly`,
//! `SameSite=Strict` cookie of a session derived from the token (it lasts 12 hours; changing the
//! token ends every session; a logout ends its own, copies of the cookie included, recorded in
//! [`DashboardConfig::logouts`]). A wrong token at the login counts against the client as a
//! wrong Bearer token does, in the same throttle (the [API's limits](crate::api#limits)): a
//! client shut out is answered 429 with `Retry-After` and the login form saying how long to
//! wait. Every button's form carries the session's CSRF token, without
//! which a POST is refused with 403. With a token or without, a POST that a browser marks as
//! coming from another site (`Sec-Fetch-Site`, or an `Origin` other than the `Host`) is refused
//! with 403: a page elsewhere cannot press the buttons. The pages are served on the API's listener and under its
//! limits (connections, header, idle and request timeouts); a form's body is at most
//! [`FORM_LIMIT`] (4 KiB, a 413 past it), and only the login's is read before the session is
//! checked; logouts are remembered up to [`MAX_ENDED`] at once, each until its session would
//! have expired. Every page carries `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff`,
//! `Cache-Control: no-store` and a `Content-Security-Policy` that lets it load nothing but its
//! inline style sheet, run no script, post only to itself and show in no frame. Behind TLS,
//! terminate it in front as for the API.
//!
//! ```
//! use std::sync::Arc;
//! use weld_pipeline::runtime::Controller;
//! use weld_pipeline::source::{GeneratorSources, SourceKinds};
//! use weld_pipeline::store::Storage;
//! use weld_pipeline::transport::MemoryPeer;
//! use weld_pipeline_http::api::{self, ApiConfig};
//! use weld_pipeline_http::dashboard::{self, DashboardConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let kinds = SourceKinds::new().with(Arc::new(GeneratorSources));
//! let controller = Controller::<MemoryPeer>::new(Storage::sled(dir.path())?, kinds);
//! let app: axum::Router = api::router(controller.clone(), ApiConfig::default())
//!     .merge(dashboard::router(controller, DashboardConfig::default()));
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```

mod access;
mod context;
mod format;
mod logouts;
mod pages;
mod render;
mod session;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use crate::api::{ApiToken, Streams};
use access::{guard, login, login_page, logout};
use context::Dashboard;
pub use logouts::{Logouts, MAX_ENDED};
use pages::{act, confirm_delete, delete, stream_page, streams_page, workers_page};

/// The largest form taken: a login or a button's CSRF token is well under 1 KiB, and a login
/// is read before anyone is known, so nothing larger is buffered.
pub const FORM_LIMIT: usize = 4 * 1024;

/// The dashboard's `Content-Security-Policy`: its pages load nothing but their own inline style
/// sheet, run no script, post forms only to itself, and show in no frame.
const POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
    base-uri 'none'; frame-ancestors 'none'";

/// How the dashboard is served.
#[derive(Clone, Debug, Default)]
pub struct DashboardConfig {
    /// When set, the pages need a login with this token (the API's `WELD_API_TOKEN`). Give it a
    /// clone of the API's token: the two then share one throttle of wrong tokens.
    pub token: Option<ApiToken>,
    /// The sessions ended by a logout. The default keeps them in memory only; the data-streams
    /// service keeps them in a file of its data directory ([`Logouts::open`]), so that a restart
    /// does not bring a logged-out cookie back.
    pub logouts: Logouts,
}

/// The dashboard over `streams` (a [`Controller`](weld_pipeline::runtime::Controller)).
pub fn router(streams: Arc<dyn Streams>, config: DashboardConfig) -> Router {
    let dashboard = Arc::new(Dashboard {
        streams,
        token: config.token,
        logouts: config.logouts,
    });
    let router = Router::new()
        .route("/", get(streams_page))
        .route("/ui/workers", get(workers_page))
        .route("/ui/streams/{name}", get(stream_page))
        .route(
            "/ui/streams/{name}/delete",
            get(confirm_delete).post(delete),
        )
        .route("/ui/streams/{name}/{action}", post(act))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .layer(axum::middleware::from_fn_with_state(
            dashboard.clone(),
            guard,
        ))
        .layer(DefaultBodyLimit::max(FORM_LIMIT))
        .with_state(dashboard);
    crate::api::secure(router, POLICY)
}
