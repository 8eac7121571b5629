//! The one-command demo: `cargo run --release --example quickstart`.
//!
//! Starts, in one process and on free ports, the HubSpot fake (2,000 contacts, 100 companies),
//! data-streams (TCP transport, sled in a temporary directory) and a worker; starts a `contacts`
//! stream with the contacts' company links and a `companies` stream through the HTTP API; waits
//! until their first runs have committed; prints the contacts stream's status, one stored contact
//! with its properties and its company, curl commands to try and the dashboard's address; and
//! serves until Ctrl-C, then shuts down cleanly.

mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use weld_pipeline::runtime::{shutdown_on_signals, Controller, Worker, WorkerConfig};
use weld_pipeline::store::Storage;
use weld_pipeline_http::api::ApiConfig;
use weld_pipeline_http::service::{DataStreams, DataStreamsConfig};
use weld_pipeline_hubspot::fake::{FakeConfig, FakeHubSpot};
use weld_pipeline_hubspot::{HubSpotAccount, Token};
use weld_pipeline_tcp::TcpTransport;

type BoxError = Box<dyn std::error::Error>;

const CONTACTS: usize = 2_000;
/// The first run of 2,000 contacts takes a second or two; a slow machine gets plenty more.
const FIRST_RUN_DEADLINE: Duration = Duration::from_secs(120);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    common::init_tracing();
    let shutdown = shutdown_on_signals();
    let data = tempfile::tempdir()?;

    let fake_config = FakeConfig {
        contacts: CONTACTS,
        ..FakeConfig::default()
    };
    let token = fake_config.token.clone();
    let fake = FakeHubSpot::start("127.0.0.1:0", fake_config).await?;

    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let transport = TcpTransport::new("127.0.0.1:0");
    let service_dir = data.path().join("data-streams");
    let config = DataStreamsConfig {
        http_addr: "127.0.0.1:0".into(),
        api: ApiConfig {
            token: None,
            metrics: Some(metrics),
        },
        ..DataStreamsConfig::new(&service_dir)
    };
    let storage = Storage::sled(&service_dir)?;
    let controller = Controller::new(storage, common::source_kinds(common::connector_kinds()));
    let service = DataStreams::start(&transport, controller, config, shutdown.clone()).await?;
    let controller_addr = transport.local_addr().ok_or("not listening")?;

    let account = HubSpotAccount::new(fake.base_url(), Token::new(&token));
    let worker = Worker::open(
        WorkerConfig::new("quickstart-worker", data.path().join("worker")),
        TcpTransport::new(controller_addr.to_string()),
        common::sources(common::connectors(account)),
    )?;
    let worker = tokio::spawn(worker.run(shutdown.clone()));

    let api = format!("http://{}", service.api_addr());
    let http = reqwest::Client::new();
    let started = Instant::now();
    for (stream, source) in [
        (
            "contacts",
            r#"{"kind":"hubspot","object":"contacts","associations":["companies"]}"#,
        ),
        ("companies", r#"{"kind":"hubspot","object":"companies"}"#),
    ] {
        http.post(format!("{api}/streams/{stream}/start"))
            .body(format!(r#"{{"source":{source},"interval_secs":300}}"#))
            .send()
            .await?
            .error_for_status()?;
    }
    let (Some(status), Some(_)) = (
        first_run(&http, &api, "contacts", &shutdown).await?,
        first_run(&http, &api, "companies", &shutdown).await?,
    ) else {
        // Interrupted before the first runs committed: stop as cleanly as at any other time.
        worker.await??;
        return Ok(service.wait().await?);
    };
    println!(
        "\nThe first run of `contacts` committed in {:.1} s. Its status:\n{}",
        started.elapsed().as_secs_f64(),
        serde_json::to_string_pretty(&status)?
    );
    let page: Value = get(&http, &format!("{api}/streams/contacts/records?limit=1")).await?;
    let contact = &page["records"][0];
    show_contact(contact)?;
    show_company(&http, &api, contact).await?;
    println!("\nTry:");
    for path in [
        "/health",
        "/streams",
        "/streams/contacts/records?limit=5",
        "/streams/companies/records?limit=5",
        "/streams/contacts/runs",
        "/metrics",
        "/openapi.json",
    ] {
        println!("  curl -s {api}{path}");
    }
    println!("  curl -s -X POST {api}/streams/contacts/stop");
    println!("  curl -s -X POST {api}/streams/contacts/resync");
    println!("  curl -s -X POST {api}/streams/deals/start -d '{{\"source\":{{\"kind\":\"hubspot\",\"object\":\"deals\"}},\"interval_secs\":60}}'");
    println!("\nThe dashboard, in a browser: {api}/");
    println!("\nServing until Ctrl-C.");

    shutdown.cancelled().await;
    worker.await??;
    service.wait().await?;
    println!("Stopped cleanly.");
    Ok(())
}

/// Prints one stored contact: the stream reads every property the portal defines (custom ones
/// included); those this contact has a value for are shown, the empty ones counted.
fn show_contact(record: &Value) -> Result<(), BoxError> {
    let mut shown = record.clone();
    let properties = record["data"]["properties"]
        .as_object()
        .ok_or("a record without properties")?;
    let set: serde_json::Map<String, Value> = properties
        .iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let count = set.len();
    shown["data"]["properties"] = Value::Object(set);
    println!(
        "\nOne of the stored records, contact {}: every property the portal defines ({} of them, \
         custom ones included); the {count} it has a value for:\n{}",
        record["id"].as_str().unwrap_or_default(),
        properties.len(),
        serde_json::to_string_pretty(&shown)?
    );
    Ok(())
}

/// Prints the company a contact is linked to (its `data.associations`), as the `companies`
/// stream stored it.
async fn show_company(http: &reqwest::Client, api: &str, contact: &Value) -> Result<(), BoxError> {
    let link = &contact["data"]["associations"]["companies"][0];
    let Some(id) = link["id"].as_str() else {
        println!("\nThis contact is linked to no company.");
        return Ok(());
    };
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{api}/streams/companies/records?limit=1000");
        if let Some(token) = &after {
            url.push_str(&format!("&after={token}"));
        }
        let page: Value = get(http, &url).await?;
        let records = page["records"].as_array().ok_or("a page without records")?;
        if let Some(company) = records.iter().find(|r| r["id"] == id) {
            let label = link["types"][0]["label"].as_str().unwrap_or("linked");
            // Its standard properties with a value: the custom ones were shown for the contact.
            let properties: serde_json::Map<String, Value> = company["data"]["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(name, v)| !v.is_null() && !name.starts_with("custom_property"))
                .map(|(name, v)| (name.clone(), v.clone()))
                .collect();
            println!(
                "\nIts company, {label} (the link from the contact's data.associations, the \
                 company as the `companies` stream stored it):\n{}",
                serde_json::to_string_pretty(&json!({"id": id, "properties": properties}))?
            );
            return Ok(());
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return Err(format!("company {id} is not stored").into()),
        }
    }
}

/// A stream's status once its first run has succeeded; `None` when interrupted before.
async fn first_run(
    http: &reqwest::Client,
    api: &str,
    stream: &str,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<Option<Value>, BoxError> {
    let deadline = Instant::now() + FIRST_RUN_DEADLINE;
    loop {
        let status: Value = get(http, &format!("{api}/streams/{stream}")).await?;
        match status["last_run"]["state"].as_str() {
            Some("succeeded") => return Ok(Some(status)),
            Some("failed") => return Err(format!("the first run failed: {status}").into()),
            _ if shutdown.is_cancelled() => return Ok(None),
            _ if Instant::now() > deadline => {
                return Err(
                    format!("no committed run after {FIRST_RUN_DEADLINE:?}: {status}").into(),
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn get(http: &reqwest::Client, url: &str) -> Result<Value, BoxError> {
    Ok(http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}
