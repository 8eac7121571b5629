//! What the example services share: the transport choice and the log setup.

// Each example compiles this module on its own and uses a part of it.
#![allow(dead_code, unused_macros, unused_imports)]

use std::sync::Arc;

use clap::ValueEnum;
use weld_pipeline::source::{GeneratorSources, SourceKinds, Sources};
use weld_pipeline_hubspot::{HubSpotAccount, HubSpotKind, HubSpotSources};

/// `WELD_TRANSPORT`: how data-streams and its workers talk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum TransportKind {
    /// Length-delimited frames over TCP (weld-pipeline-tcp).
    Tcp,
    /// HTTP/1.1 requests and a long poll (weld-pipeline-http), where only HTTP passes.
    Http,
}

/// Runs `$body` with `$transport` bound to the transport `$kind` names, serving `$addr`, with
/// the shared secret `$secret`: the one place the reference services turn `WELD_TRANSPORT` into a
/// transport. The body is compiled once per transport type. With `dial` first, `$addr` is a
/// comma-separated list of controllers, dialed in turn ([`Failover`](weld_pipeline::transport::Failover)).
macro_rules! with_transport {
    ($kind:expr, $addr:expr, $secret:expr, |$transport:ident| $body:expr) => {
        $crate::common::with_transport!(@make $kind, $secret, |make| make(&$addr), |$transport| $body)
    };
    (dial $kind:expr, $addrs:expr, $secret:expr, |$transport:ident| $body:expr) => {
        $crate::common::with_transport!(@make $kind, $secret, |make| {
            weld_pipeline::transport::Failover::new(
                $crate::common::addresses(&$addrs).map(make).collect(),
            )?
        }, |$transport| $body)
    };
    (@make $kind:expr, $secret:expr, |$make:ident| $build:expr, |$transport:ident| $body:expr) => {
        match $kind {
            $crate::common::TransportKind::Tcp => {
                let config = weld_pipeline_tcp::TcpConfig {
                    secret: $secret,
                    ..weld_pipeline_tcp::TcpConfig::default()
                };
                let $make =
                    |addr: &str| weld_pipeline_tcp::TcpTransport::with_config(addr, config.clone());
                let $transport = $build;
                $body
            }
            $crate::common::TransportKind::Http => {
                let config = weld_pipeline_http::transport::HttpConfig {
                    secret: $secret,
                    ..weld_pipeline_http::transport::HttpConfig::default()
                };
                let $make = |addr: &str| {
                    weld_pipeline_http::transport::HttpTransport::with_config(addr, config.clone())
                };
                let $transport = $build;
                $body
            }
        }
    };
}
pub(crate) use with_transport;

/// The addresses of a comma-separated list (`a:4000, b:4000`), without blanks.
pub(crate) fn addresses(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|a| !a.is_empty())
}

/// The source kinds data-streams accepts: the connectors' kinds it is given (the first is the
/// default of a start without a source), and the generator, for demos and benchmarks without
/// an account.
pub(crate) fn source_kinds(connectors: SourceKinds) -> SourceKinds {
    connectors.with(Arc::new(GeneratorSources))
}

/// The sources a worker runs: the connectors' sources it is given, and the generator.
pub(crate) fn sources(connectors: Sources) -> Sources {
    connectors.with(Arc::new(GeneratorSources))
}

/// The connectors of the reference services on data-streams' side: HubSpot.
pub(crate) fn connector_kinds() -> SourceKinds {
    SourceKinds::new().with(Arc::new(HubSpotKind))
}

/// The connectors of the reference worker: HubSpot, reading `account`.
pub(crate) fn connectors(account: HubSpotAccount) -> Sources {
    Sources::new().with(Arc::new(HubSpotSources::new(account)))
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a log file or collector gets plain `key=value` text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// The `--help` footer of every service.
pub(crate) const LOG_HELP: &str = "Logs go to stderr, filtered by RUST_LOG (default: info).";

/// A secret or token from the environment: set but empty (`WELD_API_TOKEN=`) means unset, as an
/// operator clearing a variable expects, not "the empty string is the secret".
pub(crate) fn configured(value: Option<String>) -> Option<String> {
    value.filter(|value| !value.is_empty())
}

/// The shared secret (`WELD_SHARED_SECRET`), when set. Held to the API token's minimum
/// ([`MIN_TOKEN_BYTES`](weld_pipeline_http::api::MIN_TOKEN_BYTES)): the transports throttle no
/// guesses of their own, so a short secret would be found by whoever can reach the port.
///
/// # Errors
///
/// A message for the operator when it is shorter.
pub(crate) fn shared_secret(
    value: Option<String>,
) -> Result<Option<weld_pipeline::transport::Secret>, String> {
    let min = weld_pipeline_http::api::MIN_TOKEN_BYTES;
    match configured(value) {
        Some(secret) if secret.len() < min => Err(format!(
            "the shared secret (WELD_SHARED_SECRET) has {} bytes, and must have at least {min}: \
             make one with `openssl rand -hex 32`",
            secret.len()
        )),
        secret => Ok(secret.map(weld_pipeline::transport::Secret::new)),
    }
}

/// Stops a service that cannot start on its configuration: the reason on stderr, as clap says
/// what it refuses (not the `Debug` of an error that `main` returning `Err` would print), and
/// exit status 2.
pub(crate) fn refuse_to_start(reason: impl std::fmt::Display) -> ! {
    eprintln!("error: {reason}");
    std::process::exit(2)
}

/// The host's name and this process's id: unique on a network, not stable across restarts (a
/// worker's or a replica's default id; set `WELD_WORKER_ID` / `WELD_REPLICA_ID` for that).
pub(crate) fn host_and_pid() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "weld".into());
    format!("{host}-{}", std::process::id())
}
