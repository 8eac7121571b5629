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

use super::api_version::{ApiVersion, Endpoint};
use super::config::{HubSpotAccount, Token};
use super::error::{HubSpotError, MAX_MESSAGE};

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
    /// The associations of some records to one other type (the associations batch read).
    Associations {
        from: Arc<str>,
        to: Arc<str>,
        body: serde_json::Value,
    },
}

impl Call {
    /// The endpoint the call goes to.
    fn endpoint(&self) -> Endpoint<'_> {
        match self {
            Call::List { object_type, .. } => Endpoint::Objects { object_type },
            Call::Search { object_type, .. } => Endpoint::Search { object_type },
            Call::Properties { object_type } => Endpoint::Properties { object_type },
            Call::Schemas => Endpoint::Schemas,
            Call::Owners { .. } => Endpoint::Owners,
            Call::Pipelines { object_type } => Endpoint::Pipelines { object_type },
            Call::BatchRead { object_type, .. } => Endpoint::BatchRead { object_type },
            Call::Associations { from, to, .. } => Endpoint::LinksBatchRead { from, to },
        }
    }

    /// The call as an error names it: its method and path in `version`, without the query
    /// (which may list hundreds of properties).
    pub(crate) fn name(&self, version: ApiVersion) -> String {
        let method = match self {
            Call::Search { .. } | Call::BatchRead { .. } | Call::Associations { .. } => "POST",
            _ => "GET",
        };
        format!("{method} {}", version.path(self.endpoint()))
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
            "{}{}?limit={}&archived={archived}",
            account.base_url.trim_end_matches('/'),
            account.api_version.path(Endpoint::Objects { object_type }),
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

/// An error answer's body, of either shape HubSpot sends: today's `{message, correlationId,
/// category, subCategory, context, errors[]}`, or the rate limiter's legacy `{status, message,
/// errorType, correlationId, policyName}`. Every member may be missing.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ErrorBody {
    message: Option<String>,
    category: Option<String>,
    sub_category: Option<String>,
    correlation_id: Option<String>,
    error_type: Option<String>,
    policy_name: Option<String>,
    errors: Vec<ErrorDetail>,
}

/// One of the details of a refused request (which field, which input).
#[derive(Default, Deserialize)]
#[serde(default)]
struct ErrorDetail {
    message: Option<String>,
}

/// How many of an answer's details its message repeats.
const DETAILS_SHOWN: usize = 3;

impl ErrorBody {
    /// The message, its first details after it, with `token` nowhere in it, at most
    /// [`MAX_MESSAGE`] characters.
    fn message(&self, body: &[u8], token: &Token) -> String {
        let mut message = match &self.message {
            Some(message) => message.clone(),
            None => String::from_utf8_lossy(&body[..body.len().min(MAX_MESSAGE)]).into_owned(),
        };
        let details = self.errors.iter().filter_map(|e| e.message.as_deref());
        for detail in details.take(DETAILS_SHOWN) {
            if message.contains(detail) {
                continue;
            }
            message.push_str("; ");
            message.push_str(detail);
        }
        let mut message = token.redact(&message);
        if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE) {
            message.truncate(cut);
            message.push_str("...");
        }
        message
    }
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
        let url = format!(
            "{}{}",
            account.base_url.trim_end_matches('/'),
            account.api_version.path(call.endpoint())
        );
        let json = |body: &serde_json::Value| -> Result<reqwest::RequestBuilder, BoxError> {
            let bytes = serde_json::to_vec(body).map_err(|e| {
                Error::Bug(format!("body of {}: {e}", call.name(account.api_version)))
            })?;
            Ok(self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .body(bytes))
        };
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
            Call::Owners { archived, after } => {
                let mut url = format!("{url}?limit={}&archived={archived}", account.list_limit);
                if let Some(after) = after {
                    url.push_str("&after=");
                    url.push_str(after);
                }
                self.http.get(url)
            }
            Call::Properties { .. } | Call::Schemas | Call::Pipelines { .. } => self.http.get(&url),
            // HubSpot takes `archived` as a query parameter of a batch read (its own client
            // sends it so), the ids and properties in the body.
            Call::BatchRead { archived, body, .. } => json(body)?.query(&[("archived", archived)]),
            Call::Search { body, .. } | Call::Associations { body, .. } => json(body)?,
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
        let body = read_bounded(
            response,
            self.account.max_body_bytes,
            &call,
            self.account.api_version,
            timeout,
        )
        .await?;
        // 207: a batch read answered in part (some of its ids have nothing to read); the body
        // says which, and the caller reads it.
        if status == 200 || status == 207 {
            return Ok(body);
        }
        Err(Box::new(Error::from(refusal(
            status,
            &headers,
            &body,
            &self.account.token,
        ))))
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
    version: ApiVersion,
    timeout: Duration,
) -> Result<Bytes, BoxError> {
    let too_large = || -> BoxError {
        Box::new(Error::from(HubSpotError::TooLarge {
            call: call.name(version),
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
                    call.name(version)
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

/// What an answer other than 200 means: a rate limit (with how long to wait) or a status,
/// with HubSpot's category and correlation id, and never `token`.
fn refusal(status: u16, headers: &HeaderMap, body: &[u8], token: &Token) -> HubSpotError {
    let details: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    if status == 429 {
        let policy = details
            .policy_name
            .unwrap_or_else(|| "TEN_SECONDLY_ROLLING".into());
        let retry_after = if policy == "DAILY" {
            Some(until_midnight())
        } else {
            header_u64(headers, "retry-after").map(Duration::from_secs)
        };
        return HubSpotError::RateLimited {
            policy,
            correlation_id: details.correlation_id,
            retry_after,
            hint: Error::RateLimited { retry_after },
        };
    }
    HubSpotError::Status {
        status,
        message: details.message(body, token),
        category: details.category.or(details.error_type),
        sub_category: details.sub_category,
        correlation_id: details.correlation_id,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, body: &str) -> HubSpotError {
        refusal(
            status,
            &HeaderMap::new(),
            body.as_bytes(),
            &Token::new("pat-na1-secret"),
        )
    }

    #[test]
    fn todays_error_body_gives_its_category_sub_category_and_correlation_id() {
        let error = refused(
            403,
            r#"{"status":"error","message":"This app hasn't been granted all required scopes to make this call.","correlationId":"aeb5f871-7f07-4993-9211-075dc63e7cbf","category":"MISSING_SCOPES","subCategory":"GRANULAR_SCOPES","context":{"requiredGranularScopes":["crm.objects.contacts.read"]},"errors":[{"message":"One or more of the following scopes are required.","context":{"requiredGranularScopes":["crm.objects.contacts.read"]}}],"links":{"scopes":"https://developers.hubspot.com/scopes"}}"#,
        );
        assert_eq!(
            error.to_string(),
            "HubSpot answered 403 (MISSING_SCOPES/GRANULAR_SCOPES, correlation id \
             aeb5f871-7f07-4993-9211-075dc63e7cbf): This app hasn't been granted all required \
             scopes to make this call.; One or more of the following scopes are required."
        );
    }

    #[test]
    fn the_rate_limiters_legacy_body_gives_its_policy_and_correlation_id() {
        let error = refused(
            429,
            r#"{"status":"error","message":"You have reached your secondly limit.","errorType":"RATE_LIMIT","correlationId":"c-1","policyName":"SECONDLY","requestId":"r-1"}"#,
        );
        assert!(matches!(&error, HubSpotError::RateLimited { policy, .. } if policy == "SECONDLY"));
        assert_eq!(
            error.to_string(),
            "HubSpot rate limit SECONDLY (correlation id c-1)"
        );
        // A legacy body on another status still shows what kind of error it is.
        let error = refused(
            400,
            r#"{"status":"error","message":"bad","errorType":"VALIDATION_ERROR","correlationId":"c-2"}"#,
        );
        assert_eq!(
            error.to_string(),
            "HubSpot answered 400 (VALIDATION_ERROR, correlation id c-2): bad"
        );
    }

    #[test]
    fn an_answer_never_carries_the_token_into_an_error() {
        let error = refused(
            401,
            r#"{"message":"Authentication credentials not found: pat-na1-secret, sent as Bearer pat-na1-secret","category":"INVALID_AUTHENTICATION"}"#,
        );
        let shown = error.to_string();
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("Bearer <redacted>"), "{shown}");
        // Not JSON: the start of the body, redacted as well.
        let shown = refused(502, "<html>Bearer abc.def proxy error</html>").to_string();
        assert_eq!(
            shown,
            "HubSpot answered 502: <html>Bearer <redacted> proxy error</html>"
        );
    }

    #[test]
    fn a_long_message_is_cut() {
        let long = "x".repeat(5_000);
        let body = serde_json::json!({"message": long, "category": "VALIDATION_ERROR"});
        let HubSpotError::Status { message, .. } = refused(400, &body.to_string()) else {
            panic!("a status");
        };
        assert_eq!(message.chars().count(), MAX_MESSAGE + 3);
    }

    #[test]
    fn a_call_is_named_by_its_versions_path() {
        let call = Call::Associations {
            from: "contacts".into(),
            to: "companies".into(),
            body: serde_json::json!({}),
        };
        assert_eq!(
            call.name(ApiVersion::V2026_03),
            "POST /crm/associations/2026-03/contacts/companies/batch/read"
        );
        assert_eq!(
            call.name(ApiVersion::V3),
            "POST /crm/v4/associations/contacts/companies/batch/read"
        );
        let properties = Call::Properties {
            object_type: "contacts".into(),
        };
        assert_eq!(
            properties.name(ApiVersion::default()),
            "GET /crm/properties/2026-03/contacts"
        );
    }
}
