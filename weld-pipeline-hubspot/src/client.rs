//! One HTTP call to HubSpot, as a tower service: the layers (rate limit, retry, timeout) wrap it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use tower::Service;
use weld_pipeline::middleware::{Budget, BudgetPacer, Pacer};
use weld_pipeline::{BoxError, Error, Timestamp};

use super::config::HubSpotAccount;
use super::error::HubSpotError;

/// One call.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Call {
    /// A page of the list endpoint.
    List {
        object_type: Arc<str>,
        archived: bool,
        after: Option<String>,
        properties: Vec<String>,
    },
    /// A page of search.
    Search {
        object_type: Arc<str>,
        body: serde_json::Value,
    },
    /// The object type's property definitions.
    Properties { object_type: Arc<str> },
    /// The account's custom object schemas.
    Schemas,
    /// A page of owners.
    Owners {
        archived: bool,
        after: Option<String>,
    },
    /// The pipelines (and their stages) of an object type.
    Pipelines { object_type: Arc<str> },
    /// Records by id, with properties (batch read), live or archived.
    BatchRead {
        object_type: Arc<str>,
        archived: bool,
        body: serde_json::Value,
    },
    /// The associations of some records to one other type (v4 batch read).
    Associations {
        from: Arc<str>,
        to: Arc<str>,
        body: serde_json::Value,
    },
}

impl Call {
    /// The call as an error names it: its method and path, without the query (which may list
    /// hundreds of properties).
    pub(crate) fn name(&self) -> String {
        match self {
            Call::List { object_type, .. } => format!("GET /crm/v3/objects/{object_type}"),
            Call::Search { object_type, .. } => {
                format!("POST /crm/v3/objects/{object_type}/search")
            }
            Call::Properties { object_type } => format!("GET /crm/v3/properties/{object_type}"),
            Call::Schemas => "GET /crm/v3/schemas".into(),
            Call::Owners { .. } => "GET /crm/v3/owners".into(),
            Call::Pipelines { object_type } => format!("GET /crm/v3/pipelines/{object_type}"),
            Call::BatchRead { object_type, .. } => {
                format!("POST /crm/v3/objects/{object_type}/batch/read")
            }
            Call::Associations { from, to, .. } => {
                format!("POST /crm/v4/associations/{from}/{to}/batch/read")
            }
        }
    }
}

/// Sends calls to HubSpot and turns its answers into bodies or classified errors, feeding the
/// budget pacer from the rate-limit headers it reads.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    http: reqwest::Client,
    account: Arc<HubSpotAccount>,
    budget: Arc<BudgetPacer>,
}

impl Client {
    pub(crate) fn new(
        account: Arc<HubSpotAccount>,
        budget: Arc<BudgetPacer>,
    ) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("weld-pipeline/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Bug(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            account,
            budget,
        })
    }

    /// The list URL for a call, to measure it before sending.
    pub(crate) fn list_url(
        account: &HubSpotAccount,
        object_type: &str,
        archived: bool,
        after: Option<&str>,
        properties: &[String],
    ) -> String {
        let mut url = format!(
            "{}/crm/v3/objects/{}?limit={}&archived={archived}",
            account.base_url.trim_end_matches('/'),
            object_type,
            account.list_limit
        );
        if !properties.is_empty() {
            url.push_str("&properties=");
            url.push_str(&properties.join(","));
        }
        if let Some(after) = after {
            url.push_str("&after=");
            url.push_str(after);
        }
        url
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    message: Option<String>,
    category: Option<String>,
    policy_name: Option<String>,
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The time to the next UTC midnight, when a `DAILY` quota resets.
fn until_midnight() -> Duration {
    let day = 86_400_000;
    let now = Timestamp::now().as_millis();
    Duration::from_millis((day - now.rem_euclid(day)) as u64)
}

impl Client {
    /// The HTTP request of a call, with the token and the deadline.
    fn request(&self, call: &Call) -> Result<reqwest::RequestBuilder, BoxError> {
        let account = &self.account;
        let base = account.base_url.trim_end_matches('/');
        let request = match call {
            Call::List {
                object_type,
                archived,
                after,
                properties,
            } => self.http.get(Client::list_url(
                account,
                object_type,
                *archived,
                after.as_deref(),
                properties,
            )),
            Call::Search { object_type, body } => self
                .http
                .post(format!("{base}/crm/v3/objects/{object_type}/search"))
                .header("content-type", "application/json")
                .body(
                    serde_json::to_vec(body)
                        .map_err(|e| Error::Bug(format!("search body: {e}")))?,
                ),
            Call::Properties { object_type } => self
                .http
                .get(format!("{base}/crm/v3/properties/{object_type}")),
            Call::Schemas => self.http.get(format!("{base}/crm/v3/schemas")),
            Call::Owners { archived, after } => {
                let mut url = format!(
                    "{base}/crm/v3/owners?limit={}&archived={archived}",
                    account.list_limit
                );
                if let Some(after) = after {
                    url.push_str("&after=");
                    url.push_str(after);
                }
                self.http.get(url)
            }
            Call::Pipelines { object_type } => self
                .http
                .get(format!("{base}/crm/v3/pipelines/{object_type}")),
            Call::BatchRead {
                object_type,
                archived,
                body,
            } => self
                .http
                .post(format!(
                    "{base}/crm/v3/objects/{object_type}/batch/read?archived={archived}"
                ))
                .header("content-type", "application/json")
                .body(
                    serde_json::to_vec(body)
                        .map_err(|e| Error::Bug(format!("batch read body: {e}")))?,
                ),
            Call::Associations { from, to, body } => self
                .http
                .post(format!("{base}/crm/v4/associations/{from}/{to}/batch/read"))
                .header("content-type", "application/json")
                .body(
                    serde_json::to_vec(body)
                        .map_err(|e| Error::Bug(format!("associations body: {e}")))?,
                ),
        };
        Ok(request
            .header("authorization", account.token.bearer())
            .timeout(account.timeout))
    }

    /// Sends a call: the body of a 200, or the error HubSpot's answer means.
    async fn send(self, call: Call) -> Result<Bytes, BoxError> {
        let timeout = self.account.timeout;
        let response = self.request(&call)?.send().await.map_err(|e| -> BoxError {
            if e.is_timeout() {
                Box::new(Error::Timeout {
                    operation: "HubSpot request",
                    after: timeout,
                })
            } else {
                // reqwest's message names the URL, never the token (it travels in a header).
                Box::new(Error::from(HubSpotError::Request(e.to_string())))
            }
        })?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        observe_budget(&self.budget, &headers);
        let body = read_bounded(response, self.account.max_body_bytes, &call, timeout).await?;
        // 207: a batch read answered in part (some of its ids have nothing to read); the body
        // says which, and the caller reads it.
        if status == 200 || status == 207 {
            return Ok(body);
        }
        Err(Box::new(Error::from(refusal(status, &headers, &body))))
    }
}

/// The body of `response`, read chunk by chunk up to `limit` bytes: an answer that says (by
/// `Content-Length`) or turns out to be longer is abandoned there, its connection dropped, so
/// no answer holds more than `limit` bytes of the worker's memory (twice that for the moment an
/// answer read in chunks is joined into one buffer), however long or endless it
/// is. A body that stops arriving is ended by the request's deadline, which covers the body.
async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
    call: &Call,
    timeout: Duration,
) -> Result<Bytes, BoxError> {
    let too_large = || -> BoxError {
        Box::new(Error::from(HubSpotError::TooLarge {
            call: call.name(),
            limit,
        }))
    };
    let announced = response.content_length();
    if announced.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    // Chunks kept as they came and joined once at the end: a growing buffer would double past
    // the limit, and copy itself at every doubling.
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut read = 0;
    loop {
        let chunk = response.chunk().await.map_err(|e| -> BoxError {
            if e.is_timeout() {
                Box::new(Error::Timeout {
                    operation: "HubSpot request",
                    after: timeout,
                })
            } else {
                Box::new(Error::from(HubSpotError::Request(format!(
                    "reading the body of {}: {e}",
                    call.name()
                ))))
            }
        })?;
        let Some(chunk) = chunk else {
            return Ok(match chunks.len() {
                1 => chunks.remove(0),
                _ => Bytes::from(chunks.concat()),
            });
        };
        read += chunk.len();
        if read > limit {
            return Err(too_large());
        }
        chunks.push(chunk);
    }
}

/// Feeds the pacer from the rate-limit headers, when the answer has them.
fn observe_budget(budget: &BudgetPacer, headers: &HeaderMap) {
    if let (Some(max), Some(remaining), Some(interval)) = (
        header_u64(headers, "x-hubspot-ratelimit-max"),
        header_u64(headers, "x-hubspot-ratelimit-remaining"),
        header_u64(headers, "x-hubspot-ratelimit-interval-milliseconds"),
    ) {
        budget.observe(
            tokio::time::Instant::now(),
            Budget {
                max: max as u32,
                remaining: remaining as u32,
                interval: Duration::from_millis(interval),
            },
        );
    }
}

/// What an answer other than 200 means: a rate limit (with how long to wait) or a status.
fn refusal(status: u16, headers: &HeaderMap, body: &[u8]) -> HubSpotError {
    let details: Option<ErrorBody> = serde_json::from_slice(body).ok();
    if status == 429 {
        let policy = details
            .as_ref()
            .and_then(|d| d.policy_name.clone())
            .unwrap_or_else(|| "TEN_SECONDLY_ROLLING".into());
        let retry_after = if policy == "DAILY" {
            Some(until_midnight())
        } else {
            header_u64(headers, "retry-after").map(Duration::from_secs)
        };
        return HubSpotError::rate_limited(policy, retry_after);
    }
    HubSpotError::Status {
        status,
        category: details.as_ref().and_then(|d| d.category.clone()),
        message: details
            .and_then(|d| d.message)
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()),
    }
}

impl Service<Call> for Client {
    type Response = Bytes;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Bytes, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        Box::pin(self.clone().send(call))
    }
}
