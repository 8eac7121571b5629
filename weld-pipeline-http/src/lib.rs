//! The HTTP side of weld-pipeline: the HubSpot source, a HubSpot fake, the HTTP transport and
//! the data-streams HTTP API. One folder and one feature each, every one compiling alone:
//!
//! | module | feature | what it is |
//! |---|---|---|
//! | `hubspot` | `hubspot` (default) | the source that syncs a HubSpot CRM object type, fully then incrementally, paced by HubSpot's rate-limit headers, retrying only what retrying can fix; its source kind (`HubSpotKind`, for data-streams) and factory (`HubSpotSources`, for workers) |
//! | `transport` | `transport` (default) | the core `Transport` over HTTP/1.1, for networks where only HTTP passes |
//! | `api`, `service` | `api` (default) | the data-streams HTTP API as an axum router over a controller (OpenAPI document, Prometheus metrics, bearer token, error bodies), and a data-streams service in one call |
//! | `listener` | `listener` (with `api` or `transport`) | the HTTP/1.1 listener both serve on, with a connection cap and header, idle, body and request timeouts |
//! | `hubspot_fake` | `hubspot-fake` | a HubSpot CRM v3 stand-in that answers list and search as the real API does, with its rate limits, errors and faults on demand, so that the source is tested against the behaviour it will meet |
//!
//! ```
//! # #[cfg(feature = "hubspot-fake")]
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use weld_pipeline_http::hubspot_fake::{FakeConfig, FakeHubSpot};
//!
//! let fake = FakeHubSpot::start("127.0.0.1:0", FakeConfig { contacts: 10, ..FakeConfig::default() }).await?;
//! assert_eq!(fake.dump("contacts").len(), 10);
//! # Ok::<_, std::io::Error>(())
//! # }).unwrap();
//! ```

#[cfg(feature = "api")]
pub mod api;
#[cfg(feature = "dashboard")]
pub mod dashboard;
#[cfg(feature = "hubspot")]
pub mod hubspot;
#[cfg(feature = "hubspot-fake")]
pub mod hubspot_fake;
#[cfg(feature = "listener")]
pub mod listener;
#[cfg(feature = "api")]
pub mod service;
#[cfg(feature = "transport")]
pub mod transport;
