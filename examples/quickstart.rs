//! The one-command demo: `cargo run --release --example quickstart`.
//!
//! Until the reference services land, it runs the in-memory pipeline: a generated source of
//! 10,000 HubSpot-shaped contacts, behind the retry and timeout layers, through a field transform
//! that redacts e-mail addresses, into the in-memory sink, scheduled every 5 minutes. It waits for
//! the first run to commit, prints what was stored, stops the stream and exits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tower::ServiceBuilder;
use weld_pipeline::middleware::{FieldTransform, RetryLayer, RetryPolicy, TimeoutLayer};
use weld_pipeline::source::{Generator, Pages};
use weld_pipeline::{Checkpoint, MemorySink, Pipeline, PipelineJob, Scheduler, StreamName};

const RECORDS: u64 = 10_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let fetch = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryPolicy::default()))
        .layer(TimeoutLayer::new(Duration::from_secs(30)))
        .service(Generator::contacts(RECORDS).page_size(100));
    let sink = MemorySink::new();
    let pipeline = Pipeline::new(Pages::new(fetch), sink.clone())
        .with_transform(vec![FieldTransform::Redact("/properties/email".into())]);
    let job = Arc::new(PipelineJob::new(pipeline, Checkpoint::start()));
    let mut reports = job.reports();

    let stream = StreamName::new("contacts")?;
    let scheduler = Scheduler::new();
    let started = Instant::now();
    scheduler.start(stream.clone(), Duration::from_secs(300), job);
    let report = reports
        .wait_for(Option::is_some)
        .await?
        .clone()
        .ok_or("no report")?;
    let elapsed = started.elapsed();
    scheduler.stop(&stream).await;

    println!();
    println!(
        "stream {stream}: run {} {:?}",
        report.run_id, report.outcome
    );
    println!(
        "  {} records in {} batches in {:.1?} ({:.0} records/s); {} live records stored",
        report.records,
        report.batches,
        elapsed,
        report.records as f64 / elapsed.as_secs_f64(),
        sink.live_count(&stream),
    );
    println!("  checkpoint reached: {:?}", report.checkpoint);
    println!("  the first stored records (e-mail redacted by the stream's transform):");
    for record in sink.records(&stream).iter().take(3) {
        let text = String::from_utf8_lossy(record.data.as_bytes());
        let shown: String = text.chars().take(160).collect();
        println!("    {} @ {}: {shown}...", record.id, record.updated_at);
    }
    Ok(())
}
