//! What can go wrong talking to HubSpot, and what each means.

use std::time::Duration;

use weld_pipeline::{Classify, Error, ErrorKind};

/// A failed HubSpot call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubSpotError {
    /// HubSpot answered with an error status. Shown as `HubSpot answered 403 (MISSING_SCOPES,
    /// correlation id 4f0c...): <message>`: the category and the correlation id are what
    /// HubSpot's support asks for.
    #[error("HubSpot answered {status}{}: {message}", about(category.as_deref(), sub_category.as_deref(), correlation_id.as_deref()))]
    Status {
        /// The HTTP status HubSpot answered.
        status: u16,
        /// HubSpot's error category (`INVALID_AUTHENTICATION`, `MISSING_SCOPES`,
        /// `VALIDATION_ERROR`, ...), if given; for a body of the legacy shape, its `errorType`.
        category: Option<String>,
        /// HubSpot's finer category (`subCategory`), if given.
        sub_category: Option<String>,
        /// HubSpot's id of the failed request (`correlationId`), if given.
        correlation_id: Option<String>,
        /// HubSpot's message, with the details of its `errors` after it; never the token, and
        /// at most 500 characters.
        message: String,
    },
    /// A 429: slow down. `DAILY` means the day's quota is spent.
    #[error("HubSpot rate limit {policy}{}{}", about(None, None, correlation_id.as_deref()), retry_after.map(|d| format!(", retry after {d:?}")).unwrap_or_default())]
    RateLimited {
        /// The policy: `TEN_SECONDLY_ROLLING`, `SECONDLY`, `DAILY`.
        policy: String,
        /// HubSpot's id of the refused request (`correlationId`), if given.
        correlation_id: Option<String>,
        /// When to try again: `Retry-After`, or for `DAILY` the time to the next UTC midnight.
        retry_after: Option<Duration>,
        /// The same hint as the core's error, where the retry layer looks for it.
        #[source]
        hint: Error,
    },
    /// The request did not complete (timeout, reset, refused).
    #[error("request to HubSpot failed: {0}")]
    Request(String),
    /// A 200 whose body is not the page HubSpot documents.
    #[error("HubSpot page does not parse: {0}")]
    Unparseable(String),
    /// An answer longer than [`HubSpotAccount::max_body_bytes`](super::HubSpotAccount::max_body_bytes):
    /// the call is abandoned once that much was read (or at once, when its `Content-Length`
    /// says so). Permanent: the same call would bring the same answer.
    #[error(
        "HubSpot's answer to {call} is longer than the {limit}-byte limit (HUBSPOT_MAX_BODY_BYTES)"
    )]
    TooLarge {
        /// The call, as `GET /crm/properties/2026-03/contacts` (without its query).
        call: String,
        /// The limit in bytes.
        limit: usize,
    },
}

impl Classify for HubSpotError {
    fn kind(&self) -> ErrorKind {
        match self {
            HubSpotError::Status { status, .. } => match status {
                // 5xx and the CDN's 52x: the service is struggling, not the request wrong.
                500..=599 if *status != 530 => ErrorKind::Transient,
                _ => ErrorKind::Permanent,
            },
            HubSpotError::RateLimited { .. } | HubSpotError::Request(_) => ErrorKind::Transient,
            HubSpotError::Unparseable(_) | HubSpotError::TooLarge { .. } => ErrorKind::Permanent,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            HubSpotError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl HubSpotError {
    /// A 429 under `policy`, to retry after `retry_after` when known.
    pub fn rate_limited(policy: impl Into<String>, retry_after: Option<Duration>) -> Self {
        HubSpotError::RateLimited {
            policy: policy.into(),
            correlation_id: None,
            retry_after,
            hint: Error::RateLimited { retry_after },
        }
    }
}

/// The longest message a [`HubSpotError::Status`] keeps, in characters: enough for HubSpot's
/// message and a few of its details, short enough for a stream's status.
pub(crate) const MAX_MESSAGE: usize = 500;

/// ` (CATEGORY/SUB, correlation id X)`, or what of it is known, or nothing.
fn about(
    category: Option<&str>,
    sub_category: Option<&str>,
    correlation_id: Option<&str>,
) -> String {
    let mut parts = Vec::new();
    match (category, sub_category) {
        (Some(category), Some(sub)) => parts.push(format!("{category}/{sub}")),
        (Some(category), None) => parts.push(category.to_string()),
        (None, Some(sub)) => parts.push(sub.to_string()),
        (None, None) => {}
    }
    if let Some(id) = correlation_id {
        parts.push(format!("correlation id {id}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

impl From<HubSpotError> for Error {
    fn from(error: HubSpotError) -> Self {
        let kind = error.kind();
        Error::new(kind, error)
    }
}
