//! The headers every answer of the API and the dashboard carries, so that a browser neither
//! frames, caches nor second-guesses them.
//!
//! | header | value | why |
//! |---|---|---|
//! | `X-Frame-Options` | `DENY` | no page of another site shows a page of ours in a frame (clickjacking), for browsers older than `frame-ancestors` |
//! | `Content-Security-Policy` | [`API_POLICY`], or the dashboard's own, each with `frame-ancestors 'none'` | the same for current browsers, and nothing the answer did not ask for is loaded |
//! | `X-Content-Type-Options` | `nosniff` | JSON, or a record's text in a page, is never taken for script or markup |
//! | `Cache-Control` | `no-store` | streams, records and tokens stay out of shared and browser caches |

use axum::http::{header, HeaderValue};
use axum::Router;
use tower_http::set_header::SetResponseHeaderLayer;

/// The API's policy: it answers JSON and text, which load nothing.
pub(crate) const API_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// `router` with the headers above, `policy` as its `Content-Security-Policy`. A handler's own
/// value of any of them is replaced: these are the service's rules, not a route's.
pub(crate) fn secure<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    policy: &'static str,
) -> Router<S> {
    router
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(policy),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
}
