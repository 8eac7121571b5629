//! What can go wrong talking to HubSpot, and what each means.

use std::time::Duration;

use weld_pipeline::{Classify, Error, ErrorKind};

/// A failed HubSpot call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubSpotError {
    /// HubSpot answered with an error status.
    #[error("HubSpot answered {status}{}: {message}", category.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Status {
        /// The HTTP status HubSpot answered.
        status: u16,
        /// HubSpot's error category (`INVALID_AUTHENTICATION`, `MISSING_SCOPES`, ...), if given.
        category: Option<String>,
        /// HubSpot's message.
        message: String,
    },
    /// A 429: slow down. `DAILY` means the day's quota is spent.
    #[error("HubSpot rate limit {policy}{}", retry_after.map(|d| format!(", retry after {d:?}")).unwrap_or_default())]
    RateLimited {
        /// The policy: `TEN_SECONDLY_ROLLING`, `SECONDLY`, `DAILY`.
        policy: String,
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
        /// The call, as `GET /crm/v3/properties/contacts` (without its query).
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
            retry_after,
            hint: Error::RateLimited { retry_after },
        }
    }
}

impl From<HubSpotError> for Error {
    fn from(error: HubSpotError) -> Self {
        let kind = error.kind();
        Error::new(kind, error)
    }
}
