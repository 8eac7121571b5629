//! Test support for the HubSpot source against the fake over 127.0.0.1: a fake on a free port,
//! a source as the tests vary it, runs with a deadline, the comparison of the stored set with
//! the fake's, and the ladder most tests climb (full run, change, incremental run).

#![allow(dead_code, unreachable_pub)] // each test binary uses part of it

use std::time::Duration;

use weld_pipeline::source::{FieldKind, Schema};
use weld_pipeline::{
    Checkpoint, MemorySink, Pipeline, Record, RunContext, RunOutcome, RunReport, StreamName,
    Timestamp,
};
use weld_pipeline_hubspot::fake::{FakeConfig, FakeHubSpot, Legacy, Mutation};
use weld_pipeline_hubspot::{self as hubspot, ApiVersion, HubSpotAccount, HubSpotObject, Token};

/// Every run of these tests ends by this.
pub const DEADLINE: Duration = Duration::from_secs(120);

pub fn stream() -> StreamName {
    StreamName::new("contacts").unwrap()
}

/// A fake on a free port of 127.0.0.1. On a dated [`version`] its legacy paths are retired (they
/// answer 410), so a test proves the source calls none of them; a test that starts a fake in
/// another way keeps them served.
pub async fn fake(config: FakeConfig) -> FakeHubSpot {
    let legacy = if version().is_dated() {
        Legacy::Retired
    } else {
        Legacy::Served
    };
    FakeHubSpot::start("127.0.0.1:0", FakeConfig { legacy, ..config })
        .await
        .expect("the fake starts")
}

/// A source as these tests vary it: its account and its object.
#[derive(Clone, Debug)]
pub struct Config {
    pub account: HubSpotAccount,
    pub object: HubSpotObject,
}

/// The API version the suite runs on: `WELD_HUBSPOT_API_VERSION`, or the source's default.
/// CI runs the suite on the default and again on `v3`.
pub fn version() -> ApiVersion {
    match std::env::var("WELD_HUBSPOT_API_VERSION") {
        Ok(version) => version
            .parse()
            .expect("WELD_HUBSPOT_API_VERSION is a version"),
        Err(_) => ApiVersion::default(),
    }
}

pub fn config(fake: &FakeHubSpot) -> Config {
    let mut account = HubSpotAccount::new(fake.base_url(), Token::new("fake-token"));
    account.settle_delay = Duration::ZERO;
    account.api_version = version();
    Config {
        account,
        object: HubSpotObject::new("contacts"),
    }
}

pub async fn run(config: &Config, sink: &MemorySink, from: Checkpoint) -> RunReport {
    run_in(config, sink, from, RunContext::new(stream())).await
}

/// A run that may reconcile with what `sink` holds (its inventory), as a worker's runs do with
/// the controller's store.
pub async fn run_reconciling(config: &Config, sink: &MemorySink, from: Checkpoint) -> RunReport {
    let context = RunContext::new(stream()).with_inventory(std::sync::Arc::new(sink.clone()));
    run_in(config, sink, from, context).await
}

pub async fn run_in(
    config: &Config,
    sink: &MemorySink,
    from: Checkpoint,
    context: RunContext,
) -> RunReport {
    let source = hubspot::source(config.account.clone(), config.object.clone()).unwrap();
    let pipeline = Pipeline::new(source, sink.clone());
    tokio::time::timeout(DEADLINE, pipeline.run(&context, from))
        .await
        .expect("the run ends")
}

/// A sink that stores into its [`MemorySink`] and keeps what it was sent: every record, as the
/// source emitted it (purges included, whatever the store makes of them), and how many of them
/// the source counted as repairs.
#[derive(Clone, Debug, Default)]
pub struct Recording {
    pub store: MemorySink,
    sent: std::sync::Arc<std::sync::Mutex<(Vec<Record>, u64)>>,
}

impl Recording {
    /// What it was sent since the last call, and how many of those repaired the store.
    pub fn take(&self) -> (Vec<Record>, u64) {
        std::mem::take(&mut *self.sent.lock().unwrap())
    }

    /// The ids of the purge records it was sent since the last call, sorted, and the repairs.
    pub fn take_purged(&self) -> (Vec<u64>, u64) {
        let (records, repaired) = self.take();
        let mut purged: Vec<u64> = records
            .iter()
            .filter(|r| r.purge)
            .map(|r| r.id.parse().unwrap())
            .collect();
        purged.sort_unstable();
        (purged, repaired)
    }
}

#[async_trait::async_trait]
impl weld_pipeline::Sink for Recording {
    async fn commit(
        &self,
        batch: &weld_pipeline::Batch,
    ) -> Result<weld_pipeline::Commit, weld_pipeline::Error> {
        let commit = self.store.commit(batch).await?;
        if matches!(commit, weld_pipeline::Commit::Stored { .. }) {
            let mut sent = self.sent.lock().unwrap();
            sent.0.extend(batch.records.iter().cloned());
            sent.1 += batch.repaired;
        }
        Ok(commit)
    }

    async fn checkpoint(&self, stream: &StreamName) -> Result<Checkpoint, weld_pipeline::Error> {
        weld_pipeline::Sink::checkpoint(&self.store, stream).await
    }
}

/// A run that reconciles with what `recording` stores, recording what it sends.
pub async fn run_recording(config: &Config, recording: &Recording, from: Checkpoint) -> RunReport {
    let context =
        RunContext::new(stream()).with_inventory(std::sync::Arc::new(recording.store.clone()));
    let source = hubspot::source(config.account.clone(), config.object.clone()).unwrap();
    let pipeline = Pipeline::new(source, recording.clone());
    tokio::time::timeout(DEADLINE, pipeline.run(&context, from))
        .await
        .expect("the run ends")
}

/// The stored set equals the fake's: every id, its modification time, its archived flag, and
/// the value of every property the source asked for: `listed`, or (`None`) every property the
/// fake's portal defines, each present in every record, `null` where the record has no value.
pub fn assert_equals_the_fake(fake: &FakeHubSpot, sink: &MemorySink, listed: Option<&[String]>) {
    assert_object_equals_the_fake(fake, sink, "contacts", listed);
}

/// [`assert_equals_the_fake`] for the records of `object` (the fake's name or id for it).
pub fn assert_object_equals_the_fake(
    fake: &FakeHubSpot,
    sink: &MemorySink,
    object: &str,
    listed: Option<&[String]>,
) {
    assert_records_equal_the_fake(fake, sink.records(&stream()), object, listed);
}

/// [`assert_object_equals_the_fake`] for the records `stored`.
pub fn assert_records_equal_the_fake(
    fake: &FakeHubSpot,
    stored: Vec<Record>,
    object: &str,
    listed: Option<&[String]>,
) {
    let every = fake.property_names(object);
    assert!(!every.is_empty(), "the fake has no {object}");
    let properties = listed.unwrap_or(&every);
    let mut stored: Vec<&Record> = stored.iter().collect();
    stored.sort_by_key(|r| r.id.parse::<u64>().unwrap());
    let dumped = fake.dump(object);
    assert_eq!(stored.len(), dumped.len(), "{object}: record counts differ");
    for (record, truth) in stored.iter().zip(&dumped) {
        assert_eq!(record.id, truth.id);
        assert_eq!(
            record.updated_at,
            Timestamp::parse_rfc3339(&truth.updated_at).unwrap(),
            "{object}: record {}",
            truth.id
        );
        assert_eq!(
            record.archived, truth.archived,
            "{object}: record {} archived",
            truth.id
        );
        let data: serde_json::Value = record.data.decode().unwrap();
        let got = data["properties"].as_object().expect("properties");
        for property in properties {
            let expected = truth.properties.get(property).cloned().flatten();
            let value = got
                .get(property)
                .unwrap_or_else(|| panic!("record {} has no {property}", truth.id));
            assert_eq!(
                value.as_str().map(str::to_string),
                expected,
                "record {} property {property}",
                truth.id
            );
        }
        assert_eq!(
            got.len(),
            properties.len(),
            "record {}: only what was asked",
            truth.id
        );
    }
}

pub fn kind_of(schema: &Schema, name: &str) -> Option<FieldKind> {
    schema
        .fields
        .iter()
        .find(|f| f.name == name)
        .map(|f| f.kind)
}

/// Every live stored record of `object` carries in `data.associations` exactly the links the
/// fake has to each type of `to` (an empty list where it has none); archived ones carry none.
pub fn assert_links_equal_the_fake(
    fake: &FakeHubSpot,
    sink: &MemorySink,
    object: &str,
    to: &[&str],
) {
    let mut checked = 0;
    for record in sink.records(&stream()) {
        let data: serde_json::Value = record.data.decode().unwrap();
        if record.archived {
            assert!(data.get("associations").is_none(), "archived {}", record.id);
            continue;
        }
        let links = data["associations"].as_object().unwrap_or_else(|| {
            panic!("record {} has no associations: {data}", record.id);
        });
        assert_eq!(
            links.len(),
            to.len(),
            "record {}: every type asked",
            record.id
        );
        for to_type in to {
            let mut got: Vec<String> = links[*to_type]
                .as_array()
                .unwrap()
                .iter()
                .map(|link| {
                    assert!(link["types"][0]["typeId"].is_u64(), "{link}");
                    link["id"].as_str().unwrap().to_string()
                })
                .collect();
            got.sort_by_key(|id| id.parse::<u64>().unwrap());
            let expected = fake
                .associations(object, to_type)
                .remove(&record.id)
                .unwrap_or_default();
            assert_eq!(got, expected, "{object} {} to {to_type}", record.id);
        }
        checked += 1;
    }
    assert!(checked > 0, "no live {object} stored");
}

/// The stored records the fake no longer has at all (merged away or deleted for good): each is
/// archived, kept whole (its properties still there) and says why, `merged_into` or
/// `deleted_permanently`. Returns them by id; the rest of the stored set equals the fake's.
pub fn assert_gone_are_archived_and_the_rest_equals_the_fake(
    fake: &FakeHubSpot,
    sink: &MemorySink,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let known: std::collections::HashSet<String> =
        fake.dump("contacts").into_iter().map(|d| d.id).collect();
    let (kept, gone): (Vec<Record>, Vec<Record>) = sink
        .records(&stream())
        .into_iter()
        .partition(|r| known.contains(&r.id));
    assert_records_equal_the_fake(fake, kept, "contacts", None);
    gone.into_iter()
        .map(|record| {
            let data: serde_json::Value = record.data.decode().unwrap();
            assert!(record.archived, "{} is archived: {data}", record.id);
            assert!(
                data["properties"]["email"].is_string(),
                "{}: what was stored stays: {data}",
                record.id
            );
            (record.id, data)
        })
        .collect()
}

/// What a climb of the ladder left: the full run, the ids the change touched, and the
/// incremental run after it.
pub struct Climbed {
    pub first: RunReport,
    pub changed: Vec<u64>,
    pub second: RunReport,
}

impl Climbed {
    /// Each record the change touched arrived exactly once in the second run: as many records
    /// as distinct ids changed (`what` says so when not). Returns how many those were.
    pub fn assert_each_changed_exactly_once(&self, what: &str) -> usize {
        let distinct: std::collections::BTreeSet<_> = self.changed.iter().collect();
        assert_eq!(self.second.records as usize, distinct.len(), "{what}");
        distinct.len()
    }
}

/// The ladder most tests climb: a full run from the start (it succeeds); a wait for the
/// change's stamps to fall after the first run's window (the fake stamps the i-th change
/// `now - i` ms); the fake changed; then, once the changes are older than its start (a window
/// ends before its `until`'s millisecond), a second run from the first's checkpoint (it
/// succeeds). What each test then checks of it (exactly once, equal to the fake) it says
/// itself.
pub struct Ladder<'a> {
    fake: &'a FakeHubSpot,
    config: &'a Config,
    sink: &'a MemorySink,
    wait: Duration,
    reconciling: bool,
    label: &'a str,
}

impl<'a> Ladder<'a> {
    /// The ladder of `config`'s source against `fake`, storing into `sink`: 5 ms between the
    /// first run and the change.
    pub fn new(fake: &'a FakeHubSpot, config: &'a Config, sink: &'a MemorySink) -> Self {
        Ladder {
            fake,
            config,
            sink,
            wait: Duration::from_millis(5),
            reconciling: false,
            label: "",
        }
    }

    /// `wait` between the first run and the change.
    pub fn waiting(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Both runs may reconcile with what the sink holds (its inventory), as a worker's do.
    pub fn reconciling(mut self) -> Self {
        self.reconciling = true;
        self
    }

    /// Names the stream in a failed assertion (a test that climbs it for several objects).
    pub fn labelled(mut self, label: &'a str) -> Self {
        self.label = label;
        self
    }

    /// Climbs it, the fake changed by `mutation`.
    pub async fn climb(self, mutation: Mutation) -> Climbed {
        let first = self.run(Checkpoint::start()).await;
        assert_eq!(first.outcome, RunOutcome::Succeeded, "{}", self.label);
        tokio::time::sleep(self.wait).await;
        let changed = self.fake.mutate(&mutation);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let second = self.run(first.checkpoint.clone()).await;
        assert_eq!(second.outcome, RunOutcome::Succeeded, "{}", self.label);
        Climbed {
            first,
            changed,
            second,
        }
    }

    async fn run(&self, from: Checkpoint) -> RunReport {
        if self.reconciling {
            run_reconciling(self.config, self.sink, from).await
        } else {
            run(self.config, self.sink, from).await
        }
    }
}
