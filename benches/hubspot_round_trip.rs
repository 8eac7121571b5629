//! The HubSpot source against a fake 150 ms away, what a customer's cloud sees of HubSpot: the
//! share of the account's budget one object's syncs use when every request takes a real round
//! trip (bar: 90% of the records/s the budget allows, zero 429s).
//!
//! `cargo bench --bench hubspot_round_trip` runs each sync three times and prints, per run, the
//! records/s, the calls made and the share, then the medians. The budget's records/s are those
//! of the least time its calls need, both budgets used at once to their full: searches at the
//! source's search rate (4/s: HubSpot allows 5), every other call at the account's 10-second
//! budget (190). Not a criterion bench: one sample is a sync of seconds, paced by budgets, not
//! by the CPU.

use std::time::{Duration, Instant};

use weld_pipeline::{Checkpoint, MemorySink, Pipeline, RunContext, RunOutcome, StreamName};
use weld_pipeline_hubspot::fake::{FakeConfig, FakeHubSpot, Mutation};
use weld_pipeline_hubspot::{self as hubspot, HubSpotAccount, HubSpotObject, HubSpotSource, Token};

const ROUND_TRIP: Duration = Duration::from_millis(150);
const PER_TEN_SECONDS: u32 = 190;
const CONTACTS: usize = 3_000;
const RUNS: usize = 3;

/// What one sync did.
struct Sync {
    checkpoint: Checkpoint,
    records: u64,
    elapsed: Duration,
    searches: u64,
    calls: u64,
    rate_limited: u64,
}

impl Sync {
    /// The least time the budgets allow for its calls, both used at once to their full.
    fn allowed(&self, account: &HubSpotAccount) -> Duration {
        let searches = self.searches as f64 / f64::from(account.searches_per_second);
        let others = (self.calls - self.searches) as f64 * 10.0 / f64::from(PER_TEN_SECONDS);
        Duration::from_secs_f64(searches.max(others))
    }

    fn share(&self, account: &HubSpotAccount) -> f64 {
        self.allowed(account).as_secs_f64() / self.elapsed.as_secs_f64()
    }
}

async fn sync(fake: &FakeHubSpot, source: &HubSpotSource, from: Checkpoint) -> Sync {
    let stream = StreamName::new("contacts").unwrap();
    let pipeline = Pipeline::new(source.clone(), MemorySink::new());
    let before = fake.stats();
    let started = Instant::now();
    let report = pipeline.run(&RunContext::new(stream), from).await;
    let elapsed = started.elapsed();
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    let after = fake.stats();
    Sync {
        checkpoint: report.checkpoint,
        records: report.records,
        elapsed,
        searches: after.searches - before.searches,
        calls: after.requests - before.requests,
        rate_limited: after.rate_limited - before.rate_limited,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut shares: Vec<(String, Vec<f64>)> = Vec::new();
    for run in 0..RUNS {
        let fake = FakeHubSpot::start(
            "127.0.0.1:0",
            FakeConfig {
                contacts: CONTACTS,
                per_ten_seconds: Some(PER_TEN_SECONDS),
                latency: ROUND_TRIP,
                seed: 7 + run as u64,
                ..FakeConfig::default()
            },
        )
        .await
        .expect("the fake starts");
        let mut account = HubSpotAccount::new(fake.base_url(), Token::new("fake-token"));
        account.settle_delay = Duration::ZERO;
        account.per_ten_seconds = PER_TEN_SECONDS;
        for object in [
            HubSpotObject::new("contacts"),
            HubSpotObject::new("contacts").with_associations(["companies", "deals"]),
        ] {
            // One source from run to run, as a worker keeps it.
            let source = hubspot::source(account.clone(), object.clone()).unwrap();
            let full = sync(&fake, &source, Checkpoint::start()).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
            fake.mutate(&Mutation {
                object: "contacts".into(),
                modify: 2_000,
                archive: 30,
                ..Mutation::default()
            });
            tokio::time::sleep(Duration::from_millis(5)).await;
            let incremental = sync(&fake, &source, full.checkpoint.clone()).await;
            for (kind, sync) in [("full", &full), ("incremental", &incremental)] {
                let name = format!("{kind}, associations {:?}", object.associations);
                let share = sync.share(&account);
                println!(
                    "run {run}: {name}: {} records in {:.2} s ({:.0}/s), {} calls ({} searches), \
                     {} 429s; the budget allows {:.0}/s: {:.1}%",
                    sync.records,
                    sync.elapsed.as_secs_f64(),
                    sync.records as f64 / sync.elapsed.as_secs_f64(),
                    sync.calls,
                    sync.searches,
                    sync.rate_limited,
                    sync.records as f64 / sync.allowed(&account).as_secs_f64(),
                    share * 100.0,
                );
                match shares.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, values)) => values.push(share),
                    None => shares.push((name, vec![share])),
                }
            }
        }
    }
    for (name, values) in shares {
        println!(
            "median of {RUNS}: {name}: {:.1}% of the budget",
            median(values) * 100.0
        );
    }
}
