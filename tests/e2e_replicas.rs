//! End to end with several data-streams replicas on one PostgreSQL: the real binaries, a
//! throw-away cluster, two replicas and three workers. A stream started through one replica
//! runs on another's worker, and stops through the first; the replica running a stream is
//! killed (-9) mid-run and another takes its lease; a replica frozen (SIGSTOP) past its lease
//! wakes and commits nothing; a storm of kills across replicas and workers. Each time the
//! warehouse table ends equal to the source, exactly.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tempfile::TempDir;
use tokio::time::Instant;
use tokio_postgres::NoTls;

/// The replicas' lease time-to-live in these tests: short, so a takeover takes seconds.
const LEASE_SECS: u64 = 3;
/// How long a takeover may take: the lease lapsing, a session the frozen replica left inside
/// a transaction ended by the database (10 s), a claim tick, a debug build's Start.
const TAKEOVER_WITHIN: Duration = Duration::from_secs(40);

/// Two replicas `a` and `b` on one database, the fake, and workers.
struct Replicas {
    fake: Fake,
    url: String,
    a: DataStreams,
    b: DataStreams,
    workers: Vec<Worker>,
    dirs: Vec<TempDir>,
}

impl Replicas {
    /// Starts the fake with `contacts` contacts and replicas `a` and `b` on database `name`;
    /// `None` where PostgreSQL is not installed.
    async fn start(name: &str, contacts: usize) -> Option<Replicas> {
        let url = postgres_database(name).await?;
        let fake = start_fake(contacts, &[]).await;
        let dirs = vec![temp_dir(), temp_dir()];
        let a = start_replica("a", &url, &dirs[0]).await;
        let b = start_replica("b", &url, &dirs[1]).await;
        Some(Replicas {
            fake,
            url,
            a,
            b,
            workers: Vec::new(),
            dirs,
        })
    }

    /// Starts worker `id` dialing the replicas named in `order` (`"ab"`: a first, then b).
    async fn add_worker(&mut self, id: &str, order: &str) {
        let dir = temp_dir();
        let opts = WorkerOpts {
            id: id.into(),
            ..WorkerOpts::new(&self.addresses(order), &self.fake.url, dir.path())
        };
        self.dirs.push(dir);
        self.workers.push(start_worker(opts).await);
    }

    fn addresses(&self, order: &str) -> String {
        order
            .chars()
            .map(|r| self.replica(r).transport_addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn replica(&self, id: char) -> &DataStreams {
        match id {
            'a' => &self.a,
            _ => &self.b,
        }
    }

    fn replica_mut(&mut self, id: char) -> &mut DataStreams {
        match id {
            'a' => &mut self.a,
            _ => &mut self.b,
        }
    }

    /// Starts replica `id` again where it was, with the same id: it takes its leases back.
    async fn restart(&mut self, id: char) {
        let opts = self.replica(id).restart_opts();
        *self.replica_mut(id) = start_data_streams(opts).await;
    }
}

async fn start_replica(id: &str, url: &str, dir: &TempDir) -> DataStreams {
    let replica = start_data_streams(DataStreamsOpts {
        database_url: Some(url.into()),
        replica_id: Some(id.into()),
        lease_secs: Some(LEASE_SECS),
        ..DataStreamsOpts::new(dir.path())
    })
    .await;
    let health = replica.api().health().await;
    assert_eq!(health["replica"], id, "{health}");
    replica
}

/// Waits until `api` shows the stream running on a worker of replica `replica`; its status.
async fn wait_run_by(api: &Api, replica: &str) -> Value {
    wait_for(
        &format!("{STREAM} running on replica {replica}"),
        TAKEOVER_WITHIN,
        || async {
            let status = api.status(STREAM).await;
            (status["state"] == "running"
                && status["replica"] == replica
                && status["worker"].is_string())
            .then_some(status)
        },
    )
    .await
}

/// Slows the fake's search pages down so that a run lasts long enough to be cut.
async fn slow_pages(fake: &Fake, pages: u32) {
    fake.inject(json!({"kind": "slow", "ms": 300, "count": pages, "only": "search"}))
        .await;
}

/// Waits until the stream has some records but not all of `total`.
async fn wait_mid_run(api: &Api, total: usize) {
    wait_for("a run half done", CONVERGE_WITHIN, || async {
        let records = api.status(STREAM).await["records"].as_u64()?;
        assert!(
            records < total as u64,
            "the run finished before it could be cut"
        );
        (records > 0).then_some(())
    })
    .await;
}

/// Ledger rows of the stream committed by replica `replica`.
async fn committed_by(url: &str, replica: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    let count = client
        .query_one(
            "SELECT count(*) FROM weld.batches WHERE stream = $1 AND replica = $2",
            &[&STREAM, &replica],
        )
        .await
        .unwrap()
        .get(0);
    drop(client);
    let _ = connection.await;
    count
}

/// The sum of a Prometheus metric's series named `name`.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let base = series.split('{').next()?;
            (base == name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_started_through_one_replica_runs_on_another_replicas_worker_and_stops_through_the_first(
) {
    let Some(mut replicas) = Replicas::start("e2e_replicas_across", 3_000).await else {
        return;
    };
    // Every worker dials b first: a has none of its own.
    for id in ["w1", "w2", "w3"] {
        replicas.add_worker(id, "ba").await;
    }
    let (a, b) = (replicas.a.api(), replicas.b.api());
    b.wait_workers(3).await;
    assert_eq!(a.workers().await, 0);

    slow_pages(&replicas.fake, 20).await;
    a.start_stream(STREAM, contacts_stream(300)).await;
    let status = wait_run_by(&a, "b").await;
    assert!(
        ["w1", "w2", "w3"].contains(&status["worker"].as_str().unwrap()),
        "{status}"
    );
    assert_eq!(b.status(STREAM).await["replica"], "b");

    // A stop through a returns once b has stopped the run on its worker: no source request
    // starts after it.
    wait_mid_run(&a, 3_000).await;
    let stopped = a.stop_stream(STREAM).await;
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    let requests = replicas.fake.requests().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        replicas.fake.requests().await,
        requests,
        "a source request after the stop was acknowledged"
    );
    assert_eq!(b.status(STREAM).await["state"], "stopped");

    // Started again through a, it goes on where it stopped, on b's worker, to the end.
    a.start_stream(STREAM, contacts_stream(300)).await;
    wait_run_by(&a, "b").await;
    let expected = replicas.fake.contacts().await;
    wait_synced(&a, STREAM, &expected).await;
    assert_table_equals(&replicas.url, &expected).await;

    // A resync through a reaches b, which starts the stream again at the new epoch: a run
    // that reads every record once more.
    let before = a.runs(STREAM).await[0]["id"].clone();
    let (code, _) = a.resync_stream(STREAM).await;
    assert!(code.is_success());
    let total = (expected.live.len() + expected.archived.len()) as u64;
    let run = wait_for("a full run after the resync", CONVERGE_WITHIN, || async {
        let run = a.runs(STREAM).await.into_iter().next()?;
        (run["id"] != before && run["state"] == "succeeded").then_some(run)
    })
    .await;
    assert!(run["records"].as_u64() >= Some(total), "{run}");
    wait_synced(&a, STREAM, &expected).await;
    assert_table_equals(&replicas.url, &expected).await;
    assert_eq!(committed_by(&replicas.url, "a").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_replica_running_a_stream_is_killed_another_takes_its_lease_and_the_table_equals_the_source(
) {
    const CONTACTS: usize = 6_000;
    let Some(mut replicas) = Replicas::start("e2e_replicas_kill", CONTACTS).await else {
        return;
    };
    replicas.add_worker("w1", "ab").await;
    replicas.add_worker("w2", "ba").await;
    replicas.add_worker("w3", "ab").await;
    replicas.a.api().wait_workers(2).await;
    replicas.b.api().wait_workers(1).await;

    slow_pages(&replicas.fake, 60).await;
    replicas
        .a
        .api()
        .start_stream(STREAM, contacts_stream(1))
        .await;
    let status = wait_for("the stream running", TAKEOVER_WITHIN, || async {
        let status = replicas.a.api().status(STREAM).await;
        (status["state"] == "running" && status["replica"].is_string()).then_some(status)
    })
    .await;
    let mut owner = status["replica"].as_str().unwrap().chars().next().unwrap();
    wait_mid_run(&replicas.a.api(), CONTACTS).await;

    let mut failovers = Vec::new();
    for round in 0..3 {
        let survivor = if owner == 'a' { 'b' } else { 'a' };
        let killed = Instant::now();
        replicas.replica_mut(owner).process.kill9();
        let api = replicas.replica(survivor).api();
        wait_run_by(&api, &survivor.to_string()).await;
        let took = killed.elapsed();
        eprintln!(
            "failover {round}: replica {owner} killed, {survivor} runs the stream after {took:?}"
        );
        failovers.push(took);
        replicas.restart(owner).await;
        owner = survivor;
        // Changes at the source while the replicas change hands.
        replicas
            .fake
            .mutate(json!({"object": "contacts", "modify": 30, "create": 20, "archive": 10}))
            .await;
    }
    failovers.sort();
    eprintln!(
        "failover with a {LEASE_SECS} s lease: median {:?} of {failovers:?}",
        failovers[1]
    );

    let expected = replicas.fake.contacts().await;
    let api = replicas.replica(owner).api();
    wait_synced(&api, STREAM, &expected).await;
    assert_table_equals(&replicas.url, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_frozen_past_its_lease_commits_nothing_once_it_wakes() {
    const CONTACTS: usize = 6_000;
    let Some(mut replicas) = Replicas::start("e2e_replicas_freeze", CONTACTS).await else {
        return;
    };
    // w1 knows only a: while a is frozen it keeps fetching and holds its batches for a.
    replicas.add_worker("w1", "a").await;
    let a = replicas.a.api();
    a.wait_workers(1).await;
    slow_pages(&replicas.fake, 60).await;
    a.start_stream(STREAM, contacts_stream(1)).await;
    wait_run_by(&a, "a").await;
    replicas.add_worker("w2", "b").await;
    replicas.add_worker("w3", "b").await;
    let b = replicas.b.api();
    b.wait_workers(2).await;
    wait_mid_run(&a, CONTACTS).await;

    replicas.a.process.freeze();
    let frozen = Instant::now();
    wait_run_by(&b, "b").await;
    eprintln!(
        "replica a frozen; b runs the stream after {:?}",
        frozen.elapsed()
    );
    // a committed nothing since b took the lease: what it committed is counted now, and the
    // count must not move once it wakes.
    let before = committed_by(&replicas.url, "a").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    replicas.a.process.thaw();

    let expected = replicas.fake.contacts().await;
    wait_synced(&b, STREAM, &expected).await;
    // The woken replica was refused what w1 held for it, and stopped the stream there.
    let refused = wait_for("a's refusals counted", CONVERGE_WITHIN, || async {
        let metrics = a.metrics().await;
        let refused = metric(&metrics, "weld_deliveries_refused_unleased_total")
            + metric(&metrics, "weld_lease_commits_refused_total");
        (refused > 0.0).then_some(refused)
    })
    .await;
    eprintln!("replica a, woken, refused {refused} deliveries and commits of a stream it no longer leased");
    tokio::time::sleep(Duration::from_secs(LEASE_SECS * 2)).await;
    assert_eq!(
        committed_by(&replicas.url, "a").await,
        before,
        "the woken replica committed after losing its lease"
    );
    assert_eq!(b.status(STREAM).await["replica"], "b");
    let expected = replicas.fake.contacts().await;
    wait_synced(&b, STREAM, &expected).await;
    assert_table_equals(&replicas.url, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_kills_across_replicas_and_workers_ends_with_the_table_equal_to_the_source() {
    const CONTACTS: usize = 8_000;
    const CYCLES: usize = 25;
    let Some(mut replicas) = Replicas::start("e2e_replicas_storm", CONTACTS).await else {
        return;
    };
    replicas.add_worker("w1", "ab").await;
    replicas.add_worker("w2", "ba").await;
    replicas.add_worker("w3", "ab").await;
    // The storm begins in the middle of the first full sync, and goes on through the
    // incremental runs after it, with changes at the source every fifth cycle.
    let api = replicas.a.api();
    slow_pages(&replicas.fake, 30).await;
    api.start_stream(STREAM, contacts_stream(1)).await;
    wait_mid_run(&api, CONTACTS).await;

    // A fixed sequence (xorshift), so a failure can be replayed.
    let mut seed: u64 = 0x5eed_0f17;
    let mut next = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    for cycle in 0..CYCLES {
        tokio::time::sleep(Duration::from_millis(200 + next(1_300))).await;
        let victim = next(5) as usize;
        match victim {
            0 | 1 => {
                let id = if victim == 0 { 'a' } else { 'b' };
                replicas.replica_mut(id).process.kill9();
                tokio::time::sleep(Duration::from_millis(next(800))).await;
                replicas.restart(id).await;
            }
            _ => {
                let worker = &mut replicas.workers[victim - 2];
                worker.process.kill9();
                let opts = worker.opts.clone();
                tokio::time::sleep(Duration::from_millis(next(800))).await;
                replicas.workers[victim - 2] = start_worker(opts).await;
            }
        }
        if cycle % 5 == 4 {
            replicas
                .fake
                .mutate(json!({"object": "contacts", "modify": 40, "create": 25, "archive": 10}))
                .await;
        }
    }

    let expected = replicas.fake.contacts().await;
    let api = replicas.a.api();
    wait_synced(&api, STREAM, &expected).await;
    assert_table_equals(&replicas.url, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_started_through_one_replica_spread_over_every_replicas_workers() {
    let Some(mut replicas) = Replicas::start("e2e_replicas_spread", 10).await else {
        return;
    };
    replicas.add_worker("w1", "a").await;
    replicas.add_worker("w2", "b").await;
    let (a, b) = (replicas.a.api(), replicas.b.api());
    a.wait_workers(1).await;
    b.wait_workers(1).await;
    for api in [&a, &b] {
        wait_until("both replicas alive", TAKEOVER_WITHIN, || async {
            metric(&api.metrics().await, "weld_replicas_alive") == 2.0
        })
        .await;
    }
    // A heartbeat or two more, so that each says its worker.
    tokio::time::sleep(Duration::from_millis(LEASE_SECS * 1000 / 2)).await;

    let names: Vec<String> = (0..4).map(|i| format!("generated{i}")).collect();
    for name in &names {
        let body = json!({"source": {"kind": "generator", "records": 500}, "interval_secs": 300});
        a.start_stream(name, body).await;
    }
    let statuses = wait_for("every stream running", TAKEOVER_WITHIN, || async {
        let statuses = a.list_streams().await;
        statuses
            .iter()
            .all(|s| s["state"] == "running" && s["replica"].is_string())
            .then_some(statuses)
    })
    .await;
    let on_a = statuses.iter().filter(|s| s["replica"] == "a").count();
    eprintln!("{on_a} of 4 streams on replica a, {} on b", 4 - on_a);
    assert!(
        (1..4).contains(&on_a),
        "every replica runs some of the streams: {statuses:?}"
    );
    for name in &names {
        wait_until(&format!("{name} synced"), CONVERGE_WITHIN, || async {
            b.status(name).await["records"] == 500
        })
        .await;
    }
}
