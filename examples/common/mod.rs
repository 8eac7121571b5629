//! What the example services share: the transport choice and the log setup.

// Each example compiles this module on its own and uses a part of it.
#![allow(dead_code)]

use clap::ValueEnum;

/// `WELD_TRANSPORT`: how data-streams and its workers talk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum TransportKind {
    /// Length-delimited frames over TCP (weld-pipeline-tcp).
    Tcp,
    /// HTTP/1.1 requests and a long poll (weld-pipeline-http), where only HTTP passes.
    Http,
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
