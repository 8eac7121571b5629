//! The HTTP side of weld-pipeline: the HTTP transport, the listener it and the API serve on, the
//! data-streams HTTP API and dashboard, and the one-call data-streams service. One folder and one
//! feature each, every one compiling alone (sources live in their own crates:
//! `weld-pipeline-hubspot` for HubSpot):
//!
//! | module | feature | what it is |
//! |---|---|---|
//! | `transport` | `transport` (default) | the core `Transport` over HTTP/1.1, for networks where only HTTP passes |
//! | `api`, `service` | `api` (default) | the data-streams HTTP API as an axum router over a controller (OpenAPI document, Prometheus metrics, bearer token, error bodies), and a data-streams service in one call |
//! | `dashboard` | `dashboard` (default) | server-rendered pages of the streams and workers, with buttons, behind the API's token |
//! | `listener` | `listener` (with `api` or `transport`) | the HTTP/1.1 listener both serve on, with a connection cap and header, idle, body and request timeouts |
//!
//! ```
//! use weld_pipeline_http::listener::Limits;
//!
//! let limits = Limits { max_connections: 256, ..Limits::default() };
//! assert!(limits.max_per_client <= limits.max_connections);
//! ```

#[cfg(feature = "api")]
pub mod api;
#[cfg(feature = "dashboard")]
pub mod dashboard;
#[cfg(feature = "listener")]
pub mod listener;
#[cfg(feature = "api")]
pub mod service;
#[cfg(feature = "transport")]
pub mod transport;
