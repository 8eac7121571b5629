//! What every page and action of the dashboard has: its state, the viewer the guard let
//! through, and the ways to answer with a page.

use std::sync::Arc;

use axum::extract::{NestedPath, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::Markup;
use serde::Deserialize;
use weld_pipeline::Timestamp;

use super::render::{self, Frame};
use super::session::Session;
use super::Logouts;
use crate::api::{ApiToken, Streams};

pub(super) struct Dashboard {
    pub(super) streams: Arc<dyn Streams>,
    pub(super) token: Option<ApiToken>,
    pub(super) logouts: Logouts,
}

pub(super) type Shared = State<Arc<Dashboard>>;

/// Where the dashboard is mounted: the path it is nested under, `""` at the root.
pub(super) fn base(nested: Option<&NestedPath>) -> String {
    nested
        .map(|n| n.as_str().trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

/// A page's context: the session the guard let through, if the dashboard has a login.
#[derive(Clone)]
pub(super) struct Viewer {
    pub(super) base: String,
    pub(super) csrf: Option<String>,
    pub(super) session: Option<Session>,
}

impl Viewer {
    /// A visitor with no session.
    pub(super) fn anonymous(base: String) -> Self {
        Viewer {
            base,
            csrf: None,
            session: None,
        }
    }

    /// A path of the dashboard, under where it is mounted.
    pub(super) fn link(&self, path: &str) -> String {
        render::link(&self.base, path)
    }

    /// The path its cookie is sent to: all of the dashboard's.
    pub(super) fn cookie_path(&self) -> &str {
        if self.base.is_empty() {
            "/"
        } else {
            &self.base
        }
    }

    pub(super) fn frame(&self) -> Frame<'_> {
        Frame {
            base: &self.base,
            csrf: self.csrf.as_deref(),
            now: Timestamp::now(),
        }
    }
}

pub(super) fn html(markup: Markup) -> Html<String> {
    Html(markup.into_string())
}

/// An answer that is a page saying what went wrong.
pub(super) fn problem(viewer: &Viewer, status: StatusCode, title: &str, message: &str) -> Response {
    (
        status,
        html(render::problem(&viewer.frame(), title, message)),
    )
        .into_response()
}

#[derive(Deserialize)]
pub(super) struct ActionForm {
    pub(super) csrf: Option<String>,
}
