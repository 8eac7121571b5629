//! worker: runs the streams data-streams gives it (HubSpot, or the `generator` source) and
//! delivers their batches.
//!
//! `cargo run --release --example worker`; `-- --help` lists the configuration, each setting also
//! read from its environment variable. It prints `worker ready id=<id>`, dials data-streams (again
//! and again, with backoff, whenever the connection is lost), and stops on SIGINT or SIGTERM:
//! each run stops at its page boundary and what was not acknowledged stays in the outbox.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use common::TransportKind;
use weld_pipeline::runtime::{shutdown_on_signals, Worker, WorkerConfig};
use weld_pipeline::source::Sources;
use weld_pipeline::Transport;
use weld_pipeline_hubspot::{ApiVersion, HubSpotAccount, Token};

/// jemalloc, configured in `.cargo/config.toml`, as data-streams.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The worker of weld-pipeline's reference services: pulls HubSpot CRM data on an interval.
#[derive(Parser)]
#[command(after_help = common::LOG_HELP)]
struct Args {
    /// How to reach data-streams.
    #[arg(long, env = "WELD_TRANSPORT", value_enum, default_value = "tcp")]
    transport: TransportKind,
    /// data-streams' transport address; several, comma-separated (every replica's), are dialed
    /// in turn, the one that answered last first.
    #[arg(long, env = "WELD_CONTROLLER_ADDR", default_value = "127.0.0.1:4000")]
    controller_addr: String,
    /// The sled database of the outbox.
    #[arg(long, env = "WELD_DATA_DIR", default_value = "./data/worker")]
    data_dir: PathBuf,
    /// A stable id for logs and assignment [default: host name + pid].
    #[arg(long, env = "WELD_WORKER_ID")]
    worker_id: Option<String>,
    /// Milliseconds a batch waits in the outbox's memory for its ack before it is written to
    /// disk; 0 writes each batch as it is fetched. A worker killed outright fetches again what
    /// was not written, from data-streams' checkpoint.
    #[arg(long, env = "WELD_OUTBOX_WRITE_AFTER_MS", default_value_t = 1000)]
    outbox_write_after_ms: u64,
    /// The secret data-streams asks workers to prove, when it has one.
    #[arg(long, env = "WELD_SHARED_SECRET", hide_env_values = true)]
    shared_secret: Option<String>,
    /// HubSpot's API; point it at the fake for local runs.
    #[arg(
        long,
        env = "HUBSPOT_BASE_URL",
        default_value = "https://api.hubapi.com"
    )]
    hubspot_base_url: String,
    /// The private-app token, sent as Bearer; never logged.
    #[arg(long, env = "HUBSPOT_ACCESS_TOKEN", hide_env_values = true)]
    hubspot_access_token: Option<String>,
    /// Seconds an incremental window stays behind now: HubSpot's search index trails writes.
    #[arg(long, env = "HUBSPOT_SETTLE_SECS", default_value_t = 30)]
    hubspot_settle_secs: u64,
    /// The account's calls per 10 s until HubSpot's rate-limit headers say otherwise (100 on
    /// free and starter accounts, 190 on professional and enterprise, 250 with the add-on).
    #[arg(long, env = "HUBSPOT_PER_TEN_SECONDS", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    hubspot_per_ten_seconds: u32,
    /// Search calls per second: HubSpot allows 5, and the default stays under it.
    #[arg(long, env = "HUBSPOT_SEARCHES_PER_SECOND", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..))]
    hubspot_searches_per_second: u32,
    /// The largest answer read from HubSpot, in bytes: a longer one fails its call, naming it.
    #[arg(long, env = "HUBSPOT_MAX_BODY_BYTES", default_value_t = weld_pipeline_hubspot::MAX_BODY_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1024..))]
    hubspot_max_body_bytes: u64,
    /// The most properties a stream without its own list reads; an object defining more fails
    /// its runs with a clear error.
    #[arg(long, env = "HUBSPOT_MAX_PROPERTIES", default_value_t = weld_pipeline_hubspot::MAX_DISCOVERED_PROPERTIES)]
    hubspot_max_properties: usize,
    /// HubSpot's API version the streams call: a dated one (`2026-03`, `2026-09`) or `v3`, the
    /// numbered paths HubSpot serves until 2027.
    #[arg(long, env = "HUBSPOT_API_VERSION", default_value_t = ApiVersion::default())]
    hubspot_api_version: ApiVersion,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = Args::parse();
    common::init_tracing();
    args.hubspot_access_token = common::configured(args.hubspot_access_token);
    if args.hubspot_access_token.is_none() {
        tracing::warn!("HUBSPOT_ACCESS_TOKEN is not set: HubSpot will refuse every request (401)");
    }
    let account = HubSpotAccount {
        settle_delay: Duration::from_secs(args.hubspot_settle_secs),
        per_ten_seconds: args.hubspot_per_ten_seconds,
        searches_per_second: args.hubspot_searches_per_second,
        max_body_bytes: usize::try_from(args.hubspot_max_body_bytes).unwrap_or(usize::MAX),
        max_properties: args.hubspot_max_properties,
        api_version: args.hubspot_api_version,
        ..HubSpotAccount::new(
            &args.hubspot_base_url,
            Token::new(args.hubspot_access_token.as_deref().unwrap_or_default()),
        )
    };
    let sources = common::sources(common::connectors(account));
    let worker_id = args.worker_id.clone().unwrap_or_else(common::host_and_pid);
    let mut config = WorkerConfig::new(&worker_id, &args.data_dir);
    config.outbox.write_after = Duration::from_millis(args.outbox_write_after_ms);
    let secret =
        common::shared_secret(args.shared_secret).unwrap_or_else(|e| common::refuse_to_start(e));
    let addr = args.controller_addr;
    common::with_transport!(dial args.transport, addr, secret, |transport| {
        run(transport, config, sources).await
    })
}

async fn run<T: Transport>(
    transport: T,
    config: WorkerConfig,
    sources: Sources,
) -> Result<(), Box<dyn std::error::Error>> {
    let shutdown = shutdown_on_signals();
    let worker_id = config.worker_id.clone();
    let worker = Worker::open(config, transport, sources)?;
    println!("worker ready id={worker_id}");
    worker.run(shutdown).await?;
    tracing::info!("worker stopped");
    Ok(())
}
