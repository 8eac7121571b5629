//! A local HubSpot stand-in: `cargo run --release --example fake-hubspot`.
//!
//! Serves a generated CRM (contacts, companies, deals) on `FAKE_HUBSPOT_ADDR` (default
//! `127.0.0.1:8090`), accepting the token `FAKE_HUBSPOT_TOKEN` (default `fake-token`), with
//! `FAKE_HUBSPOT_CONTACTS` contacts (default 1,000) and, when `FAKE_HUBSPOT_PER_TEN_SECONDS` is
//! set, HubSpot's rolling 10-second rate limit. Point a source at it with
//! `HUBSPOT_BASE_URL=http://<addr>`. Admin routes: `POST /_admin/faults`, `POST /_admin/mutate`,
//! `GET /_admin/stats`, `GET /_admin/dump?object=contacts`. Runs until Ctrl-C.

use weld_pipeline_http::fake::{FakeConfig, FakeHubSpot};

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: String = env("FAKE_HUBSPOT_ADDR").unwrap_or_else(|| "127.0.0.1:8090".into());
    let config = FakeConfig {
        token: env("FAKE_HUBSPOT_TOKEN").unwrap_or_else(|| "fake-token".into()),
        contacts: env("FAKE_HUBSPOT_CONTACTS").unwrap_or(1_000),
        per_ten_seconds: env("FAKE_HUBSPOT_PER_TEN_SECONDS"),
        ..FakeConfig::default()
    };
    let fake = FakeHubSpot::start(&addr, config).await?;
    println!("fake HubSpot listening on {}", fake.base_url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
