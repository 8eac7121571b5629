//! A local HubSpot stand-in: `cargo run --release --example fake-hubspot`.
//!
//! Serves a generated CRM (contacts, companies, deals) on `FAKE_HUBSPOT_ADDR`, accepting the
//! token `FAKE_HUBSPOT_TOKEN`; `-- --help` lists every setting. It prints
//! `fake HubSpot listening on http://<addr>`: point a worker at it with `HUBSPOT_BASE_URL`.
//! It serves HubSpot's legacy paths (`/crm/v3/...`, `/crm/v4/...`) and its dated ones
//! (`/crm/objects/2026-03/...`); `FAKE_HUBSPOT_LEGACY=retired` makes the legacy ones answer 410.
//! Admin routes: `POST /_admin/faults`, `POST /_admin/mutate`, `POST /_admin/latency`,
//! `POST /_admin/legacy`, `GET /_admin/stats`, `GET /_admin/dump?object=contacts`. Runs until
//! SIGINT or SIGTERM.

mod common;

use clap::Parser;
use weld_pipeline::runtime::shutdown_on_signals;
use weld_pipeline_hubspot::fake::{FakeConfig, FakeHubSpot, Legacy};

/// A HubSpot CRM stand-in (legacy v3/v4 and dated 2026-03 paths) with rate limits and faults
/// on demand.
#[derive(Parser)]
#[command(after_help = common::LOG_HELP)]
struct Args {
    /// Where it listens; port 0 picks a free one.
    #[arg(long, env = "FAKE_HUBSPOT_ADDR", default_value = "127.0.0.1:8090")]
    addr: String,
    /// The private-app token it accepts.
    #[arg(long, env = "FAKE_HUBSPOT_TOKEN", default_value = "fake-token")]
    token: String,
    /// Contacts generated.
    #[arg(long, env = "FAKE_HUBSPOT_CONTACTS", default_value_t = 1_000)]
    contacts: usize,
    /// HubSpot's rolling 10-second limit of non-search calls [default: none].
    #[arg(long, env = "FAKE_HUBSPOT_PER_TEN_SECONDS")]
    per_ten_seconds: Option<u32>,
    /// Search calls allowed per second (HubSpot's 5); 0 for no limit.
    #[arg(long, env = "FAKE_HUBSPOT_SEARCH_PER_SECOND", default_value_t = 5)]
    search_per_second: u32,
    /// Custom properties each object type defines, of every HubSpot type (a real portal has
    /// hundreds), each set on about a quarter of the records.
    #[arg(long, env = "FAKE_HUBSPOT_CUSTOM_PROPERTIES", default_value_t = 300)]
    custom_properties: usize,
    /// The round trip every CRM request takes, in milliseconds (about 150 from a cloud region
    /// to HubSpot).
    #[arg(long, env = "FAKE_HUBSPOT_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// `served`, or `retired`: every legacy path (`/crm/v3/...`, `/crm/v4/...`) answers 410, as
    /// after HubSpot's sunset (the body is the fake's choice: HubSpot has not published its own).
    #[arg(long, env = "FAKE_HUBSPOT_LEGACY", default_value = "served", value_parser = legacy)]
    legacy: Legacy,
}

fn legacy(value: &str) -> Result<Legacy, String> {
    match value {
        "served" => Ok(Legacy::Served),
        "retired" => Ok(Legacy::Retired),
        other => Err(format!("`{other}`: expected `served` or `retired`")),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    common::init_tracing();
    let shutdown = shutdown_on_signals();
    let config = FakeConfig {
        token: args.token,
        contacts: args.contacts,
        per_ten_seconds: args.per_ten_seconds,
        search_per_second: (args.search_per_second > 0).then_some(args.search_per_second),
        custom_properties: args.custom_properties,
        latency: std::time::Duration::from_millis(args.latency_ms),
        legacy: args.legacy,
        ..FakeConfig::default()
    };
    let fake = FakeHubSpot::start(&args.addr, config).await?;
    println!("fake HubSpot listening on {}", fake.base_url());
    shutdown.cancelled().await;
    Ok(())
}
