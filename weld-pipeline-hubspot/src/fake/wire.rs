//! What the fake's endpoints write the way HubSpot writes it: times as ISO text, a page of
//! results with its paging token, and an answer built for sending. Below every endpoint and the
//! data set, so that none of them borrows these from another.

use axum::http::HeaderMap;
use serde::Serialize;
use weld_pipeline::Timestamp;

use super::Fault;

/// An ISO-8601 time as HubSpot writes it (`2025-07-07T20:27:17.947Z`).
pub(crate) fn iso(millis: i64) -> String {
    Timestamp::from_millis(millis).to_string()
}

/// A batch endpoint's answer, as HubSpot writes it: `COMPLETE` with its results, and with
/// `numErrors` and `errors` when some of what was asked could not be answered (a 207).
pub(super) fn batch_answer(
    results: Vec<serde_json::Value>,
    errors: Vec<serde_json::Value>,
) -> serde_json::Value {
    let now = iso(Timestamp::now().as_millis());
    let mut answer = serde_json::json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": now,
        "completedAt": now,
    });
    if !errors.is_empty() {
        answer["numErrors"] = serde_json::json!(errors.len());
        answer["errors"] = serde_json::Value::Array(errors);
    }
    answer
}

/// A page built: its body, the records in it, a fault for the answer, the rate-limit headers.
pub(super) type Built = (Vec<u8>, u64, Option<Fault>, HeaderMap);

/// A page of list or search results, as HubSpot writes it.
#[derive(Serialize)]
pub(crate) struct Listing<R> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) total: Option<usize>,
    pub(crate) results: Vec<R>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) paging: Option<Paging>,
}

/// Where the next page starts, present only when one follows.
#[derive(Serialize)]
pub(crate) struct Paging {
    pub(crate) next: Next,
}

/// The next page's token, and (on list pages) its link.
#[derive(Serialize)]
pub(crate) struct Next {
    pub(crate) after: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) link: Option<String>,
}
