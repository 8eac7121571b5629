//! Who may see the pages: the guard in front of every one (a login's session, a POST from
//! another site refused), the login and the logout.

use axum::extract::rejection::FormRejection;
use axum::extract::{NestedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use weld_pipeline::Timestamp;

use super::context::{base, html, problem, ActionForm, Shared, Viewer};
use super::render;
use super::session::{self, Session, COOKIE, SESSION_LIFETIME_MS};
use crate::api::{Client, Verdict, Via};

/// Lets a request through when the dashboard has no login, it is the login itself, or it
/// carries a valid session; answers the others 401 with the login form. A POST a browser says
/// came from another site is refused with 403 first, login or not: without a token there is no
/// CSRF token either, and a page elsewhere could otherwise post the delete button's form.
pub(super) async fn guard(State(dashboard): Shared, mut request: Request, next: Next) -> Response {
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
pub(super) fn cross_site(headers: &HeaderMap) -> bool {
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

pub(super) async fn login_page(viewer: axum::Extension<Viewer>) -> Response {
    html(render::login(&viewer.frame(), render::Login::Form)).into_response()
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
}

/// Checks the token, through the throttle of wrong tokens the API's bearer check shares; sets
/// the session cookie and goes to the streams.
pub(super) async fn login(
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
pub(super) fn redirect_setting(viewer: &Viewer, path: &str, value: &str, max_age: i64) -> Response {
    let mut answer = Redirect::to(&viewer.link(path)).into_response();
    set_cookie(viewer, &mut answer, value, max_age);
    answer
}

pub(super) fn set_cookie(viewer: &Viewer, answer: &mut Response, value: &str, max_age: i64) {
    let cookie = format!(
        "{COOKIE}={value}; Path={}; HttpOnly; SameSite=Strict; Max-Age={max_age}",
        viewer.cookie_path()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        answer.headers_mut().insert(header::SET_COOKIE, value);
    }
}

pub(super) fn clear_cookie(viewer: &Viewer, answer: &mut Response) {
    set_cookie(viewer, answer, "", 0);
}

/// Ends the session: recorded among the logouts, so that a copy of the cookie is refused too,
/// and the cookie cleared.
pub(super) async fn logout(
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
pub(super) struct ConnectedClient(Client);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ConnectedClient {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ConnectedClient(Client::of(&parts.extensions)))
    }
}
