//! data-streams: the HTTP API (see README) and the controller workers connect to. Streams read
//! HubSpot (the default) or the `generator` source.
//!
//! `cargo run --release --example data-streams`; `-- --help` lists the configuration, each
//! setting also read from its environment variable. When both listeners are bound it prints
//! `data-streams ready api=http://<addr> transport=<addr>` (and ` replica=<id>` on a database); it stops on SIGINT or SIGTERM,
//! answering the requests in progress and flushing the store.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use std::time::Duration;

use clap::Parser;
use common::TransportKind;
use weld_pipeline::runtime::{shutdown_on_signals, Controller};
use weld_pipeline::store::Storage;
use weld_pipeline::Transport;
use weld_pipeline_http::api::{ApiConfig, ApiToken};
use weld_pipeline_http::service::{DataStreams, DataStreamsConfig};
use weld_pipeline_postgres::{PostgresConfig, PostgresStore};

/// jemalloc, configured in `.cargo/config.toml`: glibc's malloc kept twice the live heap
/// resident (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The HTTP API and controller of weld-pipeline's reference services.
#[derive(Parser)]
#[command(after_help = common::LOG_HELP)]
struct Args {
    /// Where the HTTP API listens.
    #[arg(long, env = "WELD_HTTP_ADDR", default_value = "127.0.0.1:3000")]
    http_addr: String,
    /// How workers connect.
    #[arg(long, env = "WELD_TRANSPORT", value_enum, default_value = "tcp")]
    transport: TransportKind,
    /// Where workers connect (for `http`, the internal routes are served here).
    #[arg(long, env = "WELD_TRANSPORT_ADDR", default_value = "127.0.0.1:4000")]
    transport_addr: String,
    /// The sled database (store and registry), and the dashboard's logouts.
    #[arg(long, env = "WELD_DATA_DIR", default_value = "./data/data-streams")]
    data_dir: PathBuf,
    /// When set, every endpoint but /health needs `Authorization: Bearer <token>`.
    #[arg(long, env = "WELD_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// When set, a worker must prove it knows this secret to connect.
    #[arg(long, env = "WELD_SHARED_SECRET", hide_env_values = true)]
    shared_secret: Option<String>,
    /// When set (`postgres://user@host:port/database`), everything is stored in PostgreSQL
    /// instead of the sled database in the data directory.
    /// Add `?sslmode=require` for TLS, verified against Mozilla's roots.
    #[arg(long, env = "WELD_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// A PEM file of certificate authorities to trust for the database's TLS certificate
    /// besides Mozilla's roots (a cloud provider's CA, or your own).
    #[arg(long, env = "WELD_DATABASE_CA_FILE")]
    database_ca_file: Option<std::path::PathBuf>,
    /// With a database: this replica's id among the data-streams sharing it [default: host
    /// name + pid]. A restarted replica with the same id takes its leases back at once.
    #[arg(long, env = "WELD_REPLICA_ID")]
    replica_id: Option<String>,
    /// With a database: how long a replica's lease on a stream lasts unless renewed (every
    /// fifth of it): how long the streams of a replica that died wait for another.
    #[arg(long, env = "WELD_LEASE_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    lease_secs: u64,
    /// Addresses of reverse proxies in front of the API, comma-separated: a request from one
    /// counts against the client its X-Forwarded-For names, for the token-guess throttle.
    #[arg(long, env = "WELD_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<std::net::IpAddr>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    common::init_tracing();
    // Checked before anything is opened or bound: a weak secret or token stops the start.
    let secret = common::shared_secret(args.shared_secret.clone())
        .unwrap_or_else(|e| common::refuse_to_start(e));
    let token = common::configured(args.api_token.clone())
        .map(ApiToken::new)
        .transpose()
        .unwrap_or_else(|e| common::refuse_to_start(e));
    let addr = args.transport_addr.clone();
    common::with_transport!(args.transport, addr, secret, |transport| {
        let local_addr = transport.clone();
        serve(transport, move || local_addr.local_addr(), args, token).await
    })
}

async fn serve<T: Transport>(
    transport: T,
    local_addr: impl Fn() -> Option<SocketAddr>,
    args: Args,
    token: Option<ApiToken>,
) -> Result<(), Box<dyn std::error::Error>> {
    let database_url = common::configured(args.database_url.clone());
    let replica = args.replica_id.clone().unwrap_or_else(common::host_and_pid);
    let mut metrics = metrics_exporter_prometheus::PrometheusBuilder::new();
    if database_url.is_some() {
        // Replicas scraped side by side tell their series apart.
        metrics = metrics.add_global_label("replica", &replica);
    }
    let metrics = metrics.install_recorder()?;
    let storage = match database_url {
        None => Storage::sled(&args.data_dir)?,
        Some(url) => {
            let database = PostgresConfig {
                ca_file: args.database_ca_file,
                ..PostgresConfig::new(url)
            };
            PostgresStore::replica(&database, replica, Duration::from_secs(args.lease_secs))?
        }
    };
    let controller = Controller::new(storage, common::source_kinds(common::connector_kinds()));
    let mut config = DataStreamsConfig {
        http_addr: args.http_addr,
        api: ApiConfig {
            token,
            metrics: Some(metrics),
        },
        ..DataStreamsConfig::new(args.data_dir)
    };
    config.limits.trusted_proxies = args.trusted_proxies;
    let service = DataStreams::start(&transport, controller, config, shutdown_on_signals()).await?;
    let transport_addr = local_addr().ok_or("the transport is not listening")?;
    let replica = service
        .controller()
        .replica()
        .map(|id| format!(" replica={id}"));
    println!(
        "data-streams ready api=http://{} transport={transport_addr}{}",
        service.api_addr(),
        replica.unwrap_or_default()
    );
    service.wait().await?;
    tracing::info!("data-streams stopped");
    Ok(())
}
