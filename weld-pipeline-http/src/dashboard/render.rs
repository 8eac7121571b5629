//! The pages' HTML: one layout, and a function per page. Every value goes through maud's
//! escaping; nothing here writes unescaped text but the style sheet.

use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde_json::Value;
use weld_pipeline::runtime::{ConnectedWorker, StreamState, StreamStatus};
use weld_pipeline::store::{RecordPage, RunRecord, RunState, StoreHealth};
use weld_pipeline::Timestamp;

use super::format::{absolute, number, relative, span};

/// The style sheet: readable on a phone (tables scroll sideways in their box), no web fonts.
const STYLE: &str = r#"
:root { color-scheme: light dark; --muted: #6b7280; --line: #d1d5db; --ok: #15803d; --bad: #b91c1c; --warn: #a16207; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; }
header { display: flex; flex-wrap: wrap; gap: .5rem 1.25rem; align-items: center; padding: .75rem 1rem; border-bottom: 1px solid var(--line); }
header strong { font-size: 1.1rem; }
header form { margin-left: auto; }
main { padding: 1rem; max-width: 80rem; }
h1 { font-size: 1.3rem; margin: .25rem 0 1rem; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted, time { color: var(--muted); }
.state-running, .state-succeeded, .ok { color: var(--ok); font-weight: 600; }
.state-pending, .state-cancelled { color: var(--warn); font-weight: 600; }
.state-stopped { color: var(--muted); font-weight: 600; }
.state-failed, .error, .bad { color: var(--bad); }
.error { white-space: pre-wrap; word-break: break-word; }
.buttons { display: flex; flex-wrap: wrap; gap: .5rem; margin: .5rem 0 1rem; }
button, .button { font: inherit; padding: .35rem .9rem; border: 1px solid var(--line); border-radius: .35rem; background: transparent; color: inherit; cursor: pointer; text-decoration: none; }
button.danger, .button.danger { border-color: var(--bad); color: var(--bad); }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; word-break: break-word; }
pre { white-space: pre-wrap; word-break: break-word; margin: 0; }
input[type=password] { font: inherit; padding: .35rem; width: 100%; max-width: 24rem; }
details summary { cursor: pointer; }
@media (max-width: 40rem) { main { padding: .5rem; } th, td { padding: .3rem .4rem; } }
"#;

/// What every page knows: where the dashboard is mounted, the CSRF token of its forms (with a
/// login), and the time the page is drawn at.
pub(super) struct Frame<'a> {
    /// The path the dashboard is mounted at, without a trailing `/` (`""` at the root).
    pub(super) base: &'a str,
    /// The CSRF token its forms carry, `None` when the dashboard has no login.
    pub(super) csrf: Option<&'a str>,
    pub(super) now: Timestamp,
}

/// A path of the dashboard mounted at `base`: its root is `base` itself when nested (axum
/// routes `/admin`, not `/admin/`).
pub(super) fn link(base: &str, path: &str) -> String {
    match (base, path) {
        ("", path) => path.to_owned(),
        (base, "/") => base.to_owned(),
        (base, path) => format!("{base}{path}"),
    }
}

impl Frame<'_> {
    fn link(&self, path: &str) -> String {
        link(self.base, path)
    }

    fn stream_link(&self, name: &str) -> String {
        self.link(&format!("/ui/streams/{}", encode(name)))
    }

    fn time(&self, at: Timestamp) -> Markup {
        html! {
            time datetime=(at.to_string()) title=(absolute(at)) { (relative(at, self.now)) }
            " " span.muted { "(" (absolute(at)) ")" }
        }
    }

    /// A POST form of one button, with the CSRF token.
    fn button(&self, action: &str, label: &str, danger: bool) -> Markup {
        html! {
            form method="post" action=(action) {
                @if let Some(csrf) = self.csrf { input type="hidden" name="csrf" value=(csrf); }
                button.danger[danger] type="submit" { (label) }
            }
        }
    }
}

fn page(frame: &Frame<'_>, title: &str, refresh: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if refresh { meta http-equiv="refresh" content="5"; }
                title { (title) " · data-streams" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { "data-streams" }
                    a href=(frame.link("/")) { "Streams" }
                    a href=(frame.link("/ui/workers")) { "Workers" }
                    @if frame.csrf.is_some() {
                        (frame.button(&frame.link("/ui/logout"), "Log out", false))
                    }
                }
                main { (body) }
            }
        }
    }
}

fn state_of(state: StreamState) -> Markup {
    let (class, text) = match state {
        StreamState::Running => ("state-running", "running"),
        StreamState::Pending => ("state-pending", "pending"),
        StreamState::Stopped => ("state-stopped", "stopped"),
    };
    html! { span class=(class) data-state=(text) { (text) } }
}

fn run_state(state: RunState) -> Markup {
    let (class, text) = match state {
        RunState::Running => ("state-running", "running"),
        RunState::Succeeded => ("state-succeeded", "succeeded"),
        RunState::Failed => ("state-failed", "failed"),
        RunState::Cancelled => ("state-cancelled", "cancelled"),
    };
    html! { span class=(class) { (text) } }
}

fn duration(frame: &Frame<'_>, run: &RunRecord) -> Markup {
    let end = run.finished_at.unwrap_or(frame.now);
    let text = span(end.as_millis().saturating_sub(run.started_at.as_millis()));
    html! {
        @if run.finished_at.is_some() { (text) } @else { (text) " so far" }
    }
}

fn storage(health: &StoreHealth, frame: &Frame<'_>) -> Markup {
    html! {
        @match health {
            StoreHealth::Ok => span.ok { "ok" },
            StoreHealth::Failed { since, reason } => {
                span.bad { "degraded: " (reason) } " since " (frame.time(*since))
                " (it heals by itself)"
            }
        }
    }
}

/// All streams, refreshing itself every five seconds.
pub(super) fn streams(
    frame: &Frame<'_>,
    streams: &[StreamStatus],
    health: &StoreHealth,
    workers: usize,
) -> Markup {
    let body = html! {
        h1 { "Streams" }
        p {
            "Storage: " (storage(health, frame)) " · "
            a href=(frame.link("/ui/workers")) {
                (number(workers as u64)) @if workers == 1 { " worker" } @else { " workers" } " connected"
            }
            " · refreshes every 5 s"
        }
        @if streams.is_empty() {
            p.muted { "No streams yet: start one with " code { "POST /streams/{name}/start" } "." }
        } @else {
            div.scroll { table id="streams" {
                thead { tr {
                    th { "stream" } th { "state" } th { "worker" } th.num { "records" }
                    th.num { "archived" } th { "last run" } th { "next run" } th { "last error" }
                } }
                tbody {
                    @for status in streams {
                        tr data-stream=(status.name.as_str()) {
                            td { a href=(frame.stream_link(status.name.as_str())) { (status.name.as_str()) } }
                            td { (state_of(status.state)) }
                            td {
                                (status.worker.as_deref().unwrap_or("—"))
                                @if let Some(replica) = &status.replica { span.muted { " on " (replica) } }
                            }
                            td.num.records { (number(status.counts.live)) }
                            td.num { (number(status.counts.archived)) }
                            td {
                                @if let Some(run) = &status.last_run {
                                    (run_state(run.state)) ", " (duration(frame, run)) ", "
                                    (number(run.records)) " records, started " (frame.time(run.started_at))
                                } @else { span.muted { "none yet" } }
                            }
                            td { @if let Some(at) = status.next_run_at { (frame.time(at)) } @else { "—" } }
                            td.error {
                                @if let Some(error) = &status.last_error {
                                    (error.message) br; (frame.time(error.at))
                                } @else { span.muted { "—" } }
                            }
                        }
                    }
                }
            } }
        }
    };
    page(frame, "Streams", true, body)
}

/// One stream: its status and buttons, configuration, runs and a page of records.
pub(super) fn stream(
    frame: &Frame<'_>,
    status: &StreamStatus,
    runs: &[RunRecord],
    records: &RecordPage,
) -> Markup {
    let name = status.name.as_str();
    let link = frame.stream_link(name);
    let source = serde_json::to_string_pretty(&status.config.source).unwrap_or_default();
    let transforms = serde_json::to_string_pretty(&status.config.transforms).unwrap_or_default();
    let body = html! {
        h1 { "Stream " (name) }
        div.buttons {
            (frame.button(&format!("{link}/start"), "Start", false))
            (frame.button(&format!("{link}/stop"), "Stop", false))
            (frame.button(&format!("{link}/resync"), "Resync", false))
            a.button.danger href=(format!("{link}/delete")) { "Delete…" }
        }
        dl id="status" {
            dt { "state" } dd.state { (state_of(status.state)) }
            dt { "worker" } dd { (status.worker.as_deref().unwrap_or("—")) }
            @if let Some(replica) = &status.replica { dt { "replica" } dd { (replica) } }
            dt { "records" } dd.records { (number(status.counts.live)) }
            dt { "archived" } dd { (number(status.counts.archived)) }
            dt { "next run" } dd { @if let Some(at) = status.next_run_at { (frame.time(at)) } @else { "—" } }
            dt { "last error" } dd.error {
                @if let Some(error) = &status.last_error { (error.message) " · " (frame.time(error.at)) }
                @else { span.muted { "—" } }
            }
            dt { "interval" } dd { (span(i64::try_from(status.config.interval_secs).unwrap_or(i64::MAX).saturating_mul(1_000))) }
            dt { "source" } dd { pre { (source) } }
            @if !status.config.transforms.is_empty() {
                dt { "transforms" } dd { pre { (transforms) } }
            }
        }
        h2 { "Runs" }
        @if runs.is_empty() { p.muted { "No runs yet." } } @else {
            div.scroll { table id="runs" {
                thead { tr {
                    th { "started" } th { "outcome" } th { "took" } th.num { "records" }
                    th.num { "batches" } th.num { "repaired" } th.num { "purged" } th { "error" }
                } }
                tbody { @for run in runs { tr {
                    td { (frame.time(run.started_at)) }
                    td { (run_state(run.state)) }
                    td { (duration(frame, run)) }
                    td.num { (number(run.records)) }
                    td.num { (number(run.batches)) }
                    td.num { (number(run.repaired)) }
                    td.num { (number(run.purged)) }
                    td.error { (run.error.as_deref().unwrap_or("")) }
                } } }
            } }
        }
        h2 { "Records" }
        @if records.records.is_empty() { p.muted { "No records stored." } } @else {
            div.scroll { table id="records" {
                thead { tr { th { "id" } th { "updated" } th { "archived" } th { "properties" } } }
                tbody { @for record in &records.records { tr data-id=(record.id) {
                    td { (record.id) }
                    td { (frame.time(record.updated_at)) }
                    td { @if record.archived { "yes" } @else { "no" } }
                    td { (properties(record.data.as_bytes())) }
                } } }
            } }
            @if let Some(next) = &records.next {
                p { a href=(format!("{link}?after={}", encode(next))) { "Next records →" } }
            }
        }
    };
    page(frame, name, false, body)
}

/// A record's properties: those of a HubSpot object's `properties`, or the document's own
/// fields; the first few shown, all of them behind a disclosure.
fn properties(data: &[u8]) -> Markup {
    let document: Value = serde_json::from_slice(data).unwrap_or(Value::Null);
    let fields = match document.get("properties") {
        Some(Value::Object(properties)) => Some(properties),
        _ => document.as_object(),
    };
    let Some(fields) = fields else {
        return html! { code { (String::from_utf8_lossy(data)) } };
    };
    let mut shown: Vec<(&String, String)> = fields
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k, text_of(v)))
        .collect();
    // What names a record first (a stable sort keeps the rest in the document's order).
    shown.sort_by_key(|(key, _)| {
        NAMING
            .iter()
            .position(|name| name == key)
            .unwrap_or(NAMING.len())
    });
    html! {
        details {
            summary {
                @for (i, (key, value)) in shown.iter().take(3).enumerate() {
                    @if i > 0 { ", " }
                    span.muted { (key) "=" } span.value { (value) }
                }
                " (" (number(shown.len() as u64)) " set)"
            }
            table { @for (key, value) in &shown { tr { th { (key) } td { (value) } } } }
        }
    }
}

/// The properties that name a HubSpot object, in the order a summary shows them.
const NAMING: &[&str] = &[
    "email",
    "firstname",
    "lastname",
    "name",
    "domain",
    "dealname",
    "subject",
    "hs_ticket_priority",
];

fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The confirmation a delete asks for.
pub(super) fn confirm_delete(frame: &Frame<'_>, name: &str, records: u64) -> Markup {
    let link = frame.stream_link(name);
    let body = html! {
        h1 { "Delete stream " (name) "?" }
        p { "This stops it and deletes its configuration, its run history and its "
            (number(records)) " stored records. It cannot be undone." }
        div.buttons {
            (frame.button(&format!("{link}/delete"), "Delete for good", true))
            a.button href=(link) { "Keep it" }
        }
    };
    page(frame, "Delete", false, body)
}

/// The connected workers.
pub(super) fn workers(frame: &Frame<'_>, workers: &[ConnectedWorker]) -> Markup {
    let body = html! {
        h1 { "Workers" }
        @if workers.is_empty() { p.muted { "No worker is connected." } } @else {
            div.scroll { table id="workers" {
                thead { tr {
                    th { "worker" } th { "sources" } th { "streams" } th { "connected" }
                    th.num { "outbox batches" } th.num { "outbox bytes" }
                } }
                tbody { @for worker in workers { tr {
                    td { (worker.id) }
                    td { (worker.sources.join(", ")) }
                    td { @for (i, stream) in worker.streams.iter().enumerate() {
                        @if i > 0 { ", " }
                        a href=(frame.stream_link(stream.as_str())) { (stream.as_str()) }
                    } }
                    td { (frame.time(worker.since)) }
                    @if let Some(outbox) = worker.outbox {
                        td.num { (number(outbox.batches)) } td.num { (number(outbox.bytes)) }
                    } @else { td.num.muted { "—" } td.num.muted { "—" } }
                } } }
            } }
        }
    };
    page(frame, "Workers", true, body)
}

/// What the login page says above its form.
#[derive(Clone, Copy, Debug)]
pub(super) enum Login {
    /// Nothing: the first visit.
    Form,
    /// The last attempt's token was wrong.
    Wrong,
    /// Too many wrong tokens came from this address: the next is not checked for these seconds.
    Throttled(u64),
}

/// The login form, with why the last attempt failed.
pub(super) fn login(frame: &Frame<'_>, said: Login) -> Markup {
    let body = html! {
        h1 { "Log in" }
        p { "This data-streams needs its API token (" code { "WELD_API_TOKEN" } ")." }
        @match said {
            Login::Form => {},
            Login::Wrong => { p.bad id="login-failed" { "That is not the token." } },
            Login::Throttled(secs) => {
                p.bad id="login-throttled" {
                    "Too many wrong tokens came from your address: try again in " (secs) " s."
                }
            },
        }
        form method="post" action=(frame.link("/ui/login")) {
            p { label { "Token" br; input type="password" name="token" autocomplete="current-password" autofocus; } }
            p { button type="submit" { "Log in" } }
        }
    };
    page(frame, "Log in", false, body)
}

/// A page that says what went wrong (a stream that does not exist, a refused action).
pub(super) fn problem(frame: &Frame<'_>, title: &str, message: &str) -> Markup {
    let body = html! {
        h1 { (title) }
        p.error { (message) }
        p { a href=(frame.link("/")) { "All streams" } }
    };
    page(frame, title, false, body)
}

/// Text percent-encoded for a path segment or a query value (a page token).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
