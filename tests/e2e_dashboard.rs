//! End to end, the dashboard in a real browser: headless Chromium driven over WebDriver
//! (chromedriver) against the real binaries, a quickstart-like run (contacts with their
//! companies, and companies, from the fake). It logs in, watches a sync's record count grow,
//! stops the stream with its button, sees a fault of the fake as the stream's error, sees a
//! record property holding `<script>` as text, and takes the screenshot README shows.
//!
//! Chromium and chromedriver come from Debian's `chromium` and `chromium-driver`; without them
//! the test says so and passes, unless `WELD_REQUIRE_BROWSER=1` (set by `.ci/run`).

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use support::*;

const TOKEN: &str = "e2e-dashboard-token";
/// How long one page may take to load or a browser command to answer.
const PAGE_WITHIN: Duration = Duration::from_secs(30);

/// chromedriver, killed by pid when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser's binaries, or `None` (said loudly) where they are not installed.
fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| names.iter().map(PathBuf::from).find(|path| path.exists());
    let chromium = find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]);
    let driver = find(&["/usr/bin/chromedriver"]);
    match (chromium, driver) {
        (Some(chromium), Some(driver)) => Some((chromium, driver)),
        _ if std::env::var("WELD_REQUIRE_BROWSER").as_deref() == Ok("1") => {
            panic!("WELD_REQUIRE_BROWSER=1, but chromium or chromedriver is not installed")
        }
        _ => {
            eprintln!(
                "SKIPPED: the dashboard's browser test needs Debian's chromium and \
                 chromium-driver (apt-get install chromium chromium-driver)"
            );
            None
        }
    }
}

async fn start_driver(binary: &PathBuf) -> Driver {
    let port = free_addr()
        .rsplit(':')
        .next()
        .expect("an address ends in its port")
        .to_string();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let status = format!("{}/status", driver.url);
    let http = http_client();
    wait_until("chromedriver to answer", READY_WITHIN, || {
        let request = http.get(&status).send();
        async move { request.await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
    driver
}

async fn open_browser(driver: &Driver, chromium: &PathBuf) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            // Root in CI: Chromium's sandbox needs an unprivileged user.
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,900"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser = ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a browser session");
    browser
        .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
            None,
            Some(PAGE_WITHIN),
            Some(Duration::ZERO),
        ))
        .await
        .expect("timeouts set");
    browser
}

/// The text of the first element `css` matches on the current page, if any.
async fn text(browser: &Client, css: &str) -> Option<String> {
    let element = browser.find(Locator::Css(css)).await.ok()?;
    element.text().await.ok()
}

/// Loads `url` and returns the text `css` holds there.
async fn text_at(browser: &Client, url: &str, css: &str) -> Option<String> {
    browser.goto(url).await.expect("the page loads");
    text(browser, css).await
}

fn count(text: &str) -> u64 {
    text.replace(',', "").trim().parse().unwrap_or(0)
}

/// Waits until the page `css` is on says `want` there: a click's page loads on its own time.
async fn wait_text(browser: &Client, css: &str, want: &str) {
    wait_until(&format!("{css} to say {want:?}"), PAGE_WITHIN, || {
        let browser = browser.clone();
        async move { text(&browser, css).await.as_deref() == Some(want) }
    })
    .await;
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
        .click()
        .await
        .expect("clicked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_streams_and_runs_their_buttons_in_a_browser() {
    let Some((chromium, driver_binary)) = browser_binaries() else {
        return;
    };
    // 10,000 contacts 150 ms away, paced by the worker's default budget: a full sync lasts
    // long enough to watch it.
    let fake = start_fake(10_000, &[("FAKE_HUBSPOT_LATENCY_MS", "150")]).await;
    // A company name a user typed as markup; the dashboard must show it as text.
    fake.mutate(json!({"object": "companies", "modify": 100,
                       "value": "<script>document.title='pwned'</script>Acme"}))
        .await;
    let dirs = [temp_dir(), temp_dir()];
    let data_streams = start_data_streams(DataStreamsOpts {
        api_token: Some(TOKEN.into()),
        ..DataStreamsOpts::new(dirs[0].path())
    })
    .await;
    let _worker = start_worker(WorkerOpts::new(
        &data_streams.transport_addr,
        &fake.url,
        dirs[1].path(),
    ))
    .await;
    let api = data_streams.api();
    api.wait_workers(1).await;
    let base = data_streams.api_url.clone();

    let driver = start_driver(&driver_binary).await;
    let browser = open_browser(&driver, &chromium).await;

    // Not logged in: the login form, answered 401 (as the API answers without its token).
    let (status, _) = send(http_client().get(format!("{base}/"))).await;
    assert_eq!(status, 401, "the dashboard without a login");
    browser.goto(&format!("{base}/")).await.expect("loads");
    assert_eq!(
        browser.title().await.expect("a title"),
        "Log in · data-streams"
    );
    let login = |token: &'static str| {
        let browser = browser.clone();
        async move {
            let field = browser
                .find(Locator::Css("input[name=token]"))
                .await
                .expect("the token field");
            field.send_keys(token).await.expect("typed");
            click(&browser, "form button[type=submit]").await;
        }
    };
    login("not-the-token").await;
    wait_text(&browser, "#login-failed", "That is not the token.").await;
    login(TOKEN).await;
    wait_text(&browser, "main h1", "Streams").await;
    assert_eq!(
        browser.title().await.expect("a title"),
        "Streams · data-streams"
    );

    // A quickstart-like pair of streams.
    api.start_stream(
        "contacts",
        json!({"source": {"kind": "hubspot", "object": "contacts", "associations": ["companies"]},
               "interval_secs": 300}),
    )
    .await;
    api.start_stream(
        "companies",
        json!({"source": {"kind": "hubspot", "object": "companies"}, "interval_secs": 300}),
    )
    .await;

    // The records count grows while the sync runs.
    let streams_page = format!("{base}/");
    let contacts_records = "tr[data-stream=contacts] td.records";
    let first = wait_for("a first records count", CONVERGE_WITHIN, || {
        let browser = browser.clone();
        let page = streams_page.clone();
        async move {
            let seen = count(&text_at(&browser, &page, contacts_records).await?);
            (seen > 0).then_some(seen)
        }
    })
    .await;
    assert!(
        first < 10_000,
        "the count is seen before the sync ends: {first}"
    );
    let grown = wait_for("the records count to grow", CONVERGE_WITHIN, || {
        let browser = browser.clone();
        let page = streams_page.clone();
        async move {
            let seen = count(&text_at(&browser, &page, contacts_records).await?);
            (seen > first).then_some(seen)
        }
    })
    .await;
    assert!(grown > first);

    // Stop, with the stream page's button: the page comes back with the state changed.
    browser
        .goto(&format!("{base}/ui/streams/contacts"))
        .await
        .expect("loads");
    click(&browser, "form[action$='/contacts/stop'] button").await;
    wait_text(&browser, "#status dd.state", "stopped").await;
    assert_eq!(api.status("contacts").await["state"], "stopped");
    assert_eq!(
        text_at(
            &browser,
            &streams_page,
            "tr[data-stream=contacts] [data-state]"
        )
        .await
        .as_deref(),
        Some("stopped")
    );

    // A fault of the fake fails the next run: its error shows on the streams page.
    fake.inject(json!({"kind": "status", "status": 400, "count": 3}))
        .await;
    browser
        .goto(&format!("{base}/ui/streams/contacts"))
        .await
        .expect("loads");
    click(&browser, "form[action$='/contacts/start'] button").await;
    wait_text(&browser, "#status dd.state", "running").await;
    let error = wait_for(
        "the fault's error on the streams page",
        CONVERGE_WITHIN,
        || {
            let browser = browser.clone();
            let page = streams_page.clone();
            async move {
                let error = text_at(&browser, &page, "tr[data-stream=contacts] td.error").await?;
                error.contains("400").then_some(error)
            }
        },
    )
    .await;
    assert!(!error.contains("<"), "the error as text: {error}");

    // The companies' names hold markup: shown as text, never run.
    wait_until("the companies synced", CONVERGE_WITHIN, || async {
        api.status("companies").await["last_run"]["state"] == "succeeded"
    })
    .await;
    browser
        .goto(&format!("{base}/ui/streams/companies"))
        .await
        .expect("loads");
    // All of a record's properties show once its summary is opened.
    click(&browser, "#records tbody tr details summary").await;
    let record = text(&browser, "#records tbody tr")
        .await
        .expect("a record row");
    assert!(
        record.contains("<script>document.title='pwned'</script>Acme"),
        "the property's markup shows as text: {record}"
    );
    assert_eq!(
        browser.title().await.expect("a title"),
        "companies · data-streams"
    );
    assert!(
        browser
            .find_all(Locator::Css("main script"))
            .await
            .expect("a query")
            .is_empty(),
        "no script element came from a record"
    );

    // The workers page lists the worker and its streams.
    browser
        .goto(&format!("{base}/ui/workers"))
        .await
        .expect("loads");
    let workers = text(&browser, "#workers tbody")
        .await
        .expect("a workers table");
    assert!(
        workers.contains("e2e-worker") && workers.contains("hubspot"),
        "{workers}"
    );

    // On a phone's width, no page is wider than the screen: tables scroll in their own box.
    browser.set_window_size(390, 844).await.expect("resized");
    for page in [
        streams_page.clone(),
        format!("{base}/ui/streams/contacts"),
        format!("{base}/ui/streams/companies"),
        format!("{base}/ui/workers"),
    ] {
        browser.goto(&page).await.expect("loads");
        let widths = browser
            .execute(
                "return [document.documentElement.scrollWidth, window.innerWidth];",
                vec![],
            )
            .await
            .expect("the widths");
        let (page_width, screen) = (widths[0].as_u64(), widths[1].as_u64());
        assert!(
            page_width.is_some() && page_width <= screen,
            "{page} is {page_width:?} px wide on a {screen:?} px screen"
        );
    }

    // README's screenshot: the streams page.
    browser.set_window_size(1280, 640).await.expect("resized");
    browser.goto(&streams_page).await.expect("loads");
    let png = browser.screenshot().await.expect("a screenshot");
    let path = std::env::var_os("WELD_DASHBOARD_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png"));
    std::fs::write(&path, png).expect("the screenshot is written");
    eprintln!("the streams page: {}", path.display());

    browser.close().await.expect("the browser closes");
}
