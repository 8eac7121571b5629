//! The dashboard's pages and buttons, called without a socket against a real controller on
//! sled files: the login and its cookie, the CSRF check of every button, escaping, the pages of
//! a stream, and a dashboard nested under a path of its own. The browser test of the root
//! package drives the same pages in Chromium.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use tower::ServiceExt;
use weld_pipeline::runtime::Controller;
use weld_pipeline::source::{GeneratorSources, SourceKinds};
use weld_pipeline::store::Storage;
use weld_pipeline::{Batch, Checkpoint, Json, Record, RunId, StreamName, Timestamp};
use weld_pipeline_http::api::{self, ApiConfig, ApiToken};
use weld_pipeline_http::dashboard::{self, DashboardConfig, Logouts};
use weld_pipeline_http::transport::HttpPeer;

const TOKEN: &str = "dashboard-token-of-16";

struct App {
    router: Router,
    controller: Arc<Controller<HttpPeer>>,
    _dir: tempfile::TempDir,
}

fn app(token: Option<&str>) -> App {
    app_with(token, Logouts::in_memory())
}

/// The API and the dashboard, sharing one token, with the logouts given.
fn app_with(token: Option<&str>, logouts: Logouts) -> App {
    let dir = tempfile::tempdir().unwrap();
    let kinds = SourceKinds::new().with(Arc::new(GeneratorSources));
    let controller = Controller::<HttpPeer>::new(Storage::sled(dir.path()).unwrap(), kinds);
    let token = token.map(|token| ApiToken::new(token).unwrap());
    let router = api::router(
        controller.clone(),
        ApiConfig {
            token: token.clone(),
            metrics: None,
        },
    )
    .merge(dashboard::router(
        controller.clone(),
        DashboardConfig { token, logouts },
    ));
    App {
        router,
        controller,
        _dir: dir,
    }
}

/// An answer: status, headers, body as text.
struct Page {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl App {
    async fn send(&self, request: Request<Body>) -> Page {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Page {
            status,
            headers,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    async fn get(&self, uri: &str, cookie: Option<&str>) -> Page {
        let mut request = Request::builder().method(Method::GET).uri(uri);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    async fn post_form(&self, uri: &str, cookie: Option<&str>, form: &str) -> Page {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        self.send(request.body(Body::from(form.to_string())).unwrap())
            .await
    }

    /// Logs in; returns the `name=value` of the session cookie.
    async fn login(&self) -> String {
        let page = self
            .post_form("/ui/login", None, &format!("token={TOKEN}"))
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        let cookie = page.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_string();
        cookie.split(';').next().unwrap().to_string()
    }

    /// Stores `records` in a committed run of stream `name`, started through the API.
    async fn stream_with(&self, name: &str, records: Vec<Record>) {
        let start = Request::builder()
            .method(Method::POST)
            .uri(format!("/streams/{name}/start"))
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        assert!(self.send(start).await.status.is_success());
        let stream = StreamName::new(name).unwrap();
        let run_id = RunId::generate();
        let store = self.controller.store();
        store
            .start_run(&stream, run_id, Timestamp::now())
            .await
            .unwrap();
        let batch = Batch::new(stream, run_id, 0)
            .with_records(records)
            .with_cursor(Checkpoint::default())
            .with_last(true);
        store.commit(&batch).await.unwrap();
    }
}

fn contact(id: u32, name: &str) -> Record {
    let data = serde_json::json!({"id": id.to_string(), "properties": {"firstname": name, "email": format!("c{id}@example.com")}});
    Record::new(
        format!("{id:04}"),
        Timestamp::from_millis(1_700_000_000_000),
        Json::parse(data.to_string().into_bytes()).unwrap(),
    )
}

/// The CSRF token in a page's forms.
fn csrf_of(body: &str) -> String {
    let at = body
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF token")
        + r#"name="csrf" value=""#.len();
    body[at..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn without_a_login_every_page_is_the_login_form_with_401() {
    let app = app(Some(TOKEN));
    for uri in [
        "/",
        "/ui/workers",
        "/ui/streams/s1",
        "/ui/streams/s1/delete",
    ] {
        let page = app.get(uri, None).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert!(
            page.body.contains(r#"name="token""#),
            "{uri}: {}",
            page.body
        );
    }
    let page = app.post_form("/ui/streams/s1/stop", None, "").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    // A forged or malformed cookie is no login.
    for cookie in ["weld_session=v1.00.1.00", "weld_session=", "other=1"] {
        assert_eq!(
            app.get("/", Some(cookie)).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // The login page itself, and the API's own answer without its token.
    assert_eq!(app.get("/ui/login", None).await.status, StatusCode::OK);
    assert_eq!(
        app.get("/streams", None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_login_form_past_4_kib_is_refused_with_413_unread() {
    let app = app(Some(TOKEN));
    let form = format!("token={}", "x".repeat(dashboard::FORM_LIMIT));
    let page = app.post_form("/ui/login", None, &form).await;
    assert_eq!(page.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(page.headers.get(header::SET_COOKIE).is_none());
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_the_right_one_sets_a_strict_http_only_cookie() {
    let app = app(Some(TOKEN));
    let page = app.post_form("/ui/login", None, "token=wrong").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("That is not the token."));
    assert!(page.headers.get(header::SET_COOKIE).is_none());

    let page = app
        .post_form("/ui/login", None, &format!("token={TOKEN}"))
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.headers[header::LOCATION], "/");
    let cookie = page.headers[header::SET_COOKIE].to_str().unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(
        !cookie.contains(TOKEN),
        "the cookie is not the token: {cookie}"
    );
    let session = cookie.split(';').next().unwrap();
    let page = app.get("/", Some(session)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<h1>Streams</h1>"), "{}", page.body);

    // Logging out clears the cookie.
    let csrf = csrf_of(&page.body);
    let page = app
        .post_form("/ui/logout", Some(session), &format!("csrf={csrf}"))
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(page.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
}

/// Logs out of the session of `cookie`; asserts it went.
async fn log_out(app: &App, cookie: &str) {
    let page = app.get("/", Some(cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = csrf_of(&page.body);
    let page = app
        .post_form("/ui/logout", Some(cookie), &format!("csrf={csrf}"))
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
}

#[tokio::test]
async fn a_copied_cookie_is_refused_once_its_session_logged_out() {
    let app = app(Some(TOKEN));
    let session = app.login().await;
    let copied = session.clone();
    let other = app.login().await;
    log_out(&app, &session).await;
    let page = app.get("/", Some(&copied)).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("Log in"), "{}", page.body);
    // Nor can the copy press a button: it has no session to take a CSRF token from.
    let page = app
        .post_form("/ui/streams/s1/stop", Some(&copied), "")
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    // Another session of the same token is not ended.
    assert_eq!(app.get("/", Some(&other)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_logout_outlives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard-logouts");
    let before = app_with(Some(TOKEN), Logouts::open(&path).unwrap());
    let session = before.login().await;
    let kept = before.login().await;
    log_out(&before, &session).await;
    drop(before);
    let after = app_with(Some(TOKEN), Logouts::open(&path).unwrap());
    assert_eq!(
        after.get("/", Some(&session)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(after.get("/", Some(&kept)).await.status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn logins_share_the_api_throttle_of_wrong_tokens() {
    let app = app(Some(TOKEN));
    // Wrong bearer tokens on the API count against the login too (one client here: the
    // requests carry no address).
    for _ in 0..4 {
        let request = Request::get("/streams")
            .header(header::AUTHORIZATION, "Bearer guess-guess-guess")
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.send(request).await.status, StatusCode::UNAUTHORIZED);
    }
    let page = app
        .post_form("/ui/login", None, "token=guess-guess-guess")
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    let page = app
        .post_form("/ui/login", None, &format!("token={TOKEN}"))
        .await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(page.headers[header::RETRY_AFTER], "1");
    assert!(page.body.contains("try again in 1 s"), "{}", page.body);
    assert!(page.headers.get(header::SET_COOKIE).is_none());
    tokio::time::advance(std::time::Duration::from_secs(1)).await;
    let page = app
        .post_form("/ui/login", None, &format!("token={TOKEN}"))
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn every_page_forbids_framing_sniffing_and_caching() {
    let app = app(Some(TOKEN));
    let session = app.login().await;
    for (uri, cookie) in [
        ("/", None),
        ("/", Some(session.as_str())),
        ("/ui/workers", Some(session.as_str())),
    ] {
        let page = app.get(uri, cookie).await;
        let policy = page.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(policy.contains("default-src 'none'"), "{policy}");
        assert_eq!(page.headers[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(page.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
    }
    let page = app
        .post_form("/ui/login", None, &format!("token={TOKEN}"))
        .await;
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
}

#[tokio::test]
async fn a_button_without_its_csrf_token_is_refused_with_403_and_does_nothing() {
    let app = app(Some(TOKEN));
    app.stream_with("s1", vec![contact(1, "Ada")]).await;
    let session = app.login().await;
    let page = app.get("/ui/streams/s1", Some(&session)).await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = csrf_of(&page.body);

    for form in [String::new(), "csrf=forged".to_string()] {
        let refused = app
            .post_form("/ui/streams/s1/stop", Some(&session), &form)
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{form}");
    }
    let status = app
        .controller
        .status(&StreamName::new("s1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(
        status.state,
        weld_pipeline::runtime::StreamState::Stopped,
        "a refused button stops nothing"
    );

    let done = app
        .post_form(
            "/ui/streams/s1/stop",
            Some(&session),
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(done.headers[header::LOCATION], "/ui/streams/s1");
    let page = app.get("/ui/streams/s1", Some(&session)).await;
    assert!(
        page.body.contains(r#"data-state="stopped""#),
        "{}",
        page.body
    );

    // Start takes the stream's own configuration; delete asks first, then deletes.
    let started = app
        .post_form(
            "/ui/streams/s1/start",
            Some(&session),
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(started.status, StatusCode::SEE_OTHER);
    let confirm = app.get("/ui/streams/s1/delete", Some(&session)).await;
    assert!(
        confirm.body.contains("Delete stream s1?"),
        "{}",
        confirm.body
    );
    assert!(
        confirm.body.contains("1 stored records"),
        "{}",
        confirm.body
    );
    let deleted = app
        .post_form(
            "/ui/streams/s1/delete",
            Some(&session),
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    assert_eq!(deleted.headers[header::LOCATION], "/");
    assert_eq!(
        app.get("/ui/streams/s1", Some(&session)).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn markup_in_a_record_or_a_name_shows_as_text() {
    let app = app(None);
    app.stream_with("s1", vec![contact(1, "<script>alert(1)</script>")])
        .await;
    let page = app.get("/ui/streams/s1", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script>alert"), "{}", page.body);
    // A name that is no stream's is echoed escaped, and answered 404.
    let page = app.get("/ui/streams/%3Cb%3Ex", None).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(!page.body.contains("<b>x"), "{}", page.body);
}

#[tokio::test]
async fn the_pages_show_counts_with_separators_runs_and_records() {
    let app = app(None);
    app.stream_with("s1", (1..=1_200).map(|id| contact(id, "Ada")).collect())
        .await;
    let streams = app.get("/", None).await;
    assert_eq!(streams.status, StatusCode::OK);
    assert!(streams
        .body
        .contains(r#"<meta http-equiv="refresh" content="5">"#));
    assert!(
        streams
            .body
            .contains(r#"<td class="num records">1,200</td>"#),
        "{}",
        streams.body
    );
    assert!(streams.body.contains("succeeded"), "{}", streams.body);

    let stream = app.get("/ui/streams/s1", None).await;
    assert!(stream.body.contains(r#"<table id="runs">"#));
    assert!(
        stream.body.contains(r#"<th class="num">purged</th>"#),
        "the run history shows what each run purged: {}",
        stream.body
    );
    assert!(stream.body.contains("c1@example.com"), "{}", stream.body);
    // 25 records a page, the next page by token.
    assert_eq!(stream.body.matches("<tr data-id=").count(), 25);
    let next = stream
        .body
        .split(r#"href="/ui/streams/s1?after="#)
        .nth(1)
        .expect("a link to the next records")
        .split('"')
        .next()
        .unwrap();
    let page = app.get(&format!("/ui/streams/s1?after={next}"), None).await;
    assert!(
        page.body.contains(r#"<tr data-id="0026">"#),
        "{}",
        page.body
    );

    let workers = app.get("/ui/workers", None).await;
    assert!(workers.body.contains("No worker is connected."));
}

#[tokio::test]
async fn a_nested_dashboard_links_and_redirects_under_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let kinds = SourceKinds::new().with(Arc::new(GeneratorSources));
    let controller = Controller::<HttpPeer>::new(Storage::sled(dir.path()).unwrap(), kinds);
    let router = Router::new().nest(
        "/admin",
        dashboard::router(
            controller,
            DashboardConfig {
                token: Some(ApiToken::new(TOKEN).unwrap()),
                ..DashboardConfig::default()
            },
        ),
    );
    let request = Request::builder()
        .method(Method::POST)
        .uri("/admin/ui/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={TOKEN}")))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[header::LOCATION], "/admin");
    let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.contains("Path=/admin;"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_string();
    let request = Request::builder()
        .uri("/admin")
        .header(header::COOKIE, session)
        .body(Body::empty())
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(body.contains(r#"href="/admin/ui/workers""#), "{body}");
}

#[tokio::test]
async fn a_form_of_another_site_cannot_press_a_button_with_or_without_a_token() {
    let app = app(None);
    app.stream_with("s1", vec![contact(1, "Ada")]).await;
    let post = |headers: &[(&str, &str)]| {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri("/ui/streams/s1/delete")
            .header(header::HOST, "127.0.0.1:3000")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(Body::empty()).unwrap()
    };
    for headers in [
        &[("sec-fetch-site", "cross-site")][..],
        &[("sec-fetch-site", "same-site")][..],
        &[("origin", "http://evil.example")][..],
        &[("origin", "null")][..],
    ] {
        let page = app.send(post(headers)).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{headers:?}");
    }
    let stream = StreamName::new("s1").unwrap();
    assert!(
        app.controller.status(&stream).await.unwrap().is_some(),
        "nothing deleted"
    );
    // The dashboard's own page posting, as a browser marks it: taken.
    let page = app
        .send(post(&[
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://127.0.0.1:3000"),
        ]))
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(app.controller.status(&stream).await.unwrap().is_none());

    // With a token, only the login itself is let through without a session.
    let guarded = crate::app(Some(TOKEN));
    let page = guarded
        .post_form("/ui/streams/ui/login", None, "token=x")
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
}
