//! The HTTP side of weld-pipeline: the HubSpot source, a HubSpot fake, and the HTTP transport.
//!
//! - [`hubspot`]: the source that syncs a HubSpot CRM object type, fully then incrementally,
//!   paced by HubSpot's rate-limit headers, retrying only what retrying can fix.
//! - [`transport`]: the core `Transport` over HTTP/1.1, for networks where only HTTP passes.
//! - [`api`] and [`service`] (feature `service`, default): the data-streams HTTP API as an axum
//!   router over a controller (OpenAPI document, Prometheus metrics, bearer token, error bodies),
//!   and a data-streams service in one call; [`hubspot::HubSpotSources`] builds a worker's
//!   HubSpot sources.
//! - [`fake`] (feature `fake`): a HubSpot CRM v3 stand-in that answers list and search as the
//!   real API does, with its rate limits, errors and faults on demand, so that the source is
//!   tested against the behaviour it will meet.
//!
//! ```
//! # #[cfg(feature = "fake")]
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use weld_pipeline_http::fake::{FakeConfig, FakeHubSpot};
//!
//! let fake = FakeHubSpot::start("127.0.0.1:0", FakeConfig { contacts: 10, ..FakeConfig::default() }).await?;
//! assert_eq!(fake.dump("contacts").len(), 10);
//! # Ok::<_, std::io::Error>(())
//! # }).unwrap();
//! ```

#[cfg(feature = "service")]
pub mod api;
#[cfg(feature = "fake")]
pub mod fake;
pub mod hubspot;
#[cfg(feature = "service")]
pub mod service;
pub mod transport;
