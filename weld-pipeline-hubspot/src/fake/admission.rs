//! What every CRM request goes through before it is answered: authentication, scopes, the URL
//! length, the rate limits and the injected faults, each answered as HubSpot answers it.

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::{Fake, Fault, Refusal};

pub(super) fn correlation_id(fake: &mut Fake) -> String {
    format!("{:08x}-fake-{:04x}", fake.rng.u32(..), fake.rng.u16(..))
}

/// HubSpot's error body, with every field it documents.
pub(super) fn error(fake: &mut Fake, status: StatusCode, category: &str, message: &str) -> Refusal {
    let body = json!({
        "status": "error",
        "message": message,
        "correlationId": correlation_id(fake),
        "category": category,
        "errors": [],
        "context": {},
    });
    Box::new((status, Json(body)).into_response())
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
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
        &message,
    ))
}

/// HubSpot's 404 for an object type it does not know.
pub(super) fn unknown_object(fake: &mut Fake, object: &str) -> Refusal {
    error(
        fake,
        StatusCode::NOT_FOUND,
        "OBJECT_NOT_FOUND",
        &format!("Unable to infer object type from: {object}"),
    )
}

/// Checks what every CRM request goes through, in HubSpot's order: the token, the scope, the
/// URL length, the rate limits, then injected faults. `Ok` carries a fault to apply to the
/// answer (slow, garbage, truncated) and the rate-limit headers to send.
pub(super) fn admit(
    fake: &mut Fake,
    headers: &HeaderMap,
    uri: &str,
    object: &str,
    searching: bool,
) -> Result<(Option<Fault>, HeaderMap), Refusal> {
    fake.stats.requests += 1;
    if searching {
        fake.stats.searches += 1;
    }
    authorize(fake, headers, uri, object)?;
    let limit_headers = if searching {
        limit_searches(fake)?;
        HeaderMap::new()
    } else {
        limit_calls(fake)?
    };
    let fault = take_fault(fake, if searching { "search" } else { "list" })?;
    Ok((fault, limit_headers))
}

/// The token, the scope and the URL length.
fn authorize(fake: &mut Fake, headers: &HeaderMap, uri: &str, object: &str) -> Result<(), Refusal> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(fake.config.token.as_str()) {
        return Err(error(
            fake,
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found.",
        ));
    }
    if fake.config.forbidden.iter().any(|f| f == object) {
        let message = format!("This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes. It requires one of the following scopes: [crm.objects.{object}.read]");
        return Err(error(
            fake,
            StatusCode::FORBIDDEN,
            "MISSING_SCOPES",
            &message,
        ));
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
fn take_fault(fake: &mut Fake, kind: &str) -> Result<Option<Fault>, Refusal> {
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
            Err(error(fake, status, "INJECTED", "An injected failure."))
        }
        Fault::RateLimited { retry_after } => {
            Err(rate_limited(fake, "TEN_SECONDLY_ROLLING", retry_after))
        }
        Fault::Daily => Err(rate_limited(fake, "DAILY", None)),
        other => Ok(Some(other)),
    }
}
