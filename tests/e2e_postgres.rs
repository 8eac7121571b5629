//! End to end on PostgreSQL: data-streams with `WELD_DATABASE_URL`, the real binaries, a
//! throw-away cluster. The core scenarios of the sled store (a full sync, changes and
//! archiving, `kill -9` of either side mid-run, a stop) and the database's own faults (away at
//! start, stopped at once mid-run); each time the API and the warehouse table equal the source
//! exactly.

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use support::*;
use tokio_postgres::NoTls;

/// The typed view `hubspot.contacts_typed` exists, made from the property definitions the
/// worker's source described over the transport, with a row per contact and its modification
/// time as a `timestamptz`.
async fn assert_typed_view(url: &str, expected: &SourceSet) {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT count(*), count(lastmodifieddate), pg_typeof(max(lastmodifieddate))::text,
                    count(*) FILTER (WHERE lastmodifieddate = updated_at)
             FROM hubspot.contacts_typed",
            &[],
        )
        .await
        .expect("the typed view");
    let rows = (expected.live.len() + expected.archived.len()) as i64;
    assert_eq!(row.get::<_, i64>(0), rows);
    assert_eq!(
        row.get::<_, i64>(1),
        rows,
        "every contact has its modification time"
    );
    assert_eq!(row.get::<_, String>(2), "timestamp with time zone");
    assert_eq!(
        row.get::<_, i64>(3),
        rows,
        "the typed property equals the version it was stored with"
    );
    drop(client);
    let _ = connection.await;
}

/// Slows search pages down (about 8 s of a run in which to cut it), starts the stream, and
/// waits until the run has committed some records; returns how many.
async fn start_a_slow_run(cluster: &Cluster) -> u64 {
    cluster
        .fake
        .inject(json!({"kind": "slow", "ms": 400, "count": 20, "only": "search"}))
        .await;
    cluster.api.start_stream(STREAM, contacts_stream(300)).await;
    wait_for("a run half done", CONVERGE_WITHIN, || async {
        let records = cluster.api.status(STREAM).await["records"].as_u64()?;
        (records > 0).then_some(records)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_full_sync_then_changes_and_archiving_equal_the_source() {
    let Some(url) = postgres_database("e2e_sync").await else {
        return;
    };
    let cluster = Cluster::start_on(2_000, "tcp", Some(url.clone())).await;
    let api = &cluster.api;
    api.start_stream(STREAM, contacts_stream(1)).await;
    wait_synced(api, STREAM, &cluster.fake.contacts().await).await;
    assert_table_equals(&url, &cluster.fake.contacts().await).await;

    cluster
        .fake
        .mutate(
            json!({"object": "contacts", "modify": 40, "create": 25, "archive": 15, "tie": true}),
        )
        .await;
    let expected = cluster.fake.contacts().await;
    wait_synced(api, STREAM, &expected).await;
    assert_table_equals(&url, &expected).await;
    assert_typed_view(&url, &expected).await;
    let status = api.status(STREAM).await;
    assert_eq!(status["archived"], 15, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_bad_requests_are_refused_and_write_nothing_while_a_sync_flows() {
    let Some(url) = postgres_database("e2e_bad_input").await else {
        return;
    };
    let cluster = Cluster::start_on(1_500, "tcp", Some(url.clone())).await;
    let api = &cluster.api;
    api.start_stream(STREAM, contacts_stream(300)).await;

    let big = json!({
        "source": {"kind": "hubspot", "object": "contacts", "properties": ["x".repeat(80 * 1024)]},
    });
    let refused: [(&str, reqwest::RequestBuilder, u16); 6] = [
        (
            "malformed JSON",
            api.request(Method::POST, "/streams/bad/start")
                .header("content-type", "application/json")
                .body("{\"source\":"),
            400,
        ),
        (
            "a body of 80 KiB",
            api.request(Method::POST, "/streams/bad/start").json(&big),
            413,
        ),
        (
            "an invalid name",
            api.request(Method::POST, "/streams/Bad.Name/start")
                .json(&contacts_stream(300)),
            422,
        ),
        (
            "an interval of 0",
            api.request(Method::POST, "/streams/bad/start")
                .json(&contacts_stream(0)),
            422,
        ),
        (
            "a limit over 1000",
            api.request(
                Method::GET,
                &format!("/streams/{STREAM}/records?limit=1001"),
            ),
            422,
        ),
        (
            "an unknown stream",
            api.request(Method::POST, "/streams/unknown/resync"),
            404,
        ),
    ];
    for (what, request, want) in refused {
        let (status, body) = send(request).await;
        assert_error(status, &body, want, what);
    }
    wait_synced(api, STREAM, &cluster.fake.contacts().await).await;
    assert_table_equals(&url, &cluster.fake.contacts().await).await;

    // Nothing refused reached the database: one stream registered, one records table.
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    let streams: Vec<String> = client
        .query("SELECT name FROM weld.streams", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(streams, [STREAM]);
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('weld', 'pg_catalog', 'information_schema')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 1, "hubspot.contacts alone");
    drop(client);
    let _ = connection.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_data_streams_killed_mid_run_comes_back_and_nothing_arrives_twice() {
    let Some(url) = postgres_database("e2e_crash").await else {
        return;
    };
    let mut cluster = Cluster::start_on(3_000, "tcp", Some(url.clone())).await;
    start_a_slow_run(&cluster).await;
    cluster.data_streams.process.kill9();
    cluster.restart_data_streams().await;
    cluster.api.wait_workers(1).await;

    let expected = cluster.fake.contacts().await;
    wait_synced(&cluster.api, STREAM, &expected).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_synced(&cluster.api, STREAM, &expected).await;
    assert_table_equals(&url, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_database_restarted_mid_run_is_healed_from_and_nothing_is_lost() {
    // A cluster of its own: the others' tests must not see this one's outage.
    let Some(database) = weld_pipeline_postgres::testing::TestCluster::start() else {
        return;
    };
    database.create_database("e2e_restart").await;
    let url = database.url("e2e_restart");
    let cluster = Cluster::start_on(3_000, "tcp", Some(url.clone())).await;
    start_a_slow_run(&cluster).await;
    // What `pg_ctl restart -m immediate` does (no checkpoint, commits in flight cut), with the
    // database away for 3 s: deliveries meanwhile are refused and held by the worker.
    let down = tokio::task::spawn_blocking(move || {
        database.down_for(Duration::from_secs(3));
        database
    });
    let database = down.await.unwrap();

    let expected = cluster.fake.contacts().await;
    wait_synced(&cluster.api, STREAM, &expected).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_synced(&cluster.api, STREAM, &expected).await;
    assert_table_equals(&url, &expected).await;
    let health = cluster.api.health().await;
    assert_eq!(health["storage"], "ok", "healed by itself: {health}");
    let logs = cluster.data_streams.process.logs();
    assert_eq!(
        logs.matches("storage failed").count(),
        1,
        "the outage is told once, not per retry:\n{logs}"
    );
    assert_eq!(logs.matches("storage healed").count(), 1, "{logs}");
    drop(database);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_database_away_at_start_degrades_health_then_heals_by_itself() {
    let Some(database) = weld_pipeline_postgres::testing::TestCluster::start() else {
        return;
    };
    database.create_database("e2e_away").await;
    let url = database.url("e2e_away");
    // Away for 8 s, from before data-streams starts.
    let (gone_tx, gone) = tokio::sync::oneshot::channel();
    let outage = tokio::task::spawn_blocking(move || {
        database.down_for_then(std::time::Duration::from_secs(8), || {
            let _ = gone_tx.send(());
        });
        database
    });
    gone.await.unwrap();
    let cluster = Cluster::start_on(500, "tcp", Some(url.clone())).await;
    let health = wait_for("/health degraded", CONVERGE_WITHIN, || async {
        let (status, health) = cluster.api.get("/health").await;
        (status == 503 && health["status"] == "degraded").then_some(health)
    })
    .await;
    assert!(
        health["storage"]
            .as_str()
            .is_some_and(|why| why.contains("PostgreSQL")),
        "the reason is given: {health}"
    );
    let database = outage.await.unwrap();
    wait_for("/health ok again", CONVERGE_WITHIN, || async {
        let (status, health) = cluster.api.get("/health").await;
        (status == 200 && health["storage"] == "ok").then_some(())
    })
    .await;
    cluster.api.start_stream(STREAM, contacts_stream(300)).await;
    let expected = cluster.fake.contacts().await;
    wait_synced(&cluster.api, STREAM, &expected).await;
    assert_table_equals(&url, &expected).await;
    let logs = cluster.data_streams.process.logs();
    assert_eq!(logs.matches("storage failed").count(), 1, "{logs}");
    drop(database);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_worker_killed_mid_run_resumes_and_a_stop_holds() {
    let Some(url) = postgres_database("e2e_worker").await else {
        return;
    };
    let mut cluster = Cluster::start_on(3_000, "tcp", Some(url.clone())).await;
    let before = start_a_slow_run(&cluster).await;
    cluster.worker.process.kill9();
    assert!(cluster.api.status(STREAM).await["records"].as_u64() >= Some(before));
    cluster.restart_worker().await;

    let expected = cluster.fake.contacts().await;
    wait_synced(&cluster.api, STREAM, &expected).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_synced(&cluster.api, STREAM, &expected).await;
    assert_table_equals(&url, &expected).await;

    // A stop holds: changes at the source stay out of the table until the stream starts again.
    let stopped = cluster.api.stop_stream(STREAM).await;
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    cluster
        .fake
        .mutate(json!({"object": "contacts", "modify": 10, "archive": 5}))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_table_equals(&url, &expected).await;
    cluster.api.start_stream(STREAM, contacts_stream(1)).await;
    let changed = cluster.fake.contacts().await;
    wait_synced(&cluster.api, STREAM, &changed).await;
    assert_table_equals(&url, &changed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_batch_refused_for_good_holds_its_stream_back_and_says_so_once() {
    let Some(url) = postgres_database("e2e_refused").await else {
        return;
    };
    let cluster = Cluster::start_on(50, "tcp", Some(url.clone())).await;
    // A value 100,000 arrays deep on every search page: sled stores it, PostgreSQL refuses it
    // every time (`stack depth limit exceeded`).
    cluster
        .fake
        .inject(json!({"kind": "nested", "depth": 100_000, "count": 1_000_000, "only": "search"}))
        .await;
    let api = &cluster.api;
    api.start_stream(STREAM, contacts_stream(1)).await;
    let error = wait_for(
        "the refusal in the stream's status",
        CONVERGE_WITHIN,
        || async {
            let status = api.status(STREAM).await;
            status["last_error"]["message"].as_str().map(str::to_owned)
        },
    )
    .await;
    assert!(error.contains("could not be committed"), "{error}");
    let searches = cluster.fake.stats().await["searches"].as_u64().unwrap();
    let logged = cluster
        .data_streams
        .process
        .lines_logged_during(Duration::from_secs(20))
        .await;
    let refetched = cluster.fake.stats().await["searches"].as_u64().unwrap() - searches;
    let told = cluster
        .data_streams
        .process
        .logs()
        .lines()
        .filter(|line| line.contains("batch commit failed"))
        .count();
    eprintln!(
        "in 20 s after the first refusal: {refetched} page fetches, {} lines logged; refusals told in all: {told}",
        logged.len()
    );
    // Held back 1 s doubling (half jittered): a few attempts in 20 s, where each refusal used to
    // bring the stream back at once (80 fetches of the page in 30 s).
    assert!(
        refetched <= 15,
        "{refetched} fetches of the refused page in 20 s"
    );
    assert_eq!(
        told, 1,
        "the refusal told once, the repeats counted in the status"
    );
    let status = api.status(STREAM).await;
    let message = status["last_error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("in a row; next attempt at"), "{status}");
}
