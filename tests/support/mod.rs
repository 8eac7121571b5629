//! Shared helpers of the end-to-end tests. They start the real example binaries
//! (`fake-hubspot`, `data-streams`, `worker`, `quickstart`) as separate processes, talk to them
//! over HTTP, and compare what data-streams stored with the fake's data set, exactly.
//!
//! Every process is SIGKILLed when its handle drops. When a test fails, each handle prints what
//! its process wrote (the stdout lines and the tail of its stderr), so a failure explains
//! itself. The binaries are those `cargo test` builds as examples, next to the test binary.
//!
//! Deadlines are generous (a minute or two): these are debug builds, often on a slow,
//! two-core CI machine, and a deadline only bounds how long a broken build takes to fail.

#![allow(dead_code, unused_imports)] // each test file uses a different part of this module

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use tempfile::{NamedTempFile, TempDir};
use tokio::sync::mpsc;
use tokio::time::Instant;

mod api;
mod fake;
mod process;
mod services;
mod stored;
mod wait;

pub(crate) use api::*;
pub(crate) use fake::*;
pub(crate) use process::*;
pub(crate) use services::*;
pub(crate) use stored::*;
pub(crate) use wait::*;

/// How long a service may take to print its ready line.
pub(crate) const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long a stream may take to reach an expected state (a full sync, a reconnect, retries).
pub(crate) const CONVERGE_WITHIN: Duration = Duration::from_secs(120);
/// How long a service may take to exit after SIGINT.
pub(crate) const EXIT_WITHIN: Duration = Duration::from_secs(30);
/// How often a condition is polled.
pub(crate) const POLL: Duration = Duration::from_millis(100);
/// How often the stored set is compared: each comparison pages through every record.
const SYNC_POLL: Duration = Duration::from_millis(250);
/// One HTTP call's deadline: a stop waits for the run's page boundary, which data-streams
/// bounds at 60 s.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// The token the fake accepts and the workers send.
pub(crate) const HUBSPOT_TOKEN: &str = "e2e-hubspot-token";
/// The secret data-streams and the workers share unless a test says otherwise.
pub(crate) const SHARED_SECRET: &str = "e2e-shared-secret";
/// The stream most tests run.
pub(crate) const STREAM: &str = "contacts";

/// A new database on this test process's throw-away PostgreSQL cluster, by URL; `None` (said
/// loudly) where PostgreSQL is not installed, unless `WELD_REQUIRE_POSTGRES=1`.
pub(crate) async fn postgres_database(name: &str) -> Option<String> {
    let cluster = weld_pipeline_postgres::testing::shared()?;
    cluster.create_database(name).await;
    Some(cluster.url(name))
}

/// The start body of a HubSpot contacts stream.
pub(crate) fn contacts_stream(interval_secs: u64) -> Value {
    json!({"source": {"kind": "hubspot", "object": "contacts"}, "interval_secs": interval_secs})
}
