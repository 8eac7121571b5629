//! The API's errors: each answers with its status and `{"error":{"code","message"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use weld_pipeline::{Error, ErrorKind};

use super::model::{ErrorBody, ErrorDetail};

/// An error answer: a status, a stable code and a message for a human.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds the client should wait before it tries again (`Retry-After`), for a 429.
    retry_after: Option<u64>,
}

/// The longest message answered: a message may quote a request's input, and must never echo
/// it at length (names and values are cut to 100 characters where they are quoted; this bounds
/// what is left, such as a parser's own message).
const MAX_MESSAGE: usize = 400;

/// `text` cut to 100 characters, with an ellipsis when it was longer: how a request's input is
/// quoted in a message.
pub(crate) fn cut(text: &str) -> String {
    cut_to(text, 100)
}

fn cut_to(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: cut_to(&message.into(), MAX_MESSAGE),
            retry_after: None,
        }
    }

    /// 400: the body is not JSON.
    pub(crate) fn malformed(message: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {message}"),
        )
    }

    /// 422: a value the API does not accept.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_value", message)
    }

    /// 404: no stream of this name.
    /// 409 `source_changed`: a start that names another source than the stream reads.
    pub(crate) fn source_changed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "source_changed", message)
    }

    pub(crate) fn no_stream(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "stream_not_found",
            format!("no stream named {:?}", cut(name)),
        )
    }

    /// 401: the bearer token is missing or wrong.
    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this endpoint needs the header `Authorization: Bearer <WELD_API_TOKEN>`",
        )
    }

    /// 429: the client presented too many wrong tokens and is shut out for `wait`.
    pub(crate) fn throttled(wait: std::time::Duration) -> Self {
        let secs = super::guesses::Verdict::retry_after_secs(wait);
        ApiError {
            retry_after: Some(secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_wrong_tokens",
                format!(
                    "too many wrong tokens from this address: the token is not checked for {secs} s"
                ),
            )
        }
    }

    /// 413: the body is over the limit.
    pub(crate) fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is over {} KiB", limit / 1024),
        )
    }
}

/// The runtime's errors: a bad value is the caller's (422); storage trouble is transient (503,
/// try again); anything else is ours (500, logged).
impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match (&error, error.kind()) {
            (Error::Invalid(message), _) => ApiError::invalid(message.clone()),
            (_, ErrorKind::Transient) => {
                // Storage trouble is told once by the store, and in /health: not per request.
                tracing::debug!(error = %error, "API request failed on a transient error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    error.to_string(),
                )
            }
            _ => {
                tracing::error!(error = %error, "API request failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    error.to_string(),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after = self.retry_after;
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code: self.code,
                    message: self.message,
                },
            }),
        )
            .into_response();
        if unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
