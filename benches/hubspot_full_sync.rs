//! A full sync of 100,000 contacts from the local HubSpot fake, no rate limit: the source's
//! discovery, search paging, parsing and record building, and the fake serving them, in one
//! process. The fake's portal has its standard properties only (11), as before discovery.
//!
//! `cargo bench --bench hubspot_full_sync`

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::time::Duration;

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weld_pipeline::{
    Batch, Checkpoint, Commit, Error, Pipeline, RunContext, RunOutcome, Sink, StreamName,
};
use weld_pipeline_hubspot::fake::{FakeConfig, FakeHubSpot};
use weld_pipeline_hubspot::{self as hubspot, HubSpotAccount, HubSpotObject, Token};

const CONTACTS: usize = 100_000;

/// Takes every batch and keeps nothing: the bench measures the source.
struct Discard;

#[async_trait]
impl Sink for Discard {
    async fn commit(&self, batch: &Batch) -> Result<Commit, Error> {
        Ok(Commit::Stored {
            records: batch.records.len() as u64,
        })
    }

    async fn checkpoint(&self, _stream: &StreamName) -> Result<Checkpoint, Error> {
        Ok(Checkpoint::start())
    }
}

fn full_sync(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let fake = runtime
        .block_on(FakeHubSpot::start(
            "127.0.0.1:0",
            FakeConfig {
                contacts: CONTACTS,
                search_per_second: None,
                // The standard properties only, as the figures before discovery were taken.
                custom_properties: 0,
                ..FakeConfig::default()
            },
        ))
        .expect("the fake starts");
    let mut account = HubSpotAccount::new(fake.base_url(), Token::new("fake-token"));
    account.per_ten_seconds = 1_000_000;
    // A full sync reads live records through search: unpaced here, as the fake is.
    account.searches_per_second = 1_000_000;
    let source = hubspot::source(account, HubSpotObject::new("contacts")).expect("source");
    let pipeline = Pipeline::new(source, Discard);
    let stream = StreamName::new("contacts").expect("valid");

    let mut group = c.benchmark_group("hubspot");
    group.throughput(Throughput::Elements(CONTACTS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("full_sync_100k_contacts", |b| {
        b.to_async(&runtime).iter(|| async {
            let report = pipeline
                .run(&RunContext::new(stream.clone()), Checkpoint::start())
                .await;
            assert_eq!(report.outcome, RunOutcome::Succeeded);
            assert_eq!(report.records, CONTACTS as u64);
        })
    });
    group.finish();
}

criterion_group!(benches, full_sync);
criterion_main!(benches);
