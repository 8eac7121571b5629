//! The pages (streams, workers, a stream) and a stream's buttons.

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use weld_pipeline::store::Archived;
use weld_pipeline::StreamName;

use super::context::{html, problem, ActionForm, Shared, Viewer};
use super::render;
use super::session;

/// Records shown on a stream's page.
pub(super) const RECORDS_PER_PAGE: usize = 25;

/// Runs shown on a stream's page.
pub(super) const RUNS_SHOWN: usize = 20;

pub(super) fn failed(viewer: &Viewer, error: &weld_pipeline::Error) -> Response {
    let status = match error {
        weld_pipeline::Error::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    problem(viewer, status, "Not now", &error.to_string())
}

pub(super) async fn streams_page(
    State(dashboard): Shared,
    viewer: axum::Extension<Viewer>,
) -> Response {
    let streams = match dashboard.streams.streams().await {
        Ok(streams) => streams,
        Err(error) => return failed(&viewer, &error),
    };
    let health = dashboard.streams.store().health();
    let workers = dashboard.streams.workers();
    html(render::streams(&viewer.frame(), &streams, &health, workers)).into_response()
}

pub(super) async fn workers_page(
    State(dashboard): Shared,
    viewer: axum::Extension<Viewer>,
) -> Response {
    let workers = dashboard.streams.connected_workers();
    html(render::workers(&viewer.frame(), &workers)).into_response()
}

/// The page of a stream that does not exist (or a name that cannot be one), with 404.
pub(super) fn no_such_stream(viewer: &Viewer, name: &str) -> Response {
    problem(
        viewer,
        StatusCode::NOT_FOUND,
        "No such stream",
        &format!("There is no stream {name}."),
    )
}

#[derive(Deserialize)]
pub(super) struct RecordsQuery {
    after: Option<String>,
}

pub(super) async fn stream_page(
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

pub(super) async fn confirm_delete(
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

/// A button: start (with the stream's configuration), stop, resync or delete; then back to the
/// stream's page (the streams page after a delete).
pub(super) async fn act(
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
pub(super) async fn delete(
    dashboard: Shared,
    viewer: axum::Extension<Viewer>,
    Path(name): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    act(dashboard, viewer, Path((name, "delete".into())), form).await
}
