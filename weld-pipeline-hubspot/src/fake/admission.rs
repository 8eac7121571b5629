//! What every CRM request goes through before it is answered: authentication, scopes, the URL
//! length, the rate limits and the injected faults, each answered as HubSpot answers it.

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::versions::{Served, DATED};
use super::{Fake, Fault, Legacy, Refusal};

pub(super) fn correlation_id(fake: &mut Fake) -> String {
    format!("{:08x}-fake-{:04x}", fake.rng.u32(..), fake.rng.u16(..))
}

/// What went wrong, for HubSpot's error body: its status, category and message, and for dated
/// paths the details HubSpot's current body carries.
pub(super) struct Problem<'a> {
    pub(super) status: StatusCode,
    pub(super) category: &'a str,
    pub(super) message: &'a str,
    /// A finer category, where HubSpot gives one (dated bodies only).
    pub(super) sub_category: Option<&'a str>,
    /// Machine-readable details (dated bodies only): the scopes wanted, the ids not found, ...
    pub(super) context: Value,
    /// One entry per thing wrong (dated bodies only), each `{message, context?, ...}`.
    pub(super) errors: Vec<Value>,
}

impl<'a> Problem<'a> {
    /// A problem with no details beyond its category and message.
    pub(super) fn new(status: StatusCode, category: &'a str, message: &'a str) -> Self {
        Problem {
            status,
            category,
            message,
            sub_category: None,
            context: json!({}),
            errors: Vec::new(),
        }
    }
}

/// HubSpot's error body for `problem`, in the shape of the family the request came by:
///
/// - legacy: `{status, message, correlationId, category, errors: [], context: {}}`, the shape
///   HubSpot's v3 client is judged against in CI;
/// - dated: HubSpot's current shape, `{status, message, correlationId, category, subCategory?,
///   context, errors[], links}`.
///
/// 429s are not built here: they keep the rate limiter's own body on both (see
/// [`rate_limited`]).
pub(super) fn refuse(fake: &mut Fake, served: Served, problem: Problem<'_>) -> Refusal {
    let mut body = json!({
        "status": "error",
        "message": problem.message,
        "correlationId": correlation_id(fake),
        "category": problem.category,
        "errors": [],
        "context": {},
    });
    if served.is_dated() {
        if let Some(sub_category) = problem.sub_category {
            body["subCategory"] = json!(sub_category);
        }
        body["context"] = problem.context;
        body["errors"] = Value::Array(problem.errors);
        body["links"] = json!({
            "knowledge-base": "https://www.hubspot.com/products/service/knowledge-base"
        });
    }
    Box::new((problem.status, Json(body)).into_response())
}

/// HubSpot's error body with no details beyond `category` and `message`.
pub(super) fn error(
    fake: &mut Fake,
    served: Served,
    status: StatusCode,
    category: &str,
    message: &str,
) -> Refusal {
    refuse(fake, served, Problem::new(status, category, message))
}

/// What a legacy path answers once [`Legacy::Retired`]. HubSpot has not published what its
/// retired paths will answer; a 410 in its current error shape is the fake's choice.
fn retired(fake: &mut Fake) -> Refusal {
    let problem = Problem {
        sub_category: Some("LEGACY_API_RETIRED"),
        context: json!({"versions": DATED}),
        ..Problem::new(
            StatusCode::GONE,
            "API_VERSION_UNSUPPORTED",
            "This API version is no longer supported; use a date-based version (2026-03 or later).",
        )
    };
    // Always HubSpot's current shape: a client reading it has moved on already.
    refuse(fake, Served::Dated(DATED[0]), problem)
}

fn rate_limited(fake: &mut Fake, policy: &str, retry_after: Option<u64>) -> Refusal {
    fake.stats.rate_limited += 1;
    let message = match policy {
        "DAILY" => "You have reached your daily limit.",
        "SECONDLY" => "You have reached your secondly limit.",
        _ => "You have reached your ten_secondly_rolling limit.",
    };
    let body = json!({
        "status": "error",
        "message": message,
        "errorType": "RATE_LIMIT",
        "correlationId": correlation_id(fake),
        "policyName": policy,
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(seconds));
    }
    Box::new(response)
}

/// A batch request's body, or HubSpot's 400 for one that does not parse or holds more than
/// `max` inputs (`inputs` counts them).
pub(super) fn batch_body<T: serde::de::DeserializeOwned>(
    fake: &mut Fake,
    served: Served,
    body: &[u8],
    max: usize,
    inputs: impl Fn(&T) -> usize,
) -> Result<T, Refusal> {
    let message = match serde_json::from_slice::<T>(body) {
        Ok(request) if inputs(&request) <= max => return Ok(request),
        Ok(_) => format!("Batch read is limited to {max} inputs"),
        Err(e) => format!("Invalid input JSON: {e}"),
    };
    Err(error(
        fake,
        served,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
        &message,
    ))
}

/// HubSpot's 404 for an object type it does not know.
pub(super) fn unknown_object(fake: &mut Fake, served: Served, object: &str) -> Refusal {
    error(
        fake,
        served,
        StatusCode::NOT_FOUND,
        "OBJECT_NOT_FOUND",
        &format!("Unable to infer object type from: {object}"),
    )
}

/// Checks what every CRM request goes through, in HubSpot's order: the token, the scope, the
/// URL length, the rate limits, then injected faults; before all of them, whether its family of
/// paths is still served (see [`Legacy`]). `Ok` carries a fault to apply to the answer (slow,
/// garbage, truncated) and the rate-limit headers to send.
pub(super) fn admit(
    fake: &mut Fake,
    served: Served,
    headers: &HeaderMap,
    uri: &str,
    object: &str,
    searching: bool,
) -> Result<(Option<Fault>, HeaderMap), Refusal> {
    fake.stats.requests += 1;
    match served {
        Served::Legacy => fake.stats.legacy_requests += 1,
        Served::Dated(_) => fake.stats.dated_requests += 1,
    }
    if served == Served::Legacy && fake.config.legacy == Legacy::Retired {
        return Err(retired(fake));
    }
    if searching {
        fake.stats.searches += 1;
    }
    authorize(fake, served, headers, uri, object)?;
    let limit_headers = if searching {
        limit_searches(fake)?;
        HeaderMap::new()
    } else {
        limit_calls(fake)?
    };
    let fault = take_fault(fake, served, if searching { "search" } else { "list" })?;
    Ok((fault, limit_headers))
}

/// The token, the scope and the URL length.
fn authorize(
    fake: &mut Fake,
    served: Served,
    headers: &HeaderMap,
    uri: &str,
    object: &str,
) -> Result<(), Refusal> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(fake.config.token.as_str()) {
        return Err(error(
            fake,
            served,
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found.",
        ));
    }
    // Forbidden by either name: `deals` is forbidden under `0-3` too.
    let name = super::canonical(object);
    if fake
        .config
        .forbidden
        .iter()
        .any(|f| f == object || f == name)
    {
        // HubSpot grants every custom object by one scope.
        let scoped = if name.starts_with("2-") {
            "custom"
        } else {
            name
        };
        let scope = format!("crm.objects.{scoped}.read");
        let message = format!("This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes. It requires one of the following scopes: [{scope}]");
        let problem = Problem {
            context: json!({"requiredGranularScopes": [scope]}),
            errors: vec![json!({
                "message": "One or more of the following scopes are required.",
                "context": {"requiredGranularScopes": [scope]},
            })],
            ..Problem::new(StatusCode::FORBIDDEN, "MISSING_SCOPES", &message)
        };
        return Err(refuse(fake, served, problem));
    }
    if uri.len() > fake.config.max_url_bytes {
        return Err(Box::new(
            (StatusCode::URI_TOO_LONG, "URI Too Long").into_response(),
        ));
    }
    Ok(())
}

/// The search endpoint's own limit: a few per second, `SECONDLY`, no headers.
fn limit_searches(fake: &mut Fake) -> Result<(), Refusal> {
    let Some(per_second) = fake.config.search_per_second else {
        return Ok(());
    };
    let now = Instant::now();
    while fake
        .searches
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
    {
        fake.searches.pop_front();
    }
    if fake.searches.len() >= per_second as usize {
        let retry_after = fake.config.retry_after.then_some(1);
        return Err(rate_limited(fake, "SECONDLY", retry_after));
    }
    fake.searches.push_back(now);
    Ok(())
}

/// The rolling 10-second window of every other call, and the rate-limit headers it answers with.
fn limit_calls(fake: &mut Fake) -> Result<HeaderMap, Refusal> {
    let mut limit_headers = HeaderMap::new();
    let Some(max) = fake.config.per_ten_seconds else {
        return Ok(limit_headers);
    };
    let now = Instant::now();
    let window = Duration::from_secs(10);
    while fake
        .calls
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        fake.calls.pop_front();
    }
    if fake.calls.len() >= max as usize {
        let wait = fake
            .calls
            .front()
            .map_or(1, |t| (window - now.duration_since(*t)).as_secs() + 1);
        let retry_after = fake.config.retry_after.then_some(wait);
        return Err(rate_limited(fake, "TEN_SECONDLY_ROLLING", retry_after));
    }
    fake.calls.push_back(now);
    let remaining = max as usize - fake.calls.len();
    for (name, value) in [
        ("x-hubspot-ratelimit-max", max as u64),
        ("x-hubspot-ratelimit-remaining", remaining as u64),
        ("x-hubspot-ratelimit-interval-milliseconds", 10_000),
        ("x-hubspot-ratelimit-daily", 500_000),
        (
            "x-hubspot-ratelimit-daily-remaining",
            500_000u64.saturating_sub(fake.stats.requests),
        ),
    ] {
        limit_headers.insert(name, HeaderValue::from(value));
    }
    Ok(limit_headers)
}

/// The next injected fault planned for this kind of call (`list` or `search`), if any: an error
/// answer at once, or a fault for the answer.
fn take_fault(fake: &mut Fake, served: Served, kind: &str) -> Result<Option<Fault>, Refusal> {
    let position = fake
        .faults
        .iter()
        .position(|plan| plan.only.as_deref().is_none_or(|only| only == kind));
    let Some(position) = position else {
        return Ok(None);
    };
    let plan = &mut fake.faults[position];
    let fault = plan.fault.clone();
    plan.count = plan.count.saturating_sub(1);
    if plan.count == 0 {
        fake.faults.remove(position);
    }
    match fault {
        Fault::Status { status } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Err(error(
                fake,
                served,
                status,
                "INJECTED",
                "An injected failure.",
            ))
        }
        Fault::RateLimited { retry_after } => {
            Err(rate_limited(fake, "TEN_SECONDLY_ROLLING", retry_after))
        }
        Fault::Daily => Err(rate_limited(fake, "DAILY", None)),
        other => Ok(Some(other)),
    }
}
