//! End to end, the happy paths: a started stream stores the source's set exactly, its first
//! run begins at once, changes at the source arrive on the next run, and the services find
//! each other whichever starts first. Real binaries, separate processes, both transports.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// How soon the first run must begin: "at once", far below the 300 s interval.
const FIRST_RUN_WITHIN: Duration = Duration::from_secs(30);

async fn first_run_starts_at_once_and_stores_everything(transport: &str) {
    let cluster = Cluster::start(2_500, transport).await;
    let api = &cluster.api;

    let started = api.start_stream(STREAM, contacts_stream(300)).await;
    assert_eq!(
        started["state"], "running",
        "a connected worker takes a new stream at once: {started}"
    );
    wait_until("the first run to begin", FIRST_RUN_WITHIN, || async {
        !api.runs(STREAM).await.is_empty()
    })
    .await;

    let expected = cluster.fake.contacts().await;
    wait_synced(api, STREAM, &expected).await;

    let runs = wait_for("the first run to succeed", CONVERGE_WITHIN, || async {
        let runs = api.runs(STREAM).await;
        let succeeded = runs.first().is_some_and(|run| run["state"] == "succeeded");
        succeeded.then_some(runs)
    })
    .await;
    assert_eq!(runs.len(), 1, "one run within a 300 s interval: {runs:?}");
    let run = &runs[0];
    assert!(
        run["id"].as_str().is_some_and(|id| !id.is_empty()),
        "a run has an id: {run}"
    );
    assert_eq!(
        run["records"].as_u64(),
        Some(expected.live.len() as u64),
        "the full sync delivered every record once: {run}"
    );
    assert!(run["error"].is_null(), "a clean run has no error: {run}");
    let started_at = run["started_at"].as_str().and_then(rfc3339_millis);
    let finished_at = run["finished_at"].as_str().and_then(rfc3339_millis);
    assert!(
        started_at.is_some() && finished_at >= started_at,
        "a finished run has RFC 3339 start and finish times, in order: {run}"
    );
    assert_eq!(api.status(STREAM).await["last_run"]["id"], run["id"]);

    // The run as data-streams' metrics show it: records, batches, runs, workers, outbox depth.
    let metrics = wait_for("the worker's outbox report", CONVERGE_WITHIN, || async {
        let text = api.metrics().await;
        text.contains("weld_worker_outbox_batches{worker=\"e2e-worker\"} 0")
            .then_some(text)
    })
    .await;
    for line in [
        format!(
            "weld_records_committed_total{{stream=\"{STREAM}\"}} {}",
            expected.live.len() + expected.archived.len()
        ),
        format!("weld_runs_finished_total{{stream=\"{STREAM}\",outcome=\"succeeded\",worker=\"e2e-worker\"}} 1"),
        "weld_workers_connected 1".to_string(),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "/metrics lacks {line:?}:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("weld_batches_committed_total{"),
        "{metrics}"
    );
    assert!(metrics.contains("weld_run_duration_seconds"), "{metrics}");

    // One line per run start and finish, with counts and duration; the token never appears.
    let worker_logs = cluster.worker.process.logs();
    let data_streams_logs = cluster.data_streams.process.logs();
    for logs in [&worker_logs, &data_streams_logs] {
        assert!(logs.contains("run started"), "{logs}");
        assert!(
            logs.lines().any(|l| l.contains("run finished")
                && l.contains("records=")
                && l.contains("duration_ms=")),
            "{logs}"
        );
        assert!(
            !logs.contains(HUBSPOT_TOKEN),
            "the HubSpot token leaked into the logs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_starts_at_once_and_stores_everything_over_tcp() {
    first_run_starts_at_once_and_stores_everything("tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_starts_at_once_and_stores_everything_over_http() {
    first_run_starts_at_once_and_stores_everything("http").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generator_stream_beside_a_hubspot_one_syncs_every_generated_record_once() {
    let cluster = Cluster::start(200, "tcp").await;
    let api = &cluster.api;
    let body = json!({"source": {"kind": "generator", "records": 3_000, "page_size": 250, "record_bytes": 256}});
    let started = api.start_stream("generated", body).await;
    assert_eq!(started["state"], "running", "{started}");
    assert_eq!(
        started["source"],
        json!({"kind": "generator", "records": 3_000, "page_size": 250, "record_bytes": 256})
    );
    api.start_stream(STREAM, contacts_stream(300)).await;

    let run = wait_for("the generator run to succeed", CONVERGE_WITHIN, || async {
        let runs = api.runs("generated").await;
        runs.first()
            .filter(|run| run["state"] == "succeeded")
            .cloned()
    })
    .await;
    assert_eq!(run["records"], 3_000, "{run}");
    let records = api.all_records("generated", false).await;
    let mut ids: Vec<u64> = records
        .iter()
        .map(|r| r["id"].as_str().unwrap().parse().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=3_000).collect::<Vec<u64>>(), "every id once");
    assert!(records[0]["data"]["properties"]["firstname"].is_string());
    assert_eq!(api.status("generated").await["records"], 3_000);

    // The HubSpot stream beside it is untouched by it.
    let expected = cluster.fake.contacts().await;
    wait_synced(api, STREAM, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_created_and_archived_records_arrive_on_the_next_run() {
    let cluster = Cluster::start(2_000, "tcp").await;
    let api = &cluster.api;
    api.start_stream(STREAM, contacts_stream(1)).await;
    wait_synced(api, STREAM, &cluster.fake.contacts().await).await;

    // Two rounds of changes, each picked up by a later incremental run. The changes share one
    // modification time (`tie`), the case a "last seen time" cursor gets wrong; with the settle
    // delay at 0 none of them is older than a window the worker already closed.
    for (round, (modify, create, archive)) in [(40, 25, 15), (30, 10, 10)].into_iter().enumerate() {
        let touched = cluster
            .fake
            .mutate(json!({
                "object": "contacts",
                "modify": modify,
                "create": create,
                "archive": archive,
                "tie": true,
            }))
            .await;
        assert!(
            touched.as_array().is_some_and(|ids| !ids.is_empty()),
            "round {round}: the fake changed nothing: {touched}"
        );
        let expected = cluster.fake.contacts().await;
        wait_synced(api, STREAM, &expected).await;
    }
    let expected = cluster.fake.contacts().await;
    assert_eq!(expected.archived.len(), 25, "both rounds archived records");
    assert_eq!(expected.live.len(), 2_000 + 35 - 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_reads_the_whole_source_again_and_drops_nothing_first() {
    let cluster = Cluster::start(1_500, "tcp").await;
    let api = &cluster.api;
    api.start_stream(STREAM, contacts_stream(1)).await;
    let expected = cluster.fake.contacts().await;
    wait_synced(api, STREAM, &expected).await;
    let total = (expected.live.len() + expected.archived.len()) as u64;
    // An incremental run after the full sync reads nothing: the source is unchanged.
    let run_id = |run: &serde_json::Value| run["id"].as_str().and_then(|id| id.parse::<u64>().ok());
    let before = wait_for("an incremental run", CONVERGE_WITHIN, || async {
        let runs = api.runs(STREAM).await;
        let incremental = runs.len() >= 2
            && runs[0]["state"] == "succeeded"
            && runs[0]["records"].as_u64() == Some(0);
        incremental.then(|| run_id(&runs[0])).flatten()
    })
    .await;

    let (code, status) = api.resync_stream(STREAM).await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["name"], STREAM, "{status}");
    assert_eq!(
        status["records"].as_u64(),
        Some(expected.live.len() as u64),
        "nothing is dropped first: {status}"
    );
    let resynced = wait_for(
        "a run that reads everything again",
        CONVERGE_WITHIN,
        || async {
            let runs = api.runs(STREAM).await;
            runs.into_iter().find(|run| {
                run_id(run) > Some(before)
                    && run["state"] == "succeeded"
                    && run["records"].as_u64() == Some(total)
            })
        },
    )
    .await;
    assert!(resynced["error"].is_null(), "{resynced}");
    // Then the stream goes on incrementally, and still equals the source.
    wait_synced(api, STREAM, &cluster.fake.contacts().await).await;
    wait_for(
        "an incremental run after the resync",
        CONVERGE_WITHIN,
        || async {
            let runs = api.runs(STREAM).await;
            (runs[0]["state"] == "succeeded" && runs[0]["records"].as_u64() == Some(0))
                .then_some(())
        },
    )
    .await;

    let (code, answer) = api.resync_stream("nope").await;
    assert_eq!(code, 404, "{answer}");
    assert_eq!(answer["error"]["code"], "stream_not_found", "{answer}");
}

/// The last run's id of `stream`, once it has one that succeeded.
async fn last_run_id(api: &Api, stream: &str) -> u64 {
    wait_for("a succeeded run", CONVERGE_WITHIN, || async {
        let runs = api.runs(stream).await;
        runs.iter()
            .find(|run| run["state"] == "succeeded")
            .and_then(|run| run["id"].as_str()?.parse::<u64>().ok())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_after_hard_deletes_ends_equal_to_the_source_and_a_purge_stream_keeps_no_trace() {
    const PURGING: &str = "purging";
    let cluster = Cluster::start(1_500, "tcp").await;
    let api = &cluster.api;
    api.start_stream(STREAM, contacts_stream(1)).await;
    let mut purging = contacts_stream(1);
    purging["source"]["on_permanent_delete"] = json!("purge");
    api.start_stream(PURGING, purging).await;
    let before = cluster.fake.contacts().await;
    wait_synced(api, STREAM, &before).await;
    wait_synced(api, PURGING, &before).await;

    // Seven contacts deleted for good: no listing, live or archived, shows them again.
    cluster
        .fake
        .mutate(json!({"object": "contacts", "delete": 7}))
        .await;
    let after = cluster.fake.contacts().await;
    let gone: Vec<&String> = before
        .live
        .keys()
        .filter(|id| !after.live.contains_key(*id) && !after.archived.contains_key(*id))
        .collect();
    assert_eq!(gone.len(), 7);

    for stream in [STREAM, PURGING] {
        let last = last_run_id(api, stream).await;
        let (code, status) = api.resync_stream(stream).await;
        assert_eq!(code, 200, "{status}");
        let resync = wait_for("the resync's run", CONVERGE_WITHIN, || async {
            api.runs(stream).await.into_iter().find(|run| {
                run["id"].as_str().and_then(|id| id.parse::<u64>().ok()) > Some(last)
                    && run["state"] == "succeeded"
                    && run["records"].as_u64() >= Some(after.live.len() as u64)
            })
        })
        .await;
        eprintln!("{stream}: {resync}");
        // When the resync's run ends, no sweep run: the store's live records are the source's.
        let live: BTreeSet<String> = api
            .all_records(stream, false)
            .await
            .iter()
            .map(|record| record["id"].as_str().unwrap().to_string())
            .collect();
        let want: BTreeSet<String> = after.live.keys().cloned().collect();
        assert_eq!(live, want, "{stream}: the live records equal the source's");
        let archived = api.all_records(stream, true).await;
        let held: Vec<&Value> = archived
            .iter()
            .filter(|record| gone.iter().any(|id| record["id"] == ***id))
            .collect();
        if stream == PURGING {
            assert!(held.is_empty(), "a purged record leaves no trace: {held:?}");
            assert_eq!(resync["purged"].as_u64(), Some(7), "{resync}");
        } else {
            assert_eq!(held.len(), 7, "{held:?}");
            for record in held {
                assert_eq!(record["data"]["deleted_permanently"], true, "{record}");
            }
            assert_eq!(resync["repaired"].as_u64(), Some(7), "{resync}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_started_before_data_streams_connects_by_itself_and_syncs() {
    let fake = start_fake(2_000, &[]).await;
    let (data_streams_dir, worker_dir) = (temp_dir(), temp_dir());
    let transport_addr = free_addr();

    let _worker = start_worker(WorkerOpts::new(
        &transport_addr,
        &fake.url,
        worker_dir.path(),
    ))
    .await;
    // Nobody listens yet: let it fail to dial a few times.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let data_streams = start_data_streams(DataStreamsOpts {
        transport_addr,
        ..DataStreamsOpts::new(data_streams_dir.path())
    })
    .await;
    let api = data_streams.api();

    api.wait_workers(1).await;
    let started = api.start_stream(STREAM, contacts_stream(300)).await;
    assert_eq!(started["state"], "running", "{started}");
    wait_synced(&api, STREAM, &fake.contacts().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_started_before_any_worker_waits_pending_then_syncs() {
    let fake = start_fake(2_000, &[]).await;
    let (data_streams_dir, worker_dir) = (temp_dir(), temp_dir());
    let data_streams = start_data_streams(DataStreamsOpts::new(data_streams_dir.path())).await;
    let api = data_streams.api();

    let started = api.start_stream(STREAM, contacts_stream(300)).await;
    assert_eq!(
        started["state"], "pending",
        "no worker is connected: {started}"
    );
    assert!(
        api.runs(STREAM).await.is_empty(),
        "nothing runs without a worker"
    );

    let _worker = start_worker(WorkerOpts::new(
        &data_streams.transport_addr,
        &fake.url,
        worker_dir.path(),
    ))
    .await;
    let running = api.wait_state(STREAM, "running").await;
    assert_eq!(running["worker"], "e2e-worker", "{running}");
    wait_synced(&api, STREAM, &fake.contacts().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_exit_cleanly_on_sigint_and_keep_what_they_stored() {
    let mut cluster = Cluster::start(2_000, "tcp").await;
    cluster.api.start_stream(STREAM, contacts_stream(300)).await;
    let expected = cluster.fake.contacts().await;
    wait_synced(&cluster.api, STREAM, &expected).await;

    for process in [
        &mut cluster.worker.process,
        &mut cluster.data_streams.process,
    ] {
        process.interrupt();
        let status = process.wait_exit(EXIT_WITHIN).await;
        assert!(
            status.success(),
            "{} exited with {status} on SIGINT",
            process.name()
        );
    }

    // Everything acked survived the shutdown, and the stream still wants to run.
    cluster.restart_data_streams().await;
    assert_synced(&cluster.api, STREAM, &expected).await;
    assert_eq!(cluster.api.status(STREAM).await["state"], "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_keeps_what_was_not_acked_in_the_outbox_and_nothing_is_fetched_twice() {
    let contacts = 3_000;
    let mut cluster = Cluster::start(contacts, "tcp").await;
    // The first pages slow, so the run is in the middle when data-streams goes.
    cluster
        .fake
        .inject(json!({"kind": "slow", "ms": 300, "count": 8, "only": "search"}))
        .await;
    cluster.api.start_stream(STREAM, contacts_stream(300)).await;
    wait_until("the first records", CONVERGE_WITHIN, || async {
        cluster.api.status(STREAM).await["records"].as_u64() > Some(0)
    })
    .await;

    // data-streams stops cleanly; the worker goes on fetching into its outbox (most of the
    // run), then stops cleanly too, keeping what was never acknowledged.
    let data_streams = &mut cluster.data_streams.process;
    data_streams.terminate();
    let status = data_streams.wait_exit(EXIT_WITHIN).await;
    assert!(
        status.success(),
        "data-streams exited with {status} on SIGTERM"
    );
    wait_until(
        "the worker to fetch on while data-streams is away",
        CONVERGE_WITHIN,
        // The property definitions and 15 search pages of 200.
        || async { cluster.fake.requests().await >= 16 },
    )
    .await;
    let worker = &mut cluster.worker.process;
    worker.terminate();
    let status = worker.wait_exit(EXIT_WITHIN).await;
    assert!(
        status.success(),
        "the worker exited with {status} on SIGTERM"
    );

    cluster.restart_data_streams().await;
    cluster.restart_worker().await;
    let expected = cluster.fake.contacts().await;
    wait_synced(&cluster.api, STREAM, &expected).await;

    // The outbox was resent, not refetched: the fake served each page about once (a page in
    // flight at a stop is abandoned and fetched again; the restarted run discovers the
    // properties again and its incremental window adds a search or two).
    let pages = |records: usize, per_page: usize| records.div_ceil(per_page).max(1) as u64;
    let listing = 1 + pages(expected.live.len(), 200) + pages(expected.archived.len(), 100);
    let served = cluster.fake.requests().await;
    assert!(
        served <= listing + 4,
        "{served} requests for {listing} pages: the outbox was fetched again"
    );
}
