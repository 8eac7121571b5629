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

mod format;
mod logouts;
mod render;
mod session;

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, NestedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::Markup;
use serde::Deserialize;
use weld_pipeline::store::Archived;
use weld_pipeline::{StreamName, Timestamp};

use crate::api::{ApiToken, Client, Streams, Verdict, Via};
pub use logouts::{Logouts, MAX_ENDED};
use render::Frame;
use session::{Session, COOKIE, SESSION_LIFETIME_MS};

/// The largest form taken: a login or a button's CSRF token is well under 1 KiB, and a login
/// is read before anyone is known, so nothing larger is buffered.
pub const FORM_LIMIT: usize = 4 * 1024;
/// Records shown on a stream's page.
const RECORDS_PER_PAGE: usize = 25;
/// Runs shown on a stream's page.
const RUNS_SHOWN: usize = 20;

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

struct Dashboard {
    streams: Arc<dyn Streams>,
    token: Option<ApiToken>,
    logouts: Logouts,
}

type Shared = State<Arc<Dashboard>>;

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

/// Where the dashboard is mounted: the path it is nested under, `""` at the root.
fn base(nested: Option<&NestedPath>) -> String {
    nested
        .map(|n| n.as_str().trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

/// A page's context: the session the guard let through, if the dashboard has a login.
#[derive(Clone)]
struct Viewer {
    base: String,
    csrf: Option<String>,
    session: Option<Session>,
}

impl Viewer {
    /// A visitor with no session.
    fn anonymous(base: String) -> Self {
        Viewer {
            base,
            csrf: None,
            session: None,
        }
    }

    /// A path of the dashboard, under where it is mounted.
    fn link(&self, path: &str) -> String {
        render::link(&self.base, path)
    }

    /// The path its cookie is sent to: all of the dashboard's.
    fn cookie_path(&self) -> &str {
        if self.base.is_empty() {
            "/"
        } else {
            &self.base
        }
    }

    fn frame(&self) -> Frame<'_> {
        Frame {
            base: &self.base,
            csrf: self.csrf.as_deref(),
            now: Timestamp::now(),
        }
    }
}

/// Lets a request through when the dashboard has no login, it is the login itself, or it
/// carries a valid session; answers the others 401 with the login form. A POST a browser says
/// came from another site is refused with 403 first, login or not: without a token there is no
/// CSRF token either, and a page elsewhere could otherwise post the delete button's form.
async fn guard(State(dashboard): Shared, mut request: Request, next: Next) -> Response {
    let base = base(request.extensions().get::<NestedPath>());
    if request.method() == Method::POST && cross_site(request.headers()) {
        let viewer = Viewer::anonymous(base);
        return problem(
            &viewer,
            StatusCode::FORBIDDEN,
            "Refused",
            "A form of another site cannot press this dashboard's buttons.",
        );
    }
    let (csrf, session) = match &dashboard.token {
        None => (None, None),
        Some(token) => {
            let session = request
                .headers()
                .get(header::COOKIE)
                .and_then(|v| v.to_str().ok())
                .and_then(|cookies| session::cookie(cookies, COOKIE))
                .and_then(|cookie| Session::verify(token, cookie, Timestamp::now()))
                .filter(|session| !dashboard.logouts.has_ended(session.nonce()));
            let path = request.uri().path();
            match session {
                Some(session) => (Some(session.csrf(token)), Some(session)),
                // The path with the mount point stripped: exactly the login's.
                None if path == "/ui/login" => (None, None),
                None => {
                    let viewer = Viewer::anonymous(base);
                    return (
                        StatusCode::UNAUTHORIZED,
                        html(render::login(&viewer.frame(), render::Login::Form)),
                    )
                        .into_response();
                }
            }
        }
    };
    request.extensions_mut().insert(Viewer {
        base,
        csrf,
        session,
    });
    next.run(request).await
}

/// Whether a browser says the request comes from a page of another site: `Sec-Fetch-Site`
/// (every current browser), else an `Origin` whose host is not the request's `Host`. A client
/// that is no browser sends neither and is not refused here.
fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let host = headers.get(header::HOST).map(HeaderValue::as_bytes);
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, host)| host.as_bytes());
    origin_host.is_none() || origin_host != host
}

fn html(markup: Markup) -> Html<String> {
    Html(markup.into_string())
}

/// An answer that is a page saying what went wrong.
fn problem(viewer: &Viewer, status: StatusCode, title: &str, message: &str) -> Response {
    (
        status,
        html(render::problem(&viewer.frame(), title, message)),
    )
        .into_response()
}

fn failed(viewer: &Viewer, error: &weld_pipeline::Error) -> Response {
    let status = match error {
        weld_pipeline::Error::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    problem(viewer, status, "Not now", &error.to_string())
}

async fn streams_page(State(dashboard): Shared, viewer: axum::Extension<Viewer>) -> Response {
    let streams = match dashboard.streams.streams().await {
        Ok(streams) => streams,
        Err(error) => return failed(&viewer, &error),
    };
    let health = dashboard.streams.store().health();
    let workers = dashboard.streams.workers();
    html(render::streams(&viewer.frame(), &streams, &health, workers)).into_response()
}

async fn workers_page(State(dashboard): Shared, viewer: axum::Extension<Viewer>) -> Response {
    let workers = dashboard.streams.connected_workers();
    html(render::workers(&viewer.frame(), &workers)).into_response()
}

/// The page of a stream that does not exist (or a name that cannot be one), with 404.
fn no_such_stream(viewer: &Viewer, name: &str) -> Response {
    problem(
        viewer,
        StatusCode::NOT_FOUND,
        "No such stream",
        &format!("There is no stream {name}."),
    )
}

#[derive(Deserialize)]
struct RecordsQuery {
    after: Option<String>,
}

async fn stream_page(
    State(dashboard): Shared,
    viewer: axum::Extension<Viewer>,
    Path(name): Path<String>,
    Query(query): Query<RecordsQuery>,
) -> Response {
    let Ok(name) = StreamName::new(&name) else {
        return no_such_stream(&viewer, &name);
    };
    let store = dashboard.streams.store();
    let read = async {
        let Some(status) = dashboard.streams.status(&name).await? else {
            return Ok(None);
        };
        let runs = store.runs(&name, RUNS_SHOWN).await?;
        let records = store
            .records(
                &name,
                query.after.as_deref(),
                RECORDS_PER_PAGE,
                Archived::All,
            )
            .await?;
        Ok::<_, weld_pipeline::Error>(Some((status, runs, records)))
    };
    match read.await {
        Ok(Some((status, runs, records))) => {
            html(render::stream(&viewer.frame(), &status, &runs, &records)).into_response()
        }
        Ok(None) => no_such_stream(&viewer, name.as_str()),
        Err(error) => failed(&viewer, &error),
    }
}

async fn confirm_delete(
    State(dashboard): Shared,
    viewer: axum::Extension<Viewer>,
    Path(name): Path<String>,
) -> Response {
    let Ok(name) = StreamName::new(&name) else {
        return no_such_stream(&viewer, &name);
    };
    match dashboard.streams.status(&name).await {
        Ok(Some(status)) => html(render::confirm_delete(
            &viewer.frame(),
            name.as_str(),
            status.counts.live + status.counts.archived,
        ))
        .into_response(),
        Ok(None) => no_such_stream(&viewer, name.as_str()),
        Err(error) => failed(&viewer, &error),
    }
}

#[derive(Deserialize)]
struct ActionForm {
    csrf: Option<String>,
}

/// A button: start (with the stream's configuration), stop, resync or delete; then back to the
/// stream's page (the streams page after a delete).
async fn act(
    State(dashboard): Shared,
    viewer: axum::Extension<Viewer>,
    Path((name, action)): Path<(String, String)>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    if dashboard.token.is_some() {
        let presented = form.as_ref().ok().and_then(|f| f.csrf.as_deref());
        let expected = viewer.csrf.as_deref();
        if !expected
            .zip(presented)
            .is_some_and(|(e, p)| session::same(e, p))
        {
            return problem(
                &viewer,
                StatusCode::FORBIDDEN,
                "Refused",
                "The form's CSRF token is missing or stale: reload the page and try again.",
            );
        }
    }
    let Ok(name) = StreamName::new(&name) else {
        return no_such_stream(&viewer, &name);
    };
    let streams = &dashboard.streams;
    let done = match action.as_str() {
        "start" => match streams.status(&name).await {
            Ok(Some(status)) => streams
                .start_stream(&name, status.config)
                .await
                .map(|_| true),
            Ok(None) => Ok(false),
            Err(error) => Err(error),
        },
        "stop" => streams.stop_stream(&name).await.map(|s| s.is_some()),
        "resync" => streams.resync_stream(&name).await.map(|s| s.is_some()),
        "delete" => streams.delete_stream(&name).await,
        _ => {
            return problem(
                &viewer,
                StatusCode::NOT_FOUND,
                "No such action",
                "A stream's buttons are start, stop, resync and delete.",
            )
        }
    };
    match done {
        Ok(true) if action == "delete" => Redirect::to(&viewer.link("/")).into_response(),
        Ok(true) => Redirect::to(&viewer.link(&format!("/ui/streams/{name}"))).into_response(),
        Ok(false) => no_such_stream(&viewer, name.as_str()),
        Err(error) => failed(&viewer, &error),
    }
}

/// The delete button of the confirmation page.
async fn delete(
    dashboard: Shared,
    viewer: axum::Extension<Viewer>,
    Path(name): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    act(dashboard, viewer, Path((name, "delete".into())), form).await
}

async fn login_page(viewer: axum::Extension<Viewer>) -> Response {
    html(render::login(&viewer.frame(), render::Login::Form)).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// Checks the token, through the throttle of wrong tokens the API's bearer check shares; sets
/// the session cookie and goes to the streams.
async fn login(
    State(dashboard): Shared,
    viewer: axum::Extension<Viewer>,
    ConnectedClient(client): ConnectedClient,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Some(token) = &dashboard.token else {
        return Redirect::to(&viewer.link("/")).into_response();
    };
    let presented = match form {
        Ok(Form(form)) => form.token,
        // Past the form limit (413), not a form (415), no token field (422).
        Err(rejection) => {
            let status = rejection.status();
            return problem(&viewer, status, "Refused", &rejection.body_text());
        }
    };
    match token.check(client, Via::Dashboard, presented.as_bytes()) {
        Verdict::Allowed => {}
        Verdict::Wrong => {
            return (
                StatusCode::UNAUTHORIZED,
                html(render::login(&viewer.frame(), render::Login::Wrong)),
            )
                .into_response()
        }
        Verdict::Throttled(wait) => {
            let secs = Verdict::retry_after_secs(wait);
            let page = html(render::login(
                &viewer.frame(),
                render::Login::Throttled(secs),
            ));
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, HeaderValue::from(secs))],
                page,
            )
                .into_response();
        }
    }
    let session = Session::issue(token, Timestamp::now());
    redirect_setting(&viewer, "/", &session, SESSION_LIFETIME_MS / 1_000)
}

/// A redirect to the dashboard's `path` that sets the session cookie to `value` for `max_age`
/// seconds (0 clears it).
fn redirect_setting(viewer: &Viewer, path: &str, value: &str, max_age: i64) -> Response {
    let mut answer = Redirect::to(&viewer.link(path)).into_response();
    set_cookie(viewer, &mut answer, value, max_age);
    answer
}

fn set_cookie(viewer: &Viewer, answer: &mut Response, value: &str, max_age: i64) {
    let cookie = format!(
        "{COOKIE}={value}; Path={}; HttpOnly; SameSite=Strict; Max-Age={max_age}",
        viewer.cookie_path()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        answer.headers_mut().insert(header::SET_COOKIE, value);
    }
}

fn clear_cookie(viewer: &Viewer, answer: &mut Response) {
    set_cookie(viewer, answer, "", 0);
}

/// Ends the session: recorded among the logouts, so that a copy of the cookie is refused too,
/// and the cookie cleared.
async fn logout(
    State(dashboard): Shared,
    viewer: axum::Extension<Viewer>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    let presented = form.ok().and_then(|Form(f)| f.csrf);
    let matches = viewer
        .csrf
        .as_deref()
        .zip(presented.as_deref())
        .is_some_and(|(e, p)| session::same(e, p));
    if viewer.csrf.is_some() && !matches {
        return problem(
            &viewer,
            StatusCode::FORBIDDEN,
            "Refused",
            "Reload the page and log out again.",
        );
    }
    if let Some(session) = &viewer.session {
        if let Err(error) = dashboard
            .logouts
            .end(session.nonce(), session.expires())
            .await
        {
            // Ended in memory all the same; the operator must know it would not outlive a restart.
            tracing::error!(error = %error, "a dashboard logout could not be saved: the session stays ended until the service restarts");
            let mut answer = problem(
                &viewer,
                StatusCode::SERVICE_UNAVAILABLE,
                "Logged out until a restart",
                "The logout could not be saved: this session is ended until the service restarts. Log out again later to make it last.",
            );
            clear_cookie(&viewer, &mut answer);
            return answer;
        }
    }
    redirect_setting(&viewer, "/ui/login", "", 0)
}

/// The client of a request, as the listener gave it (`ConnectInfo`); [`Client::Unknown`] when it
/// gave none, so that a router called without a socket (a test, `oneshot`) still answers.
struct ConnectedClient(Client);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ConnectedClient {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ConnectedClient(Client::of(&parts.extensions)))
    }
}
